package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/pgtest"
)

// elector runs an Elector in the background and records its terms.
type elector struct {
	leading atomic.Bool
	terms   atomic.Int32
	lost    chan struct{} // one per lost term
	stop    context.CancelFunc
	done    chan struct{}
	// linger, closed by the test, holds a lost term's lead function (and
	// so the next campaign: Run waits for lead to return) until then.
	linger      chan struct{}
	releaseOnce sync.Once
}

// release lets lost terms end (and their elector campaign again).
func (e *elector) release() { e.releaseOnce.Do(func() { close(e.linger) }) }

func runElector(t *testing.T, cfg *pgx.ConnConfig) *elector {
	e := &elector{lost: make(chan struct{}, 16), done: make(chan struct{}), linger: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	el := NewElector(cfg, LeaderLockKey)
	el.Retry, el.Ping = 100*time.Millisecond, 100*time.Millisecond
	go func() {
		defer close(e.done)
		_ = el.Run(ctx, func(lctx context.Context) {
			e.leading.Store(true)
			e.terms.Add(1)
			<-lctx.Done()
			e.leading.Store(false)
			e.lost <- struct{}{}
			select {
			case <-e.linger:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() { stop(); <-e.done })
	t.Cleanup(e.release)
	return e
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting: %s", what)
		time.Sleep(20 * time.Millisecond)
	}
}

func terminateLeader(t *testing.T, cfg *pgx.ConnConfig) {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objid = ($1::bigint & 4294967295)`, LeaderLockKey).Scan(&n))
	require.Equal(t, 1, n)
}

// Exactly one of two electors leads; killing the leader's connection
// cancels its term and hands leadership to the other.
func TestElectorHandsOver(t *testing.T) {
	cfg := freshDB(t)
	a, b := runElector(t, cfg), runElector(t, cfg)
	eventually(t, "a leader", func() bool { return a.leading.Load() || b.leading.Load() })
	leader, other := a, b
	if b.leading.Load() {
		leader, other = b, a
	}
	// Both keep campaigning for a while: never two leaders.
	for range 10 {
		require.False(t, a.leading.Load() && b.leading.Load(), "two leaders")
		time.Sleep(50 * time.Millisecond)
	}
	terminateLeader(t, cfg)
	select {
	case <-leader.lost:
	case <-time.After(waitTimeout):
		t.Fatal("the old leader's term was not cancelled")
	}
	// The old leader does not campaign until its lead function returns
	// (it lingers here), so the other must take over.
	eventually(t, "the other takes over", other.leading.Load)
	require.Equal(t, int32(1), other.terms.Load())
	require.False(t, leader.leading.Load())
}

// Stopping PostgreSQL cancels the leader's term.
func TestElectorLosesLeadershipWithTheDatabase(t *testing.T) {
	srv := pgtest.Start(t)
	cfg := connConfig(t, srv, "postgres")
	e := runElector(t, cfg)
	eventually(t, "leading", e.leading.Load)
	srv.Stop()
	select {
	case <-e.lost:
	case <-time.After(waitTimeout):
		t.Fatal("the term outlived the database")
	}
	require.False(t, e.leading.Load())
	e.release()
	require.NoError(t, srv.Restart())
	eventually(t, "leading again after the restart", e.leading.Load)
}
