package sqlite

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t testing.TB, path string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestContract(t *testing.T) {
	storetest.RunContract(t, func(t *testing.T) store.Store {
		return openStore(t, filepath.Join(t.TempDir(), "store.db"))
	})
}

// snapshot lists every resource of every kind.
func snapshot(t *testing.T, s store.Store) map[resource.Kind][]*resource.Object {
	t.Helper()
	out := map[resource.Kind][]*resource.Object{}
	for _, d := range resource.Descriptors() {
		res, err := s.List(t.Context(), d.Kind, store.ListOptions{})
		require.NoError(t, err)
		out[d.Kind] = res.Items
	}
	return out
}

func TestReopenPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	ctx := t.Context()
	clock := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	tick := func() time.Time { clock = clock.Add(1500 * time.Millisecond); return clock }

	s, err := Open(ctx, path, WithClock(tick))
	require.NoError(t, err)
	for _, m := range []string{"default", "other", "gone"} {
		require.NoError(t, s.Create(ctx, storetest.Mesh(m)))
	}
	for i := range 5 {
		require.NoError(t, s.Create(ctx, storetest.Dataplane("default", fmt.Sprintf("dp-%d", i), i)))
		require.NoError(t, s.Create(ctx, storetest.Dataplane("gone", fmt.Sprintf("dp-%d", i), i)))
	}
	require.NoError(t, s.Create(ctx, storetest.TrafficPermission("other", "tp")))
	dp, err := s.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "dp-2"})
	require.NoError(t, err)
	for range 3 {
		dp.Dataplane().Networking.Address = fmt.Sprintf("10.0.0.%d", dp.Meta.Version)
		require.NoError(t, s.Update(ctx, dp))
	}
	port := uint32(1234)
	m, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "other"})
	require.NoError(t, err)
	m.Mesh().Metrics = &resource.Metrics{EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus", Conf: &resource.PrometheusConf{Port: &port, Tags: map[string]string{"a": "b"}}}}}
	require.NoError(t, s.Update(ctx, m))
	require.NoError(t, s.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "dp-4"}, 0))
	require.NoError(t, s.Delete(ctx, resource.KindMesh, resource.Key{Name: "gone"}, 0))
	before := snapshot(t, s)
	require.NoError(t, s.Close())

	s2 := openStore(t, path)
	after := snapshot(t, s2)
	require.Equal(t, before, after)
	require.Len(t, after[resource.KindMesh], 2)
	require.Len(t, after[resource.KindDataplane], 4)
	got, err := s2.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "dp-2"})
	require.NoError(t, err)
	require.Equal(t, int64(4), got.Meta.Version)
	require.Equal(t, "10.0.0.3", got.Dataplane().Networking.Address)
	require.True(t, got.Meta.ModificationTime.After(got.Meta.CreationTime))
	require.Equal(t, dp.Meta, got.Meta, "versions and times are read back exactly")
	gotMesh, err := s2.Get(ctx, resource.KindMesh, resource.Key{Name: "other"})
	require.NoError(t, err)
	require.Equal(t, m.Spec, gotMesh.Spec)

	// Writing carries on from the stored versions.
	require.NoError(t, s2.Update(ctx, got))
	require.Equal(t, int64(5), got.Meta.Version)
	require.ErrorIs(t, s2.Create(ctx, storetest.Dataplane("gone", "dp-0", 0)), store.ErrMeshNotFound)
}

func TestFileAndWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := openStore(t, path)
	require.NoError(t, s.Create(t.Context(), storetest.Mesh("default")))

	require.Equal(t, path, s.Path())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	_, err = os.Stat(path + "-wal")
	require.NoError(t, err, "a WAL file sits next to the database while it is open")

	var mode string
	require.NoError(t, s.writer.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode))
	require.Equal(t, "wal", mode)
	var sync int
	require.NoError(t, s.writer.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync))
	require.Equal(t, 2, sync, "FULL by default")
	var version int
	require.NoError(t, s.writer.QueryRowContext(t.Context(), "PRAGMA user_version").Scan(&version))
	require.Equal(t, len(migrations), version)

	// The read pool cannot write.
	_, err = s.reader.ExecContext(t.Context(), `DELETE FROM resources`)
	require.Error(t, err)
	n, err := s.Count(t.Context(), resource.KindMesh)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// The file is a database any SQLite client can read.
	require.NoError(t, s.Close())
	raw, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer raw.Close()
	require.NoError(t, raw.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode))
	require.Equal(t, "wal", mode, "WAL mode is persistent")
	var name string
	require.NoError(t, raw.QueryRowContext(t.Context(), "SELECT name FROM resources WHERE kind = 'Mesh'").Scan(&name))
	require.Equal(t, "default", name)
}

func TestSynchronousOption(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"), WithSynchronous("normal"))
	var sync int
	require.NoError(t, s.writer.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync))
	require.Equal(t, 1, sync)

	_, err := Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), WithSynchronous("OFF"))
	require.ErrorContains(t, err, "synchronous")
}

func TestCreatesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c", "store.db")
	s := openStore(t, path)
	require.NoError(t, s.Create(t.Context(), storetest.Mesh("default")))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())
}

func TestRelativeAndSpecialPaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "odd?dir#with%25chars")
	path := filepath.Join(dir, "store.db")
	s := openStore(t, path)
	require.NoError(t, s.Create(t.Context(), storetest.Mesh("default")))
	_, err := os.Stat(path)
	require.NoError(t, err, "the database is at the exact path given")
	entries, err := os.ReadDir(filepath.Dir(dir))
	require.NoError(t, err)
	require.Len(t, entries, 1, "nothing created elsewhere")

	t.Chdir(t.TempDir())
	rel := openStore(t, filepath.Join("sub", "rel.db"))
	require.True(t, filepath.IsAbs(rel.Path()))
	_, err = os.Stat(filepath.Join("sub", "rel.db"))
	require.NoError(t, err)
}

func TestRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:x.db?mode=memory"} {
		_, err := Open(t.Context(), p)
		require.Error(t, err, "%q", p)
	}
	// A directory where the file should be.
	dir := t.TempDir()
	_, err := Open(t.Context(), dir)
	require.Error(t, err)
}

func TestCorruptFile(t *testing.T) {
	for name, content := range map[string][]byte{
		"text":    []byte("this is not a database, just some text\n"),
		"garbage": []byte(strings.Repeat("\x13\x37garbage", 1024)),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			require.NoError(t, os.WriteFile(path, content, 0o600))
			s, err := Open(t.Context(), path)
			require.Error(t, err)
			require.Nil(t, s)
			require.ErrorContains(t, err, "not a SQLite database")
			require.ErrorContains(t, err, path)
			// The file is left alone.
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, content, after)
		})
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(t.Context(), path)
	require.NoError(t, err)
	_, err = s.writer.ExecContext(t.Context(), "PRAGMA user_version = 99")
	require.NoError(t, err)
	require.NoError(t, s.Close())

	_, err = Open(t.Context(), path)
	require.ErrorContains(t, err, "schema version 99 is newer")
}

func TestClock(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 123, time.FixedZone("X", 3600))
	now := t0
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"), WithClock(func() time.Time { return now }))
	ctx := t.Context()
	m := storetest.Mesh("default")
	require.NoError(t, s.Create(ctx, m))
	require.Equal(t, t0.UTC(), m.Meta.CreationTime)
	require.Equal(t, t0.UTC(), m.Meta.ModificationTime)

	now = t0.Add(time.Hour)
	m.Meta.CreationTime = time.Time{}
	require.NoError(t, s.Update(ctx, m))
	got, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.NoError(t, err)
	require.Equal(t, t0.UTC(), got.Meta.CreationTime)
	require.Equal(t, now.UTC(), got.Meta.ModificationTime)
	require.Equal(t, got.Meta, m.Meta, "the updated object carries the stored meta")
}

func TestClosed(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store.db"))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")
	require.Error(t, s.Ping(t.Context()))
	require.Error(t, s.Create(t.Context(), storetest.Mesh("default")))
	_, err = s.Get(t.Context(), resource.KindMesh, resource.Key{Name: "default"})
	require.Error(t, err)
	require.NotErrorIs(t, err, store.ErrNotFound)
}

// TestQueryPlans checks that listing walks the primary key in order (no
// sort) and that cascades use the mesh index.
func TestQueryPlans(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "store.db"))
	plan := func(q string, args ...any) string {
		t.Helper()
		rows, err := s.reader.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		require.NoError(t, err)
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &notused, &detail))
			lines = append(lines, detail)
		}
		require.NoError(t, rows.Err())
		return strings.Join(lines, "\n")
	}
	for _, q := range []string{qMeshExists, qUpdate, qVersion, qDelete, qDeleteVersion, qGet, qCount, qCountMesh, qList, qListMesh} {
		p := plan(q, "Dataplane", "default", "dp", 1, 2, 3)
		t.Logf("%s\n  %s", q, p)
		require.Contains(t, p, "SEARCH resources USING PRIMARY KEY", q)
		require.NotContains(t, p, "TEMP B-TREE", q)
		require.NotContains(t, p, "resources_by_mesh", q)
	}
	for _, q := range []string{qMeshContents, qDeleteMeshContents} {
		p := plan(q, "default")
		t.Logf("%s\n  %s", q, p)
		require.Contains(t, p, "resources_by_mesh", q)
		require.NotContains(t, p, "TEMP B-TREE", q)
	}
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B, seed []*resource.Object) store.Store {
		path := filepath.Join(b.TempDir(), "store.db")
		// Seed without waiting for the disk on every commit, then reopen
		// with the default (FULL) durability for the timed part.
		s, err := Open(b.Context(), path, WithSynchronous("NORMAL"))
		require.NoError(b, err)
		storetest.Seed(b, s, seed)
		require.NoError(b, s.Close())
		return openStore(b, path)
	})
}
