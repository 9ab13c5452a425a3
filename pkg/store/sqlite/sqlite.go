// Package sqlite is the SQLite resource store: a store.Store persisted in
// one SQLite database file (WAL mode, pure-Go driver modernc.org/sqlite),
// for single-node control planes that must keep their resources across
// restarts.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/sqlrow"
)

// backend names this store in its errors.
const backend = sqlrow.Backend("sqlite")

// busyTimeoutMillis is how long a connection waits for a lock held by
// another connection (another process, or a checkpoint) before SQLITE_BUSY.
const busyTimeoutMillis = 5000

// Option configures Open.
type Option func(*config)

type config struct {
	synchronous string
	now         func() time.Time
	readConns   int
}

// WithSynchronous sets PRAGMA synchronous on the writer: "FULL" (default;
// every acknowledged write survives a crash or power loss), "EXTRA", or
// "NORMAL" (in WAL mode the database stays consistent, but the last
// acknowledged transactions may be lost on power loss).
func WithSynchronous(mode string) Option {
	return func(c *config) { c.synchronous = strings.ToUpper(strings.TrimSpace(mode)) }
}

// WithClock sets the clock that stamps creation and modification times
// (default time.Now). Times are stored as Unix nanoseconds and read back in UTC.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// WithReadConns sets how many read-only connections serve Get, List and
// Count concurrently (default max(4, GOMAXPROCS)).
func WithReadConns(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.readConns = n
		}
	}
}

