// Package postgres is the PostgreSQL resource store: a store.Store on
// github.com/jackc/pgx/v5 that several control plane replicas share. Every
// write is one transaction that also sends, per changed resource, a NOTIFY
// on the channel kuma_changes; every store LISTENs on its own connection and
// turns the notifications (its own writes' too) into its change feed, so
// every replica sees every change in commit order, and after a lost listen
// connection every subscriber gets a Resync. The schema is versioned
// (Migrate, kuma-cp migrate up); Open refuses any other version.
package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/sqlrow"
)

// backend names this store in its errors.
const backend = sqlrow.Backend("postgres")

// Channel is the NOTIFY channel of the change feed.
const Channel = "kuma_changes"

// maxPayload is PostgreSQL's limit on a NOTIFY payload (8000 bytes), less a margin.
const maxPayload = 7900

// maxAttempts bounds the retries of a write that failed on a serialization
// failure or a deadlock.
const maxAttempts = 8

// notifyWait bounds how long a write waits for its own notifications to come
// back on the listen connection before it takes them for lost (and every
// subscriber gets a Resync).
const notifyWait = 10 * time.Second

// Options configure Open.
type Options struct {
	// Conn says how to connect (host, port, user, password, database, TLS, timeout).
	Conn *pgx.ConnConfig
	// MaxConns bounds the pool (default 50).
	MaxConns int32
	// MinReconnectInterval and MaxReconnectInterval bound the waits between
	// attempts to re-make a lost listen connection: the first attempt is
	// immediate, then MinReconnectInterval, doubling up to
	// MaxReconnectInterval (defaults 1s and 60s).
	MinReconnectInterval, MaxReconnectInterval time.Duration
	// Now stamps creation and modification times (default time.Now).
	Now func() time.Time
	// Log receives the listener's reconnects (default: discarded).
	Log *slog.Logger
}

// Store is a store.Store in a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger
	feed store.Feed
	// id tells this store's notifications from other replicas'.
	id  string
	seq atomic.Uint64

	mu sync.Mutex
	// listening is true while the listen connection is up; writes then wait
	// for their notifications (waiters, by sequence number).
	listening bool
	waiters   map[uint64]chan struct{}

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database, checks that its schema is the one this
// program needs (see Migrate), and starts listening for changes.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Conn == nil {
		return nil, errors.New("postgres: open: no connection configuration")
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 50
	}
	if opts.MinReconnectInterval <= 0 {
		opts.MinReconnectInterval = time.Second
	}
	if opts.MaxReconnectInterval < opts.MinReconnectInterval {
		opts.MaxReconnectInterval = max(opts.MinReconnectInterval, 60*time.Second)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	pcfg.ConnConfig = opts.Conn.Copy()
	pcfg.MaxConns = opts.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", describeConn(opts.Conn), err)
	}
	if err := checkSchema(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w (%s)", err, describeConn(opts.Conn))
	}
	var idb [8]byte
	_, _ = crand.Read(idb[:])
	s := &Store{pool: pool, opts: opts, log: log.With("component", "postgres-store"), id: hex.EncodeToString(idb[:]),
		waiters: map[uint64]chan struct{}{}, done: make(chan struct{})}
	conn, err := s.listen(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open %s: listen: %w", describeConn(opts.Conn), err)
	}
	lctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.follow(lctx, conn)
	return s, nil
}

func describeConn(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s:%d/%s", c.Host, c.Port, c.Database)
}

// notification is a NOTIFY payload: one changed resource, and which write
// of which store sent it.
type notification struct {
	Origin string `json:"o"`
	Seq    uint64 `json:"s"`
	// Last marks the write's last notification.
	Last    bool   `json:"l,omitempty"`
	Type    string `json:"t"`
	Kind    string `json:"k"`
	Mesh    string `json:"m,omitempty"`
	Name    string `json:"n"`
	Version int64  `json:"v,omitempty"`
}

