package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one step of the schema: NNNN_what.sql brings it to version NNNN.
type migration struct {
	version int64
	name    string
	sql     string
}

// migrations are the embedded steps, by version (1, 2, … without gaps).
var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err)
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			panic(fmt.Sprintf("migration %s: name must be NNNN_what.sql", e.Name()))
		}
		data, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			panic(err)
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != int64(i+1) {
			panic(fmt.Sprintf("migration %s: expected version %d", m.name, i+1))
		}
	}
	return out
}

// SchemaVersion is the schema version this program needs.
func SchemaVersion() int64 { return int64(len(migrations)) }

// migrateLockKey is the advisory lock (pg_advisory_lock) that makes
// concurrent migrations of one database take turns.
const migrateLockKey = 0x6b756d61_6d696772 // "kumamigr"

const qCreateMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    bigint PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate brings the database's schema up to SchemaVersion, one
// transaction per missing step, under an advisory lock (two at once are
// safe: the second finds nothing left to do). It returns the versions it
// applied. A schema newer than this program's is an error.
func Migrate(ctx context.Context, cfg *pgx.ConnConfig) ([]int64, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrateLockKey)); err != nil {
		return nil, fmt.Errorf("postgres: migrate: take the migration lock: %w", err)
	}
	// Closing the connection frees the lock too; unlock for the error-free path.
	defer func() { _, _ = conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", int64(migrateLockKey)) }()
	if _, err := conn.Exec(ctx, qCreateMigrations); err != nil {
		return nil, fmt.Errorf("postgres: migrate: create schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	if current > SchemaVersion() {
		return nil, newerSchema(current)
	}
	var applied []int64
	for _, m := range migrations[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("postgres: migrate to version %d (%s): %w", m.version, m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// schemaVersion reads the database's schema version (0: never migrated).
func schemaVersion(ctx context.Context, q querier) (int64, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	if !exists {
		return 0, nil
	}
	var v int64
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version: %w", err)
	}
	return v, nil
}

// ErrSchemaVersion: the database's schema is not the one this program needs.
var ErrSchemaVersion = errors.New("wrong database schema version")

func newerSchema(v int64) error {
	return fmt.Errorf("postgres: the database schema was migrated by a newer kuma-cp (version %d > %d): upgrade kuma-cp: %w", v, SchemaVersion(), ErrSchemaVersion)
}

// checkSchema fails unless the database's schema is exactly SchemaVersion.
func checkSchema(ctx context.Context, q querier) error {
	v, err := schemaVersion(ctx, q)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	switch {
	case v < SchemaVersion():
		return fmt.Errorf("postgres: database schema is at version %d, this kuma-cp needs %d: run `kuma-cp migrate up`: %w", v, SchemaVersion(), ErrSchemaVersion)
	case v > SchemaVersion():
		return newerSchema(v)
	}
	return nil
}
