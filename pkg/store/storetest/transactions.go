package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// runTransactions is the part of the contract about writes that are one
// transaction: creating several resources, upserting, conditional and
// cascading deletes, each also against racing writers.
func (c suite) runTransactions(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("CreateSeveral", func(t *testing.T) {
		s := newStore(t)
		ch := s.Watch(t.Context())
		m, tp := Mesh("m"), TrafficPermission("m", "allow-all-m")
		require.NoError(t, s.Create(t.Context(), m, tp), "a mesh and a resource in it, in one call")
		oneCommit := !limited(t, c.lim.SeparateCommits)
		for _, o := range []*resource.Object{m, tp} {
			c.created(t, o.Meta.Version)
			if oneCommit {
				require.True(t, o.Meta.CreationTime.Equal(m.Meta.CreationTime), "one commit time")
			}
			require.Equal(t, o.Meta, mustGet(t, s, o.Meta.Kind, o.Meta.Key()).Meta)
		}
		require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindMesh, Key: key("", "m"), Version: m.Meta.Version}, nextEvent(t, ch))
		require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindTrafficPermission, Key: key("m", "allow-all-m"), Version: tp.Meta.Version}, nextEvent(t, ch))
		requireNoEvent(t, ch)
		// The mesh must come before what lives in it.
		err := s.Create(t.Context(), TrafficPermission("later", "tp"), Mesh("later"))
		require.ErrorIs(t, err, store.ErrMeshNotFound)
	})

	t.Run("CreateSeveralAllOrNothing", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "taken", 1))
		ch := s.Watch(t.Context())
		cases := map[string]struct {
			objs []*resource.Object
			want error
		}{
			"existing key last":          {[]*resource.Object{Mesh("new"), TrafficPermission("new", "tp"), Dataplane("default", "dp-1", 1), Dataplane("default", "taken", 2)}, store.ErrAlreadyExists},
			"missing mesh in the middle": {[]*resource.Object{Mesh("new"), Dataplane("default", "dp-1", 1), TrafficPermission("nope", "tp"), Dataplane("new", "dp-2", 2)}, store.ErrMeshNotFound},
			"same key twice":             {[]*resource.Object{Mesh("new"), Dataplane("new", "dp", 1), Dataplane("new", "dp", 2)}, store.ErrAlreadyExists},
		}
		for name, tc := range cases {
			require.ErrorIs(t, s.Create(t.Context(), tc.objs...), tc.want, name)
			for _, o := range tc.objs {
				require.Zero(t, o.Meta.Version, "%s: a refused object keeps version 0", name)
			}
			_, err := s.Get(t.Context(), resource.KindMesh, key("", "new"))
			require.ErrorIs(t, err, store.ErrNotFound, "%s: the mesh created first is not kept", name)
			_, err = s.Get(t.Context(), resource.KindDataplane, key("default", "dp-1"))
			require.ErrorIs(t, err, store.ErrNotFound, "%s", name)
			require.Equal(t, "127.0.0.2", mustGet(t, s, resource.KindDataplane, key("default", "taken")).Dataplane().Networking.Address)
		}
		require.Error(t, s.Create(t.Context()), "nothing to create")
		requireNoEvent(t, ch)
		n, err := s.Count(t.Context(), resource.KindDataplane)
		require.NoError(t, err)
		require.Equal(t, 1, n)
	})

	t.Run("Upsert", func(t *testing.T) {
		s := newStore(t)
		_, err := s.Upsert(t.Context(), Dataplane("nope", "dp", 1))
		require.ErrorIs(t, err, store.ErrMeshNotFound)
		mustCreate(t, s, Mesh("default"))
		ch := s.Watch(t.Context())

		dp := Dataplane("default", "dp", 1)
		dp.Meta.Version = 7 // ignored
		require.True(t, MustUpsert(t, s, dp), "created")
		c.created(t, dp.Meta.Version)
		created := dp.Meta.CreationTime
		require.False(t, created.IsZero())
		waitUntilAfter(t, created)

		versions := []int64{dp.Meta.Version}
		for i, stale := range []int64{0, 1, 99} {
			upd := Dataplane("default", "dp", 10+i)
			upd.Meta.Version = stale
			require.False(t, MustUpsert(t, s, upd), "version %d: updated", stale)
			c.next(t, versions[len(versions)-1], upd.Meta.Version)
			versions = append(versions, upd.Meta.Version)
			require.True(t, upd.Meta.CreationTime.Equal(created), "creation time kept")
			require.True(t, upd.Meta.ModificationTime.After(created))
			got := mustGet(t, s, resource.KindDataplane, key("default", "dp"))
			require.Equal(t, upd.Meta, got.Meta)
			require.Equal(t, upd.Spec, got.Spec)
		}
		require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindDataplane, Key: key("default", "dp"), Version: versions[0]}, nextEvent(t, ch))
		for _, v := range versions[1:] {
			require.Equal(t, store.Event{Type: store.Updated, Kind: resource.KindDataplane, Key: key("default", "dp"), Version: v}, nextEvent(t, ch))
		}
		requireNoEvent(t, ch)
	})

	t.Run("UpsertWithNew", func(t *testing.T) {
		s := newStore(t)
		ch := s.Watch(t.Context())
		m, tp := Mesh("m"), TrafficPermission("m", "allow-all-m")
		require.True(t, MustUpsert(t, s, m, tp))
		c.created(t, m.Meta.Version)
		c.created(t, tp.Meta.Version, "created with the mesh")
		require.Equal(t, store.Created, nextEvent(t, ch).Type)
		require.Equal(t, store.Event{Type: store.Created, Kind: resource.KindTrafficPermission, Key: key("m", "allow-all-m"), Version: tp.Meta.Version}, nextEvent(t, ch))

		// The mesh exists: only it changes, even if the other was deleted.
		require.NoError(t, s.Delete(t.Context(), resource.KindTrafficPermission, key("m", "allow-all-m"), 0))
		require.Equal(t, store.Deleted, nextEvent(t, ch).Type)
		again, tp2 := Mesh("m"), TrafficPermission("m", "allow-all-m")
		require.False(t, MustUpsert(t, s, again, tp2))
		c.next(t, m.Meta.Version, again.Meta.Version)
		require.Zero(t, tp2.Meta.Version, "not created")
		_, err := s.Get(t.Context(), resource.KindTrafficPermission, key("m", "allow-all-m"))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.Equal(t, store.Event{Type: store.Updated, Kind: resource.KindMesh, Key: key("", "m"), Version: again.Meta.Version}, nextEvent(t, ch))

		// A companion that cannot be created fails the whole upsert.
		mustCreate(t, s, Dataplane("m", "taken", 1))
		requireEvent(t, ch, store.Created)
		fresh := Mesh("fresh")
		_, err = s.Upsert(t.Context(), fresh, TrafficPermission("fresh", "tp"), Dataplane("m", "taken", 2))
		require.ErrorIs(t, err, store.ErrAlreadyExists)
		require.Zero(t, fresh.Meta.Version)
		_, err = s.Get(t.Context(), resource.KindMesh, key("", "fresh"))
		require.ErrorIs(t, err, store.ErrNotFound, "nothing written")
		requireNoEvent(t, ch)
	})

	t.Run("ConcurrentUpsertsAllSucceed", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		ch := s.Watch(t.Context())
		const writers, each = 12, 10
		var wg sync.WaitGroup
		var deletes atomic.Int32
		stop := make(chan struct{})
		// A deleter races the writers: an upsert never fails because the
		// key vanished or appeared under it.
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.Delete(t.Context(), resource.KindDataplane, key("default", "same"), 0)
				switch {
				case err == nil:
					deletes.Add(1)
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("delete: %v", err)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
		var writes sync.WaitGroup
		for w := range writers {
			writes.Go(func() {
				for i := range each {
					obj := Dataplane("default", "same", w*each+i)
					if _, err := s.Upsert(t.Context(), obj); err != nil {
						t.Errorf("writer %d: upsert: %v", w, err)
						return
					}
					if obj.Meta.Version < 1 {
						t.Errorf("writer %d: version %d after upsert", w, obj.Meta.Version)
					}
				}
			})
		}
		writes.Wait()
		close(stop)
		wg.Wait()
		var created, updated, deleted int
		for range writers*each + int(deletes.Load()) {
			switch e := nextEvent(t, ch); e.Type {
			case store.Created:
				created++
			case store.Updated:
				updated++
			case store.Deleted:
				deleted++
			default:
				t.Fatalf("unexpected event %+v", e)
			}
		}
		requireNoEvent(t, ch)
		require.Equal(t, writers*each, created+updated, "one event per upsert")
		require.Equal(t, int(deletes.Load()), deleted)
		require.GreaterOrEqual(t, created, 1)
		require.LessOrEqual(t, deleted, created, "only what was created was deleted")
	})

	t.Run("DeleteConditional", func(t *testing.T) {
		s := newStore(t)
		m := mustCreate(t, s, Mesh("default"))
		dp := mustCreate(t, s, Dataplane("default", "dp", 1))
		first := dp.Meta.Version
		require.NoError(t, s.Update(t.Context(), dp))
		cur := dp.Meta.Version
		ch := s.Watch(t.Context())
		for _, stale := range []int64{first, cur + 1, cur + 100} {
			require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp"), stale), store.ErrConflict, "version %d", stale)
		}
		require.Equal(t, cur, mustGet(t, s, resource.KindDataplane, key("default", "dp")).Meta.Version, "still there")
		requireNoEvent(t, ch)
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp"), cur))
		require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("default", "dp")}, nextEvent(t, ch))
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp"), cur), store.ErrNotFound)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), m.Meta.Version+4), store.ErrConflict)
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), m.Meta.Version))
	})

	t.Run("ConditionalDeleteRacingUpdate", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		const rounds = 40
		var deletedFirst, updatedFirst int
		for round := range rounds {
			name := fmt.Sprintf("dp-%d", round)
			seen := mustCreate(t, s, Dataplane("default", name, 1))
			upd := &resource.Object{Meta: seen.Meta, Spec: Dataplane("default", name, 2).Spec}
			start := make(chan struct{})
			var delErr, updErr error
			var wg sync.WaitGroup
			wg.Go(func() {
				<-start
				delErr = s.Delete(t.Context(), resource.KindDataplane, key("default", name), seen.Meta.Version)
			})
			wg.Go(func() { <-start; updErr = s.Update(t.Context(), upd) })
			close(start)
			wg.Wait()
			got, getErr := s.Get(t.Context(), resource.KindDataplane, key("default", name))
			switch {
			case delErr == nil:
				deletedFirst++
				require.ErrorIs(t, updErr, store.ErrNotFound, "round %d: the update came after the delete", round)
				require.ErrorIs(t, getErr, store.ErrNotFound)
			case updErr == nil:
				updatedFirst++
				require.ErrorIs(t, delErr, store.ErrConflict, "round %d: the delete must not remove the updated version", round)
				require.NoError(t, getErr)
				c.next(t, seen.Meta.Version, got.Meta.Version)
				require.Equal(t, "127.0.0.3", got.Dataplane().Networking.Address, "the update is kept")
			default:
				t.Fatalf("round %d: both failed: delete %v, update %v", round, delErr, updErr)
			}
		}
		t.Logf("delete first %d, update first %d", deletedFirst, updatedFirst)
	})

	t.Run("DeleteOwnerCascades", func(t *testing.T) {
		s := newStore(t)
		at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		dp2 := mustCreate(t, s, Dataplane("default", "dp-2", 2))
		in := mustCreate(t, s, Insight("default", "dp-1", "s1", at))
		mustCreate(t, s, Insight("default", "dp-2", "s2", at))
		got := mustGet(t, s, resource.KindDataplaneInsight, key("default", "dp-1"))
		require.Equal(t, in.Spec, got.Spec, "an insight reads back as written")
		require.True(t, got.DataplaneInsight().Latest().ConnectTime.Equal(at))

		ch := s.Watch(t.Context())
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-1"), 0))
		require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplaneInsight, Key: key("default", "dp-1")}, nextEvent(t, ch))
		require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("default", "dp-1")}, nextEvent(t, ch))
		requireNoEvent(t, ch)
		_, err := s.Get(t.Context(), resource.KindDataplaneInsight, key("default", "dp-1"))
		require.ErrorIs(t, err, store.ErrNotFound, "the insight went with its dataplane")
		mustGet(t, s, resource.KindDataplaneInsight, key("default", "dp-2"))

		// Deleting what is owned leaves the owner; an owner without
		// anything owned deletes alone; a refused delete cascades nothing.
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-2"), dp2.Meta.Version+8), store.ErrConflict)
		mustGet(t, s, resource.KindDataplaneInsight, key("default", "dp-2"))
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplaneInsight, key("default", "dp-2"), 0))
		mustGet(t, s, resource.KindDataplane, key("default", "dp-2"))
		requireEvent(t, ch, store.Deleted)
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-2"), 0))
		require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("default", "dp-2")}, nextEvent(t, ch))
		requireNoEvent(t, ch)

		// A mesh takes its insights with it.
		mustCreate(t, s, Dataplane("default", "dp-3", 3))
		mustCreate(t, s, Insight("default", "dp-3", "s3", at))
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), 0))
		n, err := s.Count(t.Context(), resource.KindDataplaneInsight)
		require.NoError(t, err)
		require.Zero(t, n)
	})

	t.Run("GlobalReadOnlyKind", func(t *testing.T) {
		s := newStore(t)
		at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
		inst := resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{StartTime: at, HeartbeatTime: at.Add(time.Second)})
		require.True(t, MustUpsert(t, s, inst))
		got := mustGet(t, s, resource.KindControlPlaneInstance, key("", "cp-1"))
		require.Equal(t, inst.Spec, got.Spec)
		require.NoError(t, s.Delete(t.Context(), resource.KindControlPlaneInstance, key("", "cp-1"), inst.Meta.Version))
	})
}

// requireEvent takes the next event and checks its type.
func requireEvent(t testing.TB, ch <-chan store.Event, typ store.EventType) {
	t.Helper()
	e := nextEvent(t, ch)
	require.Equal(t, typ, e.Type, "%+v", e)
}