var eventTypes = map[string]store.EventType{"created": store.Created, "updated": store.Updated, "deleted": store.Deleted}

// payloads encodes a write's events as NOTIFY payloads.
func (s *Store) payloads(seq uint64, events []store.Event) ([]string, error) {
	out := make([]string, len(events))
	for i, e := range events {
		b, err := json.Marshal(notification{Origin: s.id, Seq: seq, Last: i == len(events)-1, Type: e.Type.String(),
			Kind: string(e.Kind), Mesh: e.Key.Mesh, Name: e.Key.Name, Version: e.Version})
		if err != nil {
			return nil, err
		}
		if len(b) > maxPayload {
			return nil, fmt.Errorf("%s %q: its change notification would be %d bytes, more than PostgreSQL's NOTIFY allows (%d): the name is too long", e.Kind, e.Key.String(), len(b), maxPayload)
		}
		out[i] = string(b)
	}
	return out, nil
}

// listen makes the listen connection. (pgconn's default context watcher
// only sets a deadline, so that waiting for a notification with a timeout
// leaves the connection usable.)
func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.opts.Conn.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	s.mu.Lock()
	s.listening = true
	s.mu.Unlock()
	return conn, nil
}

// idlePing is how long the listen connection may stay silent before it is
// pinged, so that a dead connection is noticed.
const idlePing = 2 * time.Second

// follow turns notifications into events until ctx is done, re-making the
// listen connection (with backoff) whenever it fails; after each reconnect
// every subscriber gets a Resync.
func (s *Store) follow(ctx context.Context, conn *pgx.Conn) {
	defer close(s.done)
	for {
		err := s.receive(ctx, conn)
		_ = conn.Close(context.Background())
		s.lost()
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("the listen connection failed; reconnecting", "err", err)
		wait := time.Duration(0)
		for conn = nil; conn == nil; {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			conn, err = s.listen(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				wait = min(max(2*wait, s.opts.MinReconnectInterval), s.opts.MaxReconnectInterval)
				s.log.Warn("reconnecting the listen connection failed", "err", err, "retryIn", wait)
			}
		}
		s.log.Info("the listen connection is back; every subscriber resyncs")
		s.feed.Publish(store.Event{Type: store.Resync})
	}
}

// receive handles notifications until the connection fails or ctx is done.
func (s *Store) receive(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, idlePing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
				return err
			}
			if conn.IsClosed() {
				return err
			}
			pctx, cancel := context.WithTimeout(ctx, idlePing)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("ping: %w", err)
			}
			continue
		}
		s.handle(n.Payload)
	}
}

// handle publishes one notification's event and, on the last of this
// store's write, lets the write return.
func (s *Store) handle(payload string) {
	var n notification
	typ, ok := store.EventType(0), false
	if err := json.Unmarshal([]byte(payload), &n); err == nil {
		typ, ok = eventTypes[n.Type]
	}
	if !ok {
		s.log.Warn("an unreadable change notification; every subscriber resyncs", "payload", payload)
		s.feed.Publish(store.Event{Type: store.Resync})
		return
	}
	s.feed.Publish(store.Event{Type: typ, Kind: resource.Kind(n.Kind), Key: resource.Key{Mesh: n.Mesh, Name: n.Name}, Version: n.Version})
	if n.Last && n.Origin == s.id {
		s.mu.Lock()
		if ch, ok := s.waiters[n.Seq]; ok {
			close(ch)
			delete(s.waiters, n.Seq)
		}
		s.mu.Unlock()
	}
}

// lost marks the listen connection down: pending writes stop waiting (the
// Resync after the reconnect covers their events).
func (s *Store) lost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listening = false
	for seq, ch := range s.waiters {
		close(ch)
		delete(s.waiters, seq)
	}
}

// await registers a write about to commit; nil when nobody listens.
func (s *Store) await(seq uint64) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listening {
		return nil
	}
	ch := make(chan struct{})
	s.waiters[seq] = ch
	return ch
}

