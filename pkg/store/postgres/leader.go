package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Elector elects one leader among the replicas of a database through a
// session advisory lock (pg_try_advisory_lock) held on a connection of its
// own: the lock lives exactly as long as that connection, so a replica
// that dies or loses the database gives it up at once.
type Elector struct {
	conn *pgx.ConnConfig
	key  int64
	// Retry is how often a non-leader tries the lock; Ping how often the
	// leader checks its connection, each ping bounded by PingTimeout.
	Retry, Ping, PingTimeout time.Duration
}

// LeaderLockKey is the advisory lock key of the control plane's leader.
const LeaderLockKey int64 = 0x6b756d61_6c656164 // "kumalead"

// NewElector campaigns for the advisory lock key on the database of conn.
func NewElector(conn *pgx.ConnConfig, key int64) *Elector {
	return &Elector{conn: conn, key: key, Retry: time.Second, Ping: time.Second, PingTimeout: time.Second}
}

// Run campaigns until ctx is done. Each time this instance becomes the
// leader it calls lead with a context cancelled as soon as leadership is
// lost (or ctx is done), and waits for lead to return before campaigning
// again.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	for {
		conn, err := e.acquire(ctx)
		if err != nil {
			return nil // ctx done
		}
		e.hold(ctx, conn, lead)
		_ = conn.Close(context.Background()) // frees the lock server-side
		if ctx.Err() != nil {
			return nil
		}
	}
}

// acquire returns a connection holding the lock, trying every Retry; an
// error only when ctx is done.
func (e *Elector) acquire(ctx context.Context) (*pgx.Conn, error) {
	var conn *pgx.Conn
	for {
		if conn == nil || conn.IsClosed() {
			cctx, cancel := context.WithTimeout(ctx, max(e.Retry, 5*time.Second))
			c, err := pgx.ConnectConfig(cctx, e.conn.Copy())
			cancel()
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			var got bool
			qctx, cancel := context.WithTimeout(ctx, max(e.PingTimeout, time.Second))
			err := conn.QueryRow(qctx, "SELECT pg_try_advisory_lock($1)", e.key).Scan(&got)
			cancel()
			if err == nil && got {
				return conn, nil
			}
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
			}
		}
		if !sleep(ctx, e.Retry) {
			if conn != nil {
				_ = conn.Close(context.Background())
			}
			return nil, errors.New("done")
		}
	}
}

// hold runs lead while the connection answers its pings.
func (e *Elector) hold(ctx context.Context, conn *pgx.Conn, lead func(ctx context.Context)) {
	lctx, lose := context.WithCancel(ctx)
	defer lose()
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	t := time.NewTicker(e.Ping)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-lctx.Done():
			<-done
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, e.PingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				lose()
				_ = conn.Close(context.Background())
				<-done
				return
			}
		}
	}
}