// Store is a store.Store kept in a SQLite database. Writes go through one
// connection, one IMMEDIATE transaction each, serialized with the
// publication of their events; reads use a separate pool of read-only
// connections, which WAL mode lets run alongside the writer.
type Store struct {
	path   string
	now    func() time.Time
	writer *sql.DB
	reader *sql.DB
	// stmts holds every statement of the store, prepared on the pool
	// that runs it (writerQueries, readerQueries); read-only after Open.
	stmts map[string]*sql.Stmt
	feed  store.Feed

	// wmu serializes writes with the publication of their events, so that
	// events are published in commit order.
	wmu sync.Mutex

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// migrations[i] brings the schema from version i to i+1 (PRAGMA
// user_version). Append to it; never edit a released step.
var migrations = [][]string{
	{
		// The primary key is the clustered index of a WITHOUT ROWID table:
		// it already orders rows by (kind, mesh, name), which is exactly
		// what listing and point reads need, so no second index on those
		// columns is created. (A narrow secondary index on them was
		// measured with 10k rows: count(*) got ~15% faster, OFFSET paging
		// through it plus a join back got slower; not worth a second
		// write per change.)
		`CREATE TABLE resources (
			kind              TEXT    NOT NULL,
			mesh              TEXT    NOT NULL,
			name              TEXT    NOT NULL,
			version           INTEGER NOT NULL,
			spec              BLOB    NOT NULL,
			creation_time     INTEGER NOT NULL, -- Unix nanoseconds
			modification_time INTEGER NOT NULL, -- Unix nanoseconds
			PRIMARY KEY (kind, mesh, name)
		) WITHOUT ROWID`,
		// Cascading deletion of a mesh finds its resources by mesh. The
		// index is partial (Mesh rows, whose mesh is '', are left out) so
		// that only queries repeating its condition can use it: without
		// the condition, the planner would also pick it for listings
		// filtered by kind and mesh (it holds (mesh, kind, name)), and
		// then fetch every row through a second lookup instead of
		// walking the primary key.
		`CREATE INDEX resources_by_mesh ON resources (mesh) WHERE mesh <> ''`,
	},
}

// The store's statements (named so that tests can check their query plans).
const (
	qMeshExists = `SELECT 1 FROM resources WHERE kind = ? AND mesh = '' AND name = ?`
	qInsert     = `INSERT INTO resources (kind, mesh, name, version, spec, creation_time, modification_time)
		VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT DO NOTHING`
	qUpdate = `UPDATE resources SET version = version + 1, spec = ?, modification_time = ?
		WHERE kind = ? AND mesh = ? AND name = ? AND version = ?
		RETURNING version, creation_time`
	// qUpsert creates a resource or replaces its spec, whatever its version.
	qUpsert = `INSERT INTO resources (kind, mesh, name, version, spec, creation_time, modification_time)
		VALUES (?, ?, ?, 1, ?, ?, ?)
		ON CONFLICT (kind, mesh, name) DO UPDATE SET
			version = version + 1, spec = excluded.spec, modification_time = excluded.modification_time
		RETURNING version, creation_time`
	qVersion       = `SELECT version FROM resources WHERE kind = ? AND mesh = ? AND name = ?`
	qDelete        = `DELETE FROM resources WHERE kind = ? AND mesh = ? AND name = ?`
	qDeleteVersion = `DELETE FROM resources WHERE kind = ? AND mesh = ? AND name = ? AND version = ?`
	// The mesh <> '' condition lets these use the partial index resources_by_mesh.
	qMeshContents       = `SELECT kind, name FROM resources WHERE mesh = ? AND mesh <> '' ORDER BY kind, name`
	qDeleteMeshContents = `DELETE FROM resources WHERE mesh = ? AND mesh <> ''`
	qGet                = `SELECT version, spec, creation_time, modification_time FROM resources
		WHERE kind = ? AND mesh = ? AND name = ?`
	qCount     = `SELECT count(*) FROM resources WHERE kind = ?`
	qCountMesh = `SELECT count(*) FROM resources WHERE kind = ? AND mesh = ?`
	qList      = `SELECT mesh, name, version, spec, creation_time, modification_time FROM resources
		WHERE kind = ? ORDER BY mesh, name LIMIT ? OFFSET ?`
	qListMesh = `SELECT mesh, name, version, spec, creation_time, modification_time FROM resources
		WHERE kind = ? AND mesh = ? ORDER BY mesh, name LIMIT ? OFFSET ?`
)

// Open opens (creating it and its directory when missing) the database at
// path and brings its schema up to date.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	cfg := config{synchronous: "FULL", now: time.Now, readConns: max(4, runtime.GOMAXPROCS(0))}
	for _, o := range opts {
		o(&cfg)
	}
	switch cfg.synchronous {
	case "FULL", "EXTRA", "NORMAL":
	default:
		return nil, fmt.Errorf("sqlite: open %s: synchronous must be FULL, EXTRA or NORMAL, not %q", path, cfg.synchronous)
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("sqlite: open %q: need the path of a database file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	if err := prepareFile(abs); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}

	s := &Store{path: abs, now: cfg.now}
	writerDSN := uri(abs,
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMillis),
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous("+cfg.synchronous+")",
		"_pragma=foreign_keys(1)",
		"_txlock=immediate",
	)
	if s.writer, err = sql.Open("sqlite", writerDSN); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	if err := s.migrate(ctx); err != nil {
		_ = s.writer.Close()
		return nil, openError(abs, err)
	}
	var mode string
	if err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		_ = s.writer.Close()
		return nil, openError(abs, err)
	}
	if !strings.EqualFold(mode, "wal") {
		_ = s.writer.Close()
		return nil, fmt.Errorf("sqlite: open %s: WAL journal mode is not available here (journal_mode is %q)", abs, mode)
	}

	readerDSN := uri(abs,
		"mode=ro",
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMillis),
	)
	if s.reader, err = sql.Open("sqlite", readerDSN); err != nil {
		_ = s.writer.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	s.reader.SetMaxOpenConns(cfg.readConns)
	s.reader.SetMaxIdleConns(cfg.readConns)
	if err := s.reader.PingContext(ctx); err != nil {
		_ = s.Close()
		return nil, openError(abs, err)
	}
	if err := s.prepare(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	return s, nil
}

var (
	writerQueries = []string{qMeshExists, qInsert, qUpsert, qUpdate, qVersion, qDelete, qDeleteVersion, qMeshContents, qDeleteMeshContents}
	readerQueries = []string{qGet, qCount, qCountMesh, qList, qListMesh}
)

// prepare prepares every statement once, instead of at each use.
func (s *Store) prepare(ctx context.Context) error {
	s.stmts = map[string]*sql.Stmt{}
	for db, queries := range map[*sql.DB][]string{s.writer: writerQueries, s.reader: readerQueries} {
		for _, q := range queries {
			st, err := db.PrepareContext(ctx, q)
			if err != nil {
				return fmt.Errorf("prepare %q: %w", q, err)
			}
			s.stmts[q] = st
		}
	}
	return nil
}

// uri returns the SQLite URI of a file with query parameters. The path is
// escaped so that '?', '#' and '%' in it are not taken for URI syntax.
func uri(abs string, params ...string) string {
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
	return "file:" + p + "?" + strings.Join(params, "&")
}

// openError explains the errors of a file that is not a usable database.
func openError(path string, err error) error {
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return fmt.Errorf("sqlite: open %s: not a SQLite database, or a corrupt one: %w", path, err)
		case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
			return fmt.Errorf("sqlite: open %s: cannot open the database for writing: %w", path, err)
		}
	}
	return fmt.Errorf("sqlite: open %s: %w", path, err)
}