func (s *Store) forget(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiters, seq)
}

// retryable tells a serialization failure or a deadlock, after which the
// whole transaction may run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// write runs fn in a transaction that also sends the NOTIFY of each event fn
// returns, retrying it on serialization failures and deadlocks, and returns
// once those events are published to this store's subscribers (or the
// listen connection was lost meanwhile, whose Resync covers them).
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx, now time.Time) ([]store.Event, error)) error {
	for attempt := 1; ; attempt++ {
		seq := s.seq.Add(1)
		wait := s.await(seq)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			events, err := fn(tx, s.opts.Now().UTC())
			if err != nil {
				return err
			}
			payloads, err := s.payloads(seq, events)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i`, Channel, payloads)
			return err
		})
		if err != nil {
			s.forget(seq)
			if retryable(err) && attempt < maxAttempts {
				s.log.Debug("retrying a write", "err", err, "attempt", attempt)
				if !sleep(ctx, time.Duration(attempt)*time.Duration(1+rand.IntN(10))*time.Millisecond) {
					return err
				}
				continue
			}
			return err
		}
		if wait == nil {
			return nil
		}
		timer := time.NewTimer(notifyWait)
		defer timer.Stop()
		select {
		case <-wait:
		case <-timer.C:
			s.forget(seq)
			s.log.Warn("a write's change notification did not come back; every subscriber resyncs", "seq", seq)
			s.feed.Publish(store.Event{Type: store.Resync})
		case <-ctx.Done():
			// Committed: the event follows when it arrives.
			s.forget(seq)
		}
		return nil
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

const (
	// qMeshLock checks that a mesh exists and keeps it so until commit: a
	// concurrent Delete of the mesh waits for this transaction, then
	// deletes what it wrote too.
	qMeshLock = `SELECT 1 FROM resources WHERE kind = $1 AND mesh = '' AND name = $2 FOR SHARE`
	qInsert   = `INSERT INTO resources (kind, mesh, name, version, spec, creation_time, modification_time)
		VALUES ($1, $2, $3, 1, $4, $5, $5) ON CONFLICT DO NOTHING`
	qUpdate = `UPDATE resources SET version = version + 1, spec = $1, modification_time = $2
		WHERE kind = $3 AND mesh = $4 AND name = $5 AND version = $6
		RETURNING version, creation_time`
	qUpsert = `INSERT INTO resources AS r (kind, mesh, name, version, spec, creation_time, modification_time)
		VALUES ($1, $2, $3, 1, $4, $5, $5)
		ON CONFLICT (kind, mesh, name) DO UPDATE SET
			version = r.version + 1, spec = excluded.spec, modification_time = excluded.modification_time
		RETURNING version, creation_time`
	qExists             = `SELECT 1 FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3`
	qDelete             = `DELETE FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3`
	qDeleteVersion      = `DELETE FROM resources WHERE kind = $1 AND mesh = $2 AND name = $3 AND version = $4`
	qDeleteMeshContents = `DELETE FROM resources WHERE mesh = $1 AND mesh <> '' RETURNING kind, name`
	qGet                = `SELECT version, spec, creation_time, modification_time FROM resources
		WHERE kind = $1 AND mesh = $2 AND name = $3`
	qCount     = `SELECT count(*) FROM resources WHERE kind = $1`
	qCountMesh = `SELECT count(*) FROM resources WHERE kind = $1 AND mesh = $2`
	qList      = `SELECT mesh, name, version, spec, creation_time, modification_time FROM resources
		WHERE kind = $1 ORDER BY mesh, name LIMIT $2 OFFSET $3`
	qListMesh = `SELECT mesh, name, version, spec, creation_time, modification_time FROM resources
		WHERE kind = $1 AND mesh = $4 ORDER BY mesh, name LIMIT $2 OFFSET $3`
)

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, objs ...*resource.Object) error {
	if len(objs) == 0 {
		return errors.New("postgres: create: no resource given")
	}
	if err := store.CheckNew("postgres: create", objs); err != nil {
		return err
	}
	specs, err := backend.MarshalSpecs(ctx, "create", objs)
	if err != nil {
		return err
	}
	var stamp time.Time
	err = s.write(ctx, func(tx pgx.Tx, now time.Time) ([]store.Event, error) {
		stamp = now
		return insert(ctx, tx, objs, specs, now)
	})
	if err != nil {
		return backend.Wrap(ctx, "create", objs[0].Meta.Kind, objs[0].Meta.Key(), err)
	}
	for _, o := range objs {
		o.Meta.Version = 1
		o.Meta.CreationTime = stamp
		o.Meta.ModificationTime = stamp
	}
	return nil
}

func insert(ctx context.Context, tx pgx.Tx, objs []*resource.Object, specs [][]byte, now time.Time) ([]store.Event, error) {
	events := make([]store.Event, 0, len(objs))
	for i, o := range objs {
		kind, key := o.Meta.Kind, o.Meta.Key()
		if err := lockMesh(ctx, tx, key.Mesh); err != nil {
			return nil, err
		}
		tag, err := tx.Exec(ctx, qInsert, string(kind), key.Mesh, key.Name, specs[i], now.UnixNano())
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 0 {
			return nil, store.AlreadyExists(kind, key)
		}
		events = append(events, store.Event{Type: store.Created, Kind: kind, Key: key, Version: 1})
	}
	return events, nil
}

func lockMesh(ctx context.Context, tx pgx.Tx, mesh string) error {
	if mesh == "" {
		return nil
	}
	var one int
	err := tx.QueryRow(ctx, qMeshLock, string(resource.KindMesh), mesh).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.MeshNotFound(mesh)
	}
	return err
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, obj *resource.Object) error {
	if err := store.CheckObject(obj); err != nil {
		return fmt.Errorf("postgres: update: %w", err)
	}
	kind, key := obj.Meta.Kind, obj.Meta.Key()
	spec, err := json.Marshal(obj.Spec)
	if err != nil {
		return backend.Wrap(ctx, "update", kind, key, err)
	}
	var version, created int64
	var stamp time.Time
	err = s.write(ctx, func(tx pgx.Tx, now time.Time) ([]store.Event, error) {
		err := tx.QueryRow(ctx, qUpdate, spec, now.UnixNano(), string(kind), key.Mesh, key.Name, obj.Meta.Version).Scan(&version, &created)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, missOrConflict(ctx, tx, kind, key)
		}
		if err != nil {
			return nil, err
		}
		stamp = now
		return []store.Event{{Type: store.Updated, Kind: kind, Key: key, Version: version}}, nil
	})
	if err != nil {
		return backend.Wrap(ctx, "update", kind, key, err)
	}
	obj.Meta.Version = version
	obj.Meta.CreationTime = sqlrow.FromNanos(created)
	obj.Meta.ModificationTime = stamp
	return nil
}

// missOrConflict tells why a conditional write matched no row.
func missOrConflict(ctx context.Context, tx pgx.Tx, kind resource.Kind, key resource.Key) error {
	var one int
	err := tx.QueryRow(ctx, qExists, string(kind), key.Mesh, key.Name).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.NotFound(kind, key)
	case err != nil:
		return err
	}
	return store.Conflict(kind, key)
}

// Upsert implements store.Store with one INSERT … ON CONFLICT DO UPDATE,
// which PostgreSQL makes atomic against concurrent writers of the key.
func (s *Store) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if err := store.CheckObject(obj); err != nil {
		return false, fmt.Errorf("postgres: upsert: %w", err)
	}
	first := *obj
	first.Meta.Version = 0
	if err := store.CheckNew("postgres: upsert", append([]*resource.Object{&first}, withNew...)); err != nil {
		return false, err
	}
	kind, key := obj.Meta.Kind, obj.Meta.Key()
	spec, err := json.Marshal(obj.Spec)
	if err != nil {
		return false, backend.Wrap(ctx, "upsert", kind, key, err)
	}
	specs, err := backend.MarshalSpecs(ctx, "upsert", withNew)
	if err != nil {
		return false, err
	}
	var version, created int64
	var stamp time.Time
	err = s.write(ctx, func(tx pgx.Tx, now time.Time) ([]store.Event, error) {
		if err := lockMesh(ctx, tx, key.Mesh); err != nil {
			return nil, err
		}
		if err := tx.QueryRow(ctx, qUpsert, string(kind), key.Mesh, key.Name, spec, now.UnixNano()).Scan(&version, &created); err != nil {
			return nil, err
		}
		stamp = now
		if version > 1 {
			return []store.Event{{Type: store.Updated, Kind: kind, Key: key, Version: version}}, nil
		}
		events, err := insert(ctx, tx, withNew, specs, now)
		if err != nil {
			return nil, err
		}
		return append([]store.Event{{Type: store.Created, Kind: kind, Key: key, Version: 1}}, events...), nil
	})
	if err != nil {
		return false, backend.Wrap(ctx, "upsert", kind, key, err)
	}
	obj.Meta.Version = version
	obj.Meta.CreationTime = sqlrow.FromNanos(created)
	obj.Meta.ModificationTime = stamp
	if version == 1 {
		for _, o := range withNew {
			o.Meta.Version = 1
			o.Meta.CreationTime = stamp
			o.Meta.ModificationTime = stamp
		}
	}
	return version == 1, nil
}

// Delete implements store.Store. The Mesh row is deleted (and so locked)
// first, so that a concurrent write into the mesh either committed before
// (and its resource is deleted here) or finds no mesh.
func (s *Store) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if _, err := backend.Describe("delete", kind); err != nil {
		return err
	}
	err := s.write(ctx, func(tx pgx.Tx, _ time.Time) ([]store.Event, error) {
		var tag pgconn.CommandTag
		var err error
		if version > 0 {
			tag, err = tx.Exec(ctx, qDeleteVersion, string(kind), key.Mesh, key.Name, version)
		} else {
			tag, err = tx.Exec(ctx, qDelete, string(kind), key.Mesh, key.Name)
		}
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 0 {
			if version == 0 {
				// Absent when the DELETE ran (a concurrent create after it
				// does not make this delete a conflict).
				return nil, store.NotFound(kind, key)
			}
			return nil, missOrConflict(ctx, tx, kind, key)
		}
		var events []store.Event
		if kind == resource.KindMesh {
			if events, err = deleteMeshContents(ctx, tx, key.Name); err != nil {
				return nil, err
			}
		}
		for _, owned := range store.Owned(kind) {
			tag, err := tx.Exec(ctx, qDelete, string(owned), key.Mesh, key.Name)
			if err != nil {
				return nil, err
			}
			if tag.RowsAffected() > 0 {
				events = append(events, store.Event{Type: store.Deleted, Kind: owned, Key: key})
			}
		}
		return append(events, store.Event{Type: store.Deleted, Kind: kind, Key: key}), nil
	})
	if err != nil {
		return backend.Wrap(ctx, "delete", kind, key, err)
	}
	return nil
}

// deleteMeshContents deletes every resource of a mesh and returns their
// events, by kind and then name.
func deleteMeshContents(ctx context.Context, tx pgx.Tx, mesh string) ([]store.Event, error) {
	rows, err := tx.Query(ctx, qDeleteMeshContents, mesh)
	if err != nil {
		return nil, err
	}
	var events []store.Event
	var kind, name string
	_, err = pgx.ForEachRow(rows, []any{&kind, &name}, func() error {
		events = append(events, store.Event{Type: store.Deleted, Kind: resource.Kind(kind), Key: resource.Key{Mesh: mesh, Name: name}})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(events, func(i, j int) bool {
		if events[i].Kind != events[j].Kind {
			return events[i].Kind < events[j].Kind
		}
		return events[i].Key.Name < events[j].Key.Name
	})
	return events, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	d, err := backend.Describe("get", kind)
	if err != nil {
		return nil, err
	}
	var version, created, modified int64
	var spec []byte
	err = s.pool.QueryRow(ctx, qGet, string(kind), key.Mesh, key.Name).Scan(&version, &spec, &created, &modified)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.NotFound(kind, key)
	}
	if err != nil {
		return nil, backend.Wrap(ctx, "get", kind, key, err)
	}
	obj, err := sqlrow.Decode(d, key.Mesh, key.Name, version, spec, created, modified)
	if err != nil {
		return nil, backend.Wrap(ctx, "get", kind, key, err)
	}
	return obj, nil
}

// List implements store.Store: the total and the page come from one snapshot.
func (s *Store) List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error) {
	d, err := backend.Describe("list", kind)
	if err != nil {
		return nil, err
	}
	if opts.Limit < 0 || opts.Offset < 0 {
		return nil, fmt.Errorf("postgres: list %s: limit and offset must not be negative", kind)
	}
	var res *store.ListResult
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		res, err = list(ctx, tx, d, opts)
		return err
	})
	if err != nil {
		return nil, backend.Wrap(ctx, "list", kind, resource.Key{}, err)
	}
	return res, nil
}

func list(ctx context.Context, tx pgx.Tx, d resource.Descriptor, opts store.ListOptions) (*store.ListResult, error) {
	qc, ql, args := qCount, qList, []any{string(d.Kind)}
	if opts.Mesh != "" {
		qc, ql = qCountMesh, qListMesh
	}
	res := &store.ListResult{}
	countArgs := args
	if opts.Mesh != "" {
		countArgs = append(countArgs, opts.Mesh)
	}
	if err := tx.QueryRow(ctx, qc, countArgs...).Scan(&res.Total); err != nil {
		return nil, err
	}
	start, end, next := opts.Page(res.Total)
	res.NextOffset = next
	var limit *int // NULL: no limit
	if opts.Limit > 0 {
		limit = &opts.Limit
	}
	n := end - start
	res.Items = make([]*resource.Object, 0, n)
	if n == 0 {
		return res, nil
	}
	args = append(args, limit, opts.Offset)
	if opts.Mesh != "" {
		args = append(args, opts.Mesh)
	}
	rows, err := tx.Query(ctx, ql, args...)
	if err != nil {
		return nil, err
	}
	var (
		mesh, name                 string
		version, created, modified int64
		spec                       []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&mesh, &name, &version, &spec, &created, &modified}, func() error {
		obj, err := sqlrow.Decode(d, mesh, name, version, spec, created, modified)
		if err != nil {
			return err
		}
		res.Items = append(res.Items, obj)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Count implements store.Store.
func (s *Store) Count(ctx context.Context, kind resource.Kind) (int, error) {
	if _, err := backend.Describe("count", kind); err != nil {
		return 0, err
	}
	var n int
	if err := s.pool.QueryRow(ctx, qCount, string(kind)).Scan(&n); err != nil {
		return 0, backend.Wrap(ctx, "count", kind, resource.Key{}, err)
	}
	return n, nil
}

// Watch implements store.Store: every change of the database, whichever
// replica made it, in commit order; a Resync after the listen connection was
// lost and re-made.
func (s *Store) Watch(ctx context.Context) <-chan store.Event { return s.feed.Watch(ctx) }

// Ping implements store.Store: a round trip on a pooled connection.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%v)", cerr, err)
		}
		return fmt.Errorf("postgres: ping %s: %w", describeConn(s.opts.Conn), err)
	}
	return nil
}

// Close stops listening and closes the pool; later operations fail. Watch
// channels are still closed only when their contexts are done.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		<-s.done
		s.pool.Close()
	})
	return nil
}
