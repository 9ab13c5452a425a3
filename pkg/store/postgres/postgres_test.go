package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/pgtest"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// connConfig is the connection configuration of database db on srv.
func connConfig(t testing.TB, srv *pgtest.Server, db string) *pgx.ConnConfig {
	t.Helper()
	cfg, err := pgx.ParseConfig(srv.DSN(db))
	require.NoError(t, err)
	return cfg
}

// freshDB creates a migrated database on the shared server.
func freshDB(t testing.TB) *pgx.ConnConfig {
	t.Helper()
	srv := pgtest.Shared(t)
	cfg := connConfig(t, srv, srv.CreateDB(t))
	_, err := Migrate(t.Context(), cfg)
	require.NoError(t, err)
	return cfg
}

func openStore(t testing.TB, cfg *pgx.ConnConfig) *Store {
	t.Helper()
	s, err := Open(t.Context(), Options{Conn: cfg, MaxConns: 8})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestContract(t *testing.T) {
	storetest.RunContract(t, func(t *testing.T) store.Store {
		return openStore(t, freshDB(t))
	})
}

var _ = context.Background