// prepareFile creates the database's directory and an empty database file
// (readable by its owner only) when they are missing, and makes their
// directory entries durable.
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil
	case err != nil:
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// migrate brings the schema to the latest version in one transaction.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this program supports (%d)", v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		for _, stmt := range migrations[i] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return err
	}
	return tx.Commit()
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// write runs fn in an IMMEDIATE transaction on the writer and, once it is
// committed, publishes the events fn returned, all under wmu.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx, now time.Time) ([]store.Event, error)) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	events, err := fn(tx, s.now().UTC())
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.feed.Publish(events...)
	return nil
}

// checkObject validates what Update and Upsert are given.
func checkObject(op string, obj *resource.Object) error {
	if err := store.CheckObject(obj); err != nil {
		return fmt.Errorf("sqlite: %s: %w", op, err)
	}
	return nil
}

// errorKey names the first object in errors that are not about one of them.
func errorKey(objs []*resource.Object) (resource.Kind, resource.Key) {
	return objs[0].Meta.Kind, objs[0].Meta.Key()
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, objs ...*resource.Object) error {
	if len(objs) == 0 {
		return errors.New("sqlite: create: no resource given")
	}
	if err := store.CheckNew("sqlite: create", objs); err != nil {
		return err
	}
	specs, err := backend.MarshalSpecs(ctx, "create", objs)
	if err != nil {
		return err
	}
	var stamp time.Time
	err = s.write(ctx, func(tx *sql.Tx, now time.Time) ([]store.Event, error) {
		stamp = now
		return s.insert(ctx, tx, objs, specs, now)
	})
	if err != nil {
		kind, key := errorKey(objs)
		return backend.Wrap(ctx, "create", kind, key, err)
	}
	for _, o := range objs {
		o.Meta.Version = 1
		o.Meta.CreationTime = stamp
		o.Meta.ModificationTime = stamp
	}
	return nil
}

// insert creates objs in tx: each mesh-scoped one needs its mesh (an
// insert earlier in tx counts), and no key may exist.
func (s *Store) insert(ctx context.Context, tx *sql.Tx, objs []*resource.Object, specs [][]byte, now time.Time) ([]store.Event, error) {
	events := make([]store.Event, 0, len(objs))
	for i, o := range objs {
		kind, key := o.Meta.Kind, o.Meta.Key()
		if err := s.checkMesh(ctx, tx, key.Mesh); err != nil {
			return nil, err
		}
		res, err := tx.StmtContext(ctx, s.stmts[qInsert]).ExecContext(ctx,
			string(kind), key.Mesh, key.Name, specs[i], now.UnixNano(), now.UnixNano())
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, err
		} else if n == 0 {
			return nil, store.AlreadyExists(kind, key)
		}
		events = append(events, store.Event{Type: store.Created, Kind: kind, Key: key, Version: 1})
	}
	return events, nil
}

