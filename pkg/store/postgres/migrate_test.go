package postgres

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/pgtest"
)

func TestMigrations(t *testing.T) {
	srv := pgtest.Shared(t)

	t.Run("OpenWithoutMigrateNamesTheCommand", func(t *testing.T) {
		cfg := connConfig(t, srv, srv.CreateDB(t))
		_, err := Open(t.Context(), Options{Conn: cfg})
		require.ErrorIs(t, err, ErrSchemaVersion)
		require.ErrorContains(t, err, "database schema is at version 0, this kuma-cp needs 1: run `kuma-cp migrate up`")

		applied, err := Migrate(t.Context(), cfg)
		require.NoError(t, err)
		require.Equal(t, []int64{1}, applied)
		applied, err = Migrate(t.Context(), cfg)
		require.NoError(t, err)
		require.Empty(t, applied, "nothing left to do")
		s, err := Open(t.Context(), Options{Conn: cfg})
		require.NoError(t, err)
		require.NoError(t, s.Close())
	})

	t.Run("NewerSchemaIsRefused", func(t *testing.T) {
		db := srv.CreateDB(t)
		cfg := connConfig(t, srv, db)
		_, err := Migrate(t.Context(), cfg)
		require.NoError(t, err)
		srv.Exec(t, db, "INSERT INTO schema_migrations (version) VALUES (99)")
		_, err = Open(t.Context(), Options{Conn: cfg})
		require.ErrorIs(t, err, ErrSchemaVersion)
		require.ErrorContains(t, err, "the database schema was migrated by a newer kuma-cp (version 99 > 1): upgrade kuma-cp")
		_, err = Migrate(t.Context(), cfg)
		require.ErrorContains(t, err, "upgrade kuma-cp")
	})

	t.Run("ConcurrentMigrationsAreSafe", func(t *testing.T) {
		cfg := connConfig(t, srv, srv.CreateDB(t))
		const n = 4
		applied := make([][]int64, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { applied[i], errs[i] = Migrate(t.Context(), cfg) })
		}
		wg.Wait()
		total := 0
		for i := range n {
			require.NoError(t, errs[i])
			total += len(applied[i])
		}
		require.Equal(t, 1, total, "each migration applied once")
		s, err := Open(t.Context(), Options{Conn: cfg})
		require.NoError(t, err)
		require.NoError(t, s.Close())
	})
}
