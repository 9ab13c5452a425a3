package postgres

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/pgtest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

const waitTimeout = 30 * time.Second

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(waitTimeout):
		t.Fatal("no event")
		return store.Event{}
	}
}

// Two stores on one database (two replicas) see each other's writes, in
// commit order, with the versions written.
func TestTwoStoresSeeEachOther(t *testing.T) {
	cfg := freshDB(t)
	a, b := openStore(t, cfg), openStore(t, cfg)
	chA, chB := a.Watch(t.Context()), b.Watch(t.Context())
	require.NoError(t, a.Create(t.Context(), storetest.Mesh("default")))
	dp := storetest.Dataplane("default", "dp-1", 1)
	require.NoError(t, b.Create(t.Context(), dp))
	require.NoError(t, a.Update(t.Context(), dp))
	require.NoError(t, b.Delete(t.Context(), resource.KindMesh, resource.Key{Name: "default"}, 0))
	want := []store.Event{
		{Type: store.Created, Kind: resource.KindMesh, Key: resource.Key{Name: "default"}, Version: 1},
		{Type: store.Created, Kind: resource.KindDataplane, Key: resource.Key{Mesh: "default", Name: "dp-1"}, Version: 1},
		{Type: store.Updated, Kind: resource.KindDataplane, Key: resource.Key{Mesh: "default", Name: "dp-1"}, Version: 2},
		{Type: store.Deleted, Kind: resource.KindDataplane, Key: resource.Key{Mesh: "default", Name: "dp-1"}},
		{Type: store.Deleted, Kind: resource.KindMesh, Key: resource.Key{Name: "default"}},
	}
	for _, ch := range []<-chan store.Event{chA, chB} {
		for _, w := range want {
			require.Equal(t, w, next(t, ch))
		}
	}
}

// terminateListeners ends the listen connections of the database's stores.
func terminateListeners(t *testing.T, cfg *pgx.ConnConfig) int {
	t.Helper()
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n))
	return n
}

// After its listen connection is killed, a store reconnects and every
// subscriber gets a Resync; what was written meanwhile is there to re-read,
// and changes after it arrive as events again.
func TestResyncAfterListenConnectionLost(t *testing.T) {
	cfg := freshDB(t)
	a := openStore(t, cfg)
	writer := openStore(t, cfg)
	ch := a.Watch(t.Context())
	require.NoError(t, writer.Create(t.Context(), storetest.Mesh("default")))
	require.Equal(t, store.Created, next(t, ch).Type)

	require.Equal(t, 2, terminateListeners(t, cfg))
	// Written while the listen connections may be down: not lost.
	for i := range 5 {
		require.NoError(t, writer.Create(t.Context(), storetest.Dataplane("default", fmt.Sprintf("dp-%d", i), i)))
	}
	// Events of those writes may come (when they were sent after the
	// reconnect), but a Resync comes whatever happened.
	for e := next(t, ch); e.Type != store.Resync; e = next(t, ch) {
		require.Equal(t, store.Created, e.Type, "%+v", e)
	}
	res, err := a.List(t.Context(), resource.KindDataplane, store.ListOptions{})
	require.NoError(t, err)
	require.Len(t, res.Items, 5, "the mirror's re-read sees every write")

	// Events flow again after the reconnect.
	require.NoError(t, writer.Create(t.Context(), storetest.Dataplane("default", "after", 9)))
	for {
		e := next(t, ch)
		if e.Key.Name == "after" {
			require.Equal(t, store.Created, e.Type)
			break
		}
	}
}

// Two processes increment one counter (a resource's port, by Update with
// retry on conflict) and upsert one key: no update is lost, no upsert fails.
const childEnv = "KUMA_PGSTORE_TEST_CHILD_DSN"

const increments = 40

func TestConcurrentWritersTwoProcesses(t *testing.T) {
	if dsn := os.Getenv(childEnv); dsn != "" {
		cfg, err := pgx.ParseConfig(dsn)
		require.NoError(t, err)
		s := openStore(t, cfg)
		hammer(t, s, "child")
		return
	}
	cfg := freshDB(t)
	s := openStore(t, cfg)
	require.NoError(t, s.Create(t.Context(), storetest.Mesh("default"), counter(0)))
	child := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestConcurrentWritersTwoProcesses$", "-test.count=1")
	srv := pgtest.Shared(t)
	child.Env = append(os.Environ(), childEnv+"="+srv.DSN(cfg.Database))
	out := make(chan error, 1)
	var output []byte
	go func() {
		var err error
		output, err = child.CombinedOutput()
		out <- err
	}()
	hammer(t, s, "parent")
	require.NoError(t, <-out, "the second process: %s", output)
	got, err := s.Get(t.Context(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "counter"})
	require.NoError(t, err)
	require.Equal(t, uint32(2*increments), got.Dataplane().Networking.Inbound[0].Port)
}

func counter(n uint32) *resource.Object {
	obj := storetest.Dataplane("default", "counter", 0)
	obj.Dataplane().Networking.Inbound[0].Port = n
	return obj
}

func hammer(t *testing.T, s *Store, who string) {
	ctx := t.Context()
	for i := range increments {
		for {
			obj, err := s.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "counter"})
			require.NoError(t, err)
			obj.Dataplane().Networking.Inbound[0].Port++
			err = s.Update(ctx, obj)
			if err == nil {
				break
			}
			require.ErrorIs(t, err, store.ErrConflict)
		}
		_, err := s.Upsert(ctx, storetest.Dataplane("default", "shared-"+strconv.Itoa(i%3), i))
		require.NoError(t, err, "%s upsert", who)
	}
}