// checkMesh fails with ErrMeshNotFound when mesh is not empty and no such
// mesh exists in tx.
func (s *Store) checkMesh(ctx context.Context, tx *sql.Tx, mesh string) error {
	if mesh == "" {
		return nil
	}
	var one int
	err := tx.StmtContext(ctx, s.stmts[qMeshExists]).QueryRowContext(ctx, string(resource.KindMesh), mesh).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return store.MeshNotFound(mesh)
	}
	return err
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, obj *resource.Object) error {
	if err := checkObject("update", obj); err != nil {
		return err
	}
	key := obj.Meta.Key()
	kind := obj.Meta.Kind
	spec, err := json.Marshal(obj.Spec)
	if err != nil {
		return backend.Wrap(ctx, "update", kind, key, err)
	}
	var version, created int64
	var stamp time.Time
	err = s.write(ctx, func(tx *sql.Tx, now time.Time) ([]store.Event, error) {
		err := tx.StmtContext(ctx, s.stmts[qUpdate]).QueryRowContext(ctx,
			spec, now.UnixNano(), string(kind), key.Mesh, key.Name, obj.Meta.Version).Scan(&version, &created)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, s.missOrConflict(ctx, tx, kind, key)
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

// missOrConflict tells why a conditional write matched no row: the
// resource does not exist (ErrNotFound) or has another version (ErrConflict).
func (s *Store) missOrConflict(ctx context.Context, tx *sql.Tx, kind resource.Kind, key resource.Key) error {
	var current int64
	err := tx.StmtContext(ctx, s.stmts[qVersion]).QueryRowContext(ctx, string(kind), key.Mesh, key.Name).Scan(&current)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.NotFound(kind, key)
	case err != nil:
		return err
	}
	return store.Conflict(kind, key)
}

// Upsert implements store.Store: one INSERT … ON CONFLICT DO UPDATE, so no
// other writer can come between the existence check and the write.
func (s *Store) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if err := checkObject("upsert", obj); err != nil {
		return false, err
	}
	if err := store.CheckNew("sqlite: upsert", append([]*resource.Object{withMeta(obj)}, withNew...)); err != nil {
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
	err = s.write(ctx, func(tx *sql.Tx, now time.Time) ([]store.Event, error) {
		if err := s.checkMesh(ctx, tx, key.Mesh); err != nil {
			return nil, err
		}
		err := tx.StmtContext(ctx, s.stmts[qUpsert]).QueryRowContext(ctx,
			string(kind), key.Mesh, key.Name, spec, now.UnixNano(), now.UnixNano()).Scan(&version, &created)
		if err != nil {
			return nil, err
		}
		stamp = now
		if version > 1 {
			return []store.Event{{Type: store.Updated, Kind: kind, Key: key, Version: version}}, nil
		}
		events, err := s.insert(ctx, tx, withNew, specs, now)
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

// withMeta returns a shallow copy of obj with version 0, to be checked
// like the objects an upsert may create.
func withMeta(obj *resource.Object) *resource.Object {
	c := *obj
	c.Meta.Version = 0
	return &c
}

// Delete implements store.Store. Deleting a Mesh deletes its resources in
// the same transaction and publishes a Deleted event for each (ordered by
// kind, then name), then the Mesh's own; deleting an owner deletes what it
// owns the same way.
func (s *Store) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if _, err := backend.Describe("delete", kind); err != nil {
		return err
	}
	err := s.write(ctx, func(tx *sql.Tx, _ time.Time) ([]store.Event, error) {
		var res sql.Result
		var err error
		if version > 0 {
			res, err = tx.StmtContext(ctx, s.stmts[qDeleteVersion]).ExecContext(ctx, string(kind), key.Mesh, key.Name, version)
		} else {
			res, err = tx.StmtContext(ctx, s.stmts[qDelete]).ExecContext(ctx, string(kind), key.Mesh, key.Name)
		}
		if err != nil {
			return nil, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return nil, err
		} else if n == 0 {
			return nil, s.missOrConflict(ctx, tx, kind, key)
		}
		var events []store.Event
		if kind == resource.KindMesh {
			if events, err = s.deleteMeshContents(ctx, tx, key.Name); err != nil {
				return nil, err
			}
		}
		for _, owned := range store.Owned(kind) {
			res, err := tx.StmtContext(ctx, s.stmts[qDelete]).ExecContext(ctx, string(owned), key.Mesh, key.Name)
			if err != nil {
				return nil, err
			}
			if n, err := res.RowsAffected(); err != nil {
				return nil, err
			} else if n > 0 {
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

// deleteMeshContents deletes every resource of a mesh and returns their events.
func (s *Store) deleteMeshContents(ctx context.Context, tx *sql.Tx, mesh string) ([]store.Event, error) {
	rows, err := tx.StmtContext(ctx, s.stmts[qMeshContents]).QueryContext(ctx, mesh)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var events []store.Event
	for rows.Next() {
		var kind, name string
		if err := rows.Scan(&kind, &name); err != nil {
			return nil, err
		}
		events = append(events, store.Event{Type: store.Deleted, Kind: resource.Kind(kind), Key: resource.Key{Mesh: mesh, Name: name}})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if _, err := tx.StmtContext(ctx, s.stmts[qDeleteMeshContents]).ExecContext(ctx, mesh); err != nil {
		return nil, err
	}
	return events, nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	d, err := backend.Describe("get", kind)
	if err != nil {
		return nil, err
	}
	var (
		version, created, modified int64
		spec                       []byte
	)
	err = s.stmts[qGet].QueryRowContext(ctx,
		string(kind), key.Mesh, key.Name).Scan(&version, &spec, &created, &modified)
	if errors.Is(err, sql.ErrNoRows) {
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

// List implements store.Store. The total and the page are read from one
// snapshot.
func (s *Store) List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error) {
	d, err := backend.Describe("list", kind)
	if err != nil {
		return nil, err
	}
	if opts.Limit < 0 || opts.Offset < 0 {
		return nil, fmt.Errorf("sqlite: list %s: limit and offset must not be negative", kind)
	}
	res, err := s.list(ctx, d, opts)
	if err != nil {
		return nil, backend.Wrap(ctx, "list", kind, resource.Key{}, err)
	}
	return res, nil
}

func (s *Store) list(ctx context.Context, d resource.Descriptor, opts store.ListOptions) (*store.ListResult, error) {
	tx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback() }()

	qc, ql, args := qCount, qList, []any{string(d.Kind)}
	if opts.Mesh != "" {
		qc, ql, args = qCountMesh, qListMesh, append(args, opts.Mesh)
	}
	res := &store.ListResult{}
	if err := tx.StmtContext(ctx, s.stmts[qc]).QueryRowContext(ctx, args...).Scan(&res.Total); err != nil {
		return nil, err
	}
	start, end, next := opts.Page(res.Total)
	res.NextOffset = next
	limit := -1 // SQLite: no limit
	if opts.Limit > 0 {
		limit = opts.Limit
	}
	n := end - start
	res.Items = make([]*resource.Object, 0, n)
	if n == 0 {
		return res, nil
	}
	rows, err := tx.StmtContext(ctx, s.stmts[ql]).QueryContext(ctx, append(args, limit, opts.Offset)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			mesh, name                 string
			version, created, modified int64
			spec                       sql.RawBytes
		)
		if err := rows.Scan(&mesh, &name, &version, &spec, &created, &modified); err != nil {
			return nil, err
		}
		obj, err := sqlrow.Decode(d, mesh, name, version, spec, created, modified)
		if err != nil {
			return nil, err
		}
		res.Items = append(res.Items, obj)
	}
	if err := rows.Err(); err != nil {
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
	if err := s.stmts[qCount].QueryRowContext(ctx, string(kind)).Scan(&n); err != nil {
		return 0, backend.Wrap(ctx, "count", kind, resource.Key{}, err)
	}
	return n, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan store.Event { return s.feed.Watch(ctx) }

// Ping implements store.Store: it runs a trivial query on a read connection
// and on the writer.
func (s *Store) Ping(ctx context.Context) error {
	for _, db := range []*sql.DB{s.reader, s.writer} {
		var one int
		if err := db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
			if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
				err = fmt.Errorf("%w (%v)", cerr, err)
			}
			return fmt.Errorf("sqlite: ping %s: %w", s.path, err)
		}
	}
	return nil
}

// Close closes both connection pools; later operations fail. Watch channels
// are still closed only when their contexts are done.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, st := range s.stmts {
			errs = append(errs, st.Close())
		}
		if s.reader != nil {
			errs = append(errs, s.reader.Close())
		}
		errs = append(errs, s.writer.Close())
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("sqlite: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}
