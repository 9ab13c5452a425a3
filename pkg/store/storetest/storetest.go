// Package storetest is the contract suite every store.Store backend must
// pass (RunContract), plus shared benchmarks (RunBenchmarks).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// waitTimeout bounds every wait of the suite (events, channel closes).
const waitTimeout = 10 * time.Second

// Dataplane returns a small dataplane fixture; its address is varied with n
// so that specs can be told apart.
func Dataplane(mesh, name string, n int) *resource.Object {
	return resource.New(mesh, name, &resource.DataplaneSpec{
		Networking: &resource.Networking{
			Address: fmt.Sprintf("127.0.0.%d", 1+n%250),
			Inbound: []resource.Inbound{{
				Port: 8080,
				Tags: map[string]string{resource.ServiceTag: "backend"},
			}},
		},
	})
}

// Mesh returns a Mesh fixture.
func Mesh(name string) *resource.Object {
	return resource.New("", name, &resource.MeshSpec{})
}

// TrafficPermission returns a TrafficPermission fixture allowing everything.
func TrafficPermission(mesh, name string) *resource.Object {
	return resource.New(mesh, name, &resource.TrafficPermissionSpec{
		Sources:      []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
		Destinations: []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
	})
}

// Insight returns a DataplaneInsight fixture with one subscription connected
// at t (UTC, so that it reads back equal from every backend).
func Insight(mesh, name, id string, t time.Time) *resource.Object {
	return resource.New(mesh, name, &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{{
		ID: id, ControlPlaneInstanceID: "cp-1", ConnectTime: t.UTC(),
		Status: resource.SubStatus{Total: resource.Totals{ResponsesSent: 2, ResponsesAcknowledged: 1}},
	}}})
}

func key(mesh, name string) resource.Key { return resource.Key{Mesh: mesh, Name: name} }

// mustCreate creates obj and returns it (with its stored meta).
func mustCreate(t testing.TB, s store.Store, obj *resource.Object) *resource.Object {
	t.Helper()
	require.NoError(t, s.Create(t.Context(), obj), "create %s %s", obj.Meta.Kind, obj.Meta.Key())
	return obj
}

func mustGet(t testing.TB, s store.Store, kind resource.Kind, k resource.Key) *resource.Object {
	t.Helper()
	obj, err := s.Get(t.Context(), kind, k)
	require.NoError(t, err, "get %s %s", kind, k)
	return obj
}

// names returns the "mesh/name" keys of objects, in order.
func names(objs []*resource.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Meta.Key().String()
	}
	return out
}

// nextEvent waits for the next event on ch.
func nextEvent(t testing.TB, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		require.True(t, ok, "watch channel closed while an event was expected")
		return e
	case <-time.After(waitTimeout):
		t.Fatalf("no event within %s", waitTimeout)
		return store.Event{}
	}
}

// requireNoEvent checks that nothing is waiting on ch. Events are published
// before the write returns, so anything owed is already buffered.
func requireNoEvent(t testing.TB, ch <-chan store.Event) {
	t.Helper()
	select {
	case e, ok := <-ch:
		if ok {
			t.Fatalf("unexpected event %+v", e)
		}
		t.Fatal("watch channel closed unexpectedly")
	default:
	}
}

// waitUntilAfter waits (with a deadline) until the wall clock is past t0, so
// that a later stamp is strictly after it even on a coarse clock.
func waitUntilAfter(t testing.TB, t0 time.Time) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !time.Now().After(t0) {
		require.True(t, time.Now().Before(deadline), "clock did not advance past %s", t0)
		time.Sleep(time.Microsecond)
	}
}

// MustUpsert upserts obj (and withNew) and returns whether it was created.
func MustUpsert(t testing.TB, s interface {
	Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error)
}, obj *resource.Object, withNew ...*resource.Object) bool {
	t.Helper()
	created, err := s.Upsert(t.Context(), obj, withNew...)
	require.NoError(t, err, "upsert %s %s", obj.Meta.Kind, obj.Meta.Key())
	return created
}

// Limits are the guarantees of the contract a backend cannot give, each
// set to the reason why (empty: the backend gives it). Where one is set
// the suite checks the weaker guarantee the backend does give, and says so
// in the test log; nothing is skipped silently.
type Limits struct {
	// OpaqueVersions: versions are not counters of a key's writes (1 on
	// create, +1 per update) but numbers that only grow: positive on
	// create, larger after every write of the key.
	OpaqueVersions string
	// NamesAcrossMeshes: a name is unique in its kind across meshes, so
	// a resource named like another mesh's is ErrAlreadyExists.
	NamesAcrossMeshes string
	// LowerCaseNames: names must be lower case (the suite leaves out its
	// upper-case name).
	LowerCaseNames string
	// SeparateCommits: a write of several resources is several commits,
	// all or nothing only as far as the checks before writing can tell,
	// with no common commit time.
	SeparateCommits string
}

// suite is the contract run with a backend's limits.
type suite struct{ lim Limits }

// limited logs that the suite checks a weaker guarantee and why.
func limited(t testing.TB, reason string) bool {
	t.Helper()
	if reason != "" {
		t.Logf("weaker check: %s", reason)
		return true
	}
	return false
}

// created checks a fresh resource's version.
func (c suite) created(t testing.TB, v int64, msgAndArgs ...any) {
	t.Helper()
	if c.lim.OpaqueVersions != "" {
		require.Positive(t, v, msgAndArgs...)
		return
	}
	require.Equal(t, int64(1), v, msgAndArgs...)
}

// next checks the version after one more write of a resource at prev.
func (c suite) next(t testing.TB, prev, v int64, msgAndArgs ...any) {
	t.Helper()
	if c.lim.OpaqueVersions != "" {
		require.Greater(t, v, prev, msgAndArgs...)
		return
	}
	require.Equal(t, prev+1, v, msgAndArgs...)
}

// other names a resource of the second mesh of a test: the same name as
// the first mesh's where names are per mesh, another one where they are not.
func (c suite) other(name string) string {
	if c.lim.NamesAcrossMeshes != "" {
		return "other-" + name
	}
	return name
}

// RunContract runs the store contract against stores made by newStore. Each
// call of newStore must return a new, empty store; newStore should register
// the store's Close with t.Cleanup.
func RunContract(t *testing.T, newStore func(t *testing.T) store.Store) {
	RunContractWith(t, Limits{}, newStore)
}

// RunContractWith runs the contract against a backend with limits.
func RunContractWith(t *testing.T, lim Limits, newStore func(t *testing.T) store.Store) {
	c := suite{lim: lim}
	for name, reason := range map[string]string{
		"OpaqueVersions": lim.OpaqueVersions, "NamesAcrossMeshes": lim.NamesAcrossMeshes,
		"LowerCaseNames": lim.LowerCaseNames, "SeparateCommits": lim.SeparateCommits,
	} {
		if reason != "" {
			t.Logf("limit %s: %s", name, reason)
		}
	}
	t.Run("CreateGetRoundTrip", func(t *testing.T) {
		s := newStore(t)
		ctx := t.Context()
		m := Mesh("default")
		require.NoError(t, s.Create(ctx, m))
		c.created(t, m.Meta.Version, "Create sets the version on the given object")

		dp := Dataplane("default", "dp-1", 7)
		dp.Dataplane().Networking.Outbound = []resource.Outbound{{Port: 10001, Tags: map[string]string{resource.ServiceTag: "web"}}}
		require.NoError(t, s.Create(ctx, dp))
		c.created(t, dp.Meta.Version)
		require.False(t, dp.Meta.CreationTime.IsZero(), "creation time set on the given object")
		require.True(t, dp.Meta.CreationTime.Equal(dp.Meta.ModificationTime), "creation and modification times are equal on create")

		got := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, resource.KindDataplane, got.Meta.Kind)
		require.Equal(t, "default", got.Meta.Mesh)
		require.Equal(t, "dp-1", got.Meta.Name)
		require.Equal(t, dp.Meta.Version, got.Meta.Version)
		require.True(t, got.Meta.CreationTime.Equal(dp.Meta.CreationTime), "stored creation time %s, returned %s", got.Meta.CreationTime, dp.Meta.CreationTime)
		require.True(t, got.Meta.ModificationTime.Equal(got.Meta.CreationTime))
		require.Equal(t, dp.Spec, got.Spec)
		require.Equal(t, "127.0.0.8", got.Dataplane().Networking.Address)

		gotMesh := mustGet(t, s, resource.KindMesh, key("", "default"))
		require.Equal(t, "", gotMesh.Meta.Mesh)
		require.Equal(t, m.Meta.Version, gotMesh.Meta.Version)
		require.Equal(t, &resource.MeshSpec{}, gotMesh.Spec)

		tp := mustCreate(t, s, TrafficPermission("default", "allow-all"))
		require.Equal(t, tp.Spec, mustGet(t, s, resource.KindTrafficPermission, key("default", "allow-all")).Spec)
	})

	t.Run("CreateRejectsNonZeroVersion", func(t *testing.T) {
		s := newStore(t)
		m := Mesh("default")
		m.Meta.Version = 3
		require.Error(t, s.Create(t.Context(), m))
		_, err := s.Get(t.Context(), resource.KindMesh, key("", "default"))
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("CreateDuplicate", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		orig := mustCreate(t, s, Dataplane("default", "dp-1", 1))

		err := s.Create(t.Context(), Mesh("default"))
		require.ErrorIs(t, err, store.ErrAlreadyExists)
		err = s.Create(t.Context(), Dataplane("default", "dp-1", 2))
		require.ErrorIs(t, err, store.ErrAlreadyExists)
		// The original is untouched.
		got := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, orig.Meta.Version, got.Meta.Version)
		require.Equal(t, "127.0.0.2", got.Dataplane().Networking.Address)
		// The same name in another kind is a different resource; in another
		// mesh too, unless names are unique across meshes.
		mustCreate(t, s, TrafficPermission("default", "dp-1"))
		mustCreate(t, s, Mesh("other"))
		if limited(t, c.lim.NamesAcrossMeshes) {
			require.ErrorIs(t, s.Create(t.Context(), Dataplane("other", "dp-1", 3)), store.ErrAlreadyExists)
			_, err := s.Get(t.Context(), resource.KindDataplane, key("other", "dp-1"))
			require.ErrorIs(t, err, store.ErrNotFound, "the other mesh's name is not this mesh's resource")
			return
		}
		mustCreate(t, s, Dataplane("other", "dp-1", 3))
	})

	t.Run("CreateInMissingMesh", func(t *testing.T) {
		s := newStore(t)
		err := s.Create(t.Context(), Dataplane("nope", "dp-1", 1))
		require.ErrorIs(t, err, store.ErrMeshNotFound)
		err = s.Create(t.Context(), TrafficPermission("nope", "tp"))
		require.ErrorIs(t, err, store.ErrMeshNotFound)
		n, err := s.Count(t.Context(), resource.KindDataplane)
		require.NoError(t, err)
		require.Zero(t, n)
		// A mesh's name is not a mesh-scoped resource's mesh.
		mustCreate(t, s, Mesh("other"))
		err = s.Create(t.Context(), Dataplane("nope", "dp-1", 1))
		require.ErrorIs(t, err, store.ErrMeshNotFound)
	})

	t.Run("Update", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		created := mustCreate(t, s, Dataplane("default", "dp-1", 1))
		waitUntilAfter(t, created.Meta.ModificationTime)

		upd := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		upd.Dataplane().Networking.Address = "10.0.0.1"
		upd.Meta.CreationTime = time.Time{} // the store keeps its own
		require.NoError(t, s.Update(t.Context(), upd))
		c.next(t, created.Meta.Version, upd.Meta.Version, "Update bumps the version on the given object")
		require.True(t, upd.Meta.ModificationTime.After(created.Meta.ModificationTime), "modification time moves forward")

		got := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, upd.Meta.Version, got.Meta.Version)
		require.Equal(t, "10.0.0.1", got.Dataplane().Networking.Address)
		require.True(t, got.Meta.CreationTime.Equal(created.Meta.CreationTime), "creation time is kept")
		require.True(t, got.Meta.ModificationTime.Equal(upd.Meta.ModificationTime))
		require.True(t, got.Meta.ModificationTime.After(got.Meta.CreationTime))

		// Updating again from the returned object works without a Get.
		upd.Dataplane().Networking.Address = "10.0.0.2"
		second := upd.Meta.Version
		require.NoError(t, s.Update(t.Context(), upd))
		c.next(t, second, mustGet(t, s, resource.KindDataplane, key("default", "dp-1")).Meta.Version)

		// Meshes are updated the same way.
		m := mustGet(t, s, resource.KindMesh, key("", "default"))
		m.Mesh().MTLS = &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}}
		require.NoError(t, s.Update(t.Context(), m))
		require.Equal(t, m.Spec, mustGet(t, s, resource.KindMesh, key("", "default")).Spec)
	})

	t.Run("UpdateStaleVersion", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		first := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		second := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		first.Dataplane().Networking.Address = "10.0.0.1"
		require.NoError(t, s.Update(t.Context(), first))
		before := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))

		second.Dataplane().Networking.Address = "10.0.0.2"
		seen := second.Meta.Version
		err := s.Update(t.Context(), second)
		require.ErrorIs(t, err, store.ErrConflict)
		require.Equal(t, seen, second.Meta.Version, "a refused update leaves the given object alone")

		cur := before.Meta.Version
		for _, v := range []int64{0, cur - 1, cur + 1, cur + 100} {
			stale := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
			stale.Meta.Version = v
			require.ErrorIs(t, s.Update(t.Context(), stale), store.ErrConflict, "version %d", v)
		}
		after := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, before, after, "nothing changed")
	})

	t.Run("UpdateMissing", func(t *testing.T) {
		s := newStore(t)
		err := s.Update(t.Context(), withVersion(Dataplane("nope", "dp-1", 1), 1))
		require.ErrorIs(t, err, store.ErrNotFound)
		mustCreate(t, s, Mesh("default"))
		err = s.Update(t.Context(), withVersion(Dataplane("default", "dp-1", 1), 1))
		require.ErrorIs(t, err, store.ErrNotFound)
		err = s.Update(t.Context(), withVersion(Mesh("other"), 1))
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Get(t.Context(), resource.KindDataplane, key("default", "dp-1"))
		require.ErrorIs(t, err, store.ErrNotFound, "update does not create")
	})

	t.Run("DeleteMissing", func(t *testing.T) {
		s := newStore(t)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-1"), 0), store.ErrNotFound)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), 0), store.ErrNotFound)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		// Same name, other kind or mesh.
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindTrafficPermission, key("default", "dp-1"), 0), store.ErrNotFound)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("other", "dp-1"), 0), store.ErrNotFound)
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		mustCreate(t, s, Dataplane("default", "dp-2", 2))
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-1"), 0))
		_, err := s.Get(t.Context(), resource.KindDataplane, key("default", "dp-1"))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-1"), 0), store.ErrNotFound)
		mustGet(t, s, resource.KindDataplane, key("default", "dp-2"))
		// A deleted resource can be created again, starting over at version 1.
		again := mustCreate(t, s, Dataplane("default", "dp-1", 3))
		c.created(t, again.Meta.Version)
	})

	t.Run("GetMissing", func(t *testing.T) {
		s := newStore(t)
		_, err := s.Get(t.Context(), resource.KindMesh, key("", "default"))
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Get(t.Context(), resource.KindDataplane, key("default", "dp-1"))
		require.ErrorIs(t, err, store.ErrNotFound)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		_, err = s.Get(t.Context(), resource.KindTrafficPermission, key("default", "dp-1"))
		require.ErrorIs(t, err, store.ErrNotFound)
		_, err = s.Get(t.Context(), resource.KindMesh, key("default", ""))
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("CopiesInAndOut", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		in := mustCreate(t, s, Dataplane("default", "dp-1", 1))
		inVersion := in.Meta.Version
		// Mutating the object given to Create does not reach the store.
		in.Dataplane().Networking.Address = "6.6.6.6"
		in.Dataplane().Networking.Inbound[0].Tags["team"] = "x"

		got := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, "127.0.0.2", got.Dataplane().Networking.Address)
		require.Equal(t, map[string]string{resource.ServiceTag: "backend"}, got.Dataplane().Networking.Inbound[0].Tags)

		// Mutating what Get or List returned does not either.
		got.Meta.Version = 42
		got.Meta.Name = "renamed"
		got.Dataplane().Networking.Address = "6.6.6.6"
		got.Dataplane().Networking.Inbound[0].Tags[resource.ServiceTag] = "mutated"
		got.Dataplane().Networking.Inbound = append(got.Dataplane().Networking.Inbound, resource.Inbound{Port: 1})
		list, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{})
		require.NoError(t, err)
		require.Len(t, list.Items, 1)
		list.Items[0].Dataplane().Networking.Inbound[0].Tags[resource.ServiceTag] = "mutated"
		list.Items[0].Dataplane().Networking.Address = "7.7.7.7"

		again := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.Equal(t, "dp-1", again.Meta.Name)
		require.Equal(t, inVersion, again.Meta.Version)
		require.Equal(t, Dataplane("default", "dp-1", 1).Spec, again.Spec)

		// Nor does mutating an object after Update.
		again.Dataplane().Networking.Address = "10.0.0.1"
		require.NoError(t, s.Update(t.Context(), again))
		again.Dataplane().Networking.Address = "6.6.6.6"
		require.Equal(t, "10.0.0.1", mustGet(t, s, resource.KindDataplane, key("default", "dp-1")).Dataplane().Networking.Address)
	})

	t.Run("ListSorted", func(t *testing.T) {
		s := newStore(t)
		for _, m := range []string{"beta", "alpha", "gamma"} {
			mustCreate(t, s, Mesh(m))
		}
		keys := []resource.Key{
			key("beta", "a"), key("alpha", "z"), key("gamma", "m"), key("alpha", "b"),
			key("beta", "c"), key("alpha", "a-1"), key("alpha", "a"), key("beta", "B"),
		}
		want := []string{
			"alpha/a", "alpha/a-1", "alpha/b", "alpha/z",
			"beta/B", "beta/a", "beta/c",
			"gamma/m",
		}
		wantBeta := []string{"beta/B", "beta/a", "beta/c"}
		// "beta/a" shares its name with "alpha/a"; "beta/B" is upper case.
		drop := map[string]bool{}
		if limited(t, c.lim.NamesAcrossMeshes) {
			drop["beta/a"] = true
		}
		if limited(t, c.lim.LowerCaseNames) {
			drop["beta/B"] = true
		}
		keep := func(l []string) []string {
			var out []string
			for _, n := range l {
				if !drop[n] {
					out = append(out, n)
				}
			}
			return out
		}
		for i, k := range keys {
			if !drop[k.String()] {
				mustCreate(t, s, Dataplane(k.Mesh, k.Name, i))
			}
		}
		want, wantBeta = keep(want), keep(wantBeta)
		mustCreate(t, s, TrafficPermission("alpha", "tp"))

		res, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{})
		require.NoError(t, err)
		require.Equal(t, want, names(res.Items), "sorted by mesh, then name (byte order)")
		require.Equal(t, len(want), res.Total)
		require.Equal(t, -1, res.NextOffset)
		for _, it := range res.Items {
			require.Equal(t, resource.KindDataplane, it.Meta.Kind)
			c.created(t, it.Meta.Version)
			require.False(t, it.Meta.CreationTime.IsZero())
			require.NotNil(t, it.Dataplane())
		}

		meshes, err := s.List(t.Context(), resource.KindMesh, store.ListOptions{})
		require.NoError(t, err)
		require.Equal(t, []string{"alpha", "beta", "gamma"}, names(meshes.Items))

		byMesh, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "beta"})
		require.NoError(t, err)
		require.Equal(t, wantBeta, names(byMesh.Items))
		require.Equal(t, len(wantBeta), byMesh.Total)
		require.Equal(t, -1, byMesh.NextOffset)

		tps, err := s.List(t.Context(), resource.KindTrafficPermission, store.ListOptions{Mesh: "beta"})
		require.NoError(t, err)
		require.Empty(t, tps.Items)
		require.Zero(t, tps.Total)
		require.Equal(t, -1, tps.NextOffset)

		none, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "nope"})
		require.NoError(t, err)
		require.Empty(t, none.Items)
		require.Zero(t, none.Total)
		require.Equal(t, -1, none.NextOffset)
	})

	t.Run("ListPaging", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("a"))
		mustCreate(t, s, Mesh("b"))
		var want []string
		for i := range 7 {
			mustCreate(t, s, Dataplane("a", fmt.Sprintf("dp-%d", i), i))
			want = append(want, fmt.Sprintf("a/dp-%d", i))
		}
		for i := range 3 {
			mustCreate(t, s, Dataplane("b", fmt.Sprintf("b-dp-%d", i), i))
		}
		list := func(opts store.ListOptions) *store.ListResult {
			t.Helper()
			res, err := s.List(t.Context(), resource.KindDataplane, opts)
			require.NoError(t, err)
			return res
		}

		res := list(store.ListOptions{Mesh: "a", Limit: 3})
		require.Equal(t, want[0:3], names(res.Items))
		require.Equal(t, 7, res.Total)
		require.Equal(t, 3, res.NextOffset)
		res = list(store.ListOptions{Mesh: "a", Limit: 3, Offset: 3})
		require.Equal(t, want[3:6], names(res.Items))
		require.Equal(t, 6, res.NextOffset)
		res = list(store.ListOptions{Mesh: "a", Limit: 3, Offset: 6})
		require.Equal(t, want[6:], names(res.Items))
		require.Equal(t, 7, res.Total)
		require.Equal(t, -1, res.NextOffset, "last page")

		// A page ending exactly at the end is the last one.
		res = list(store.ListOptions{Mesh: "a", Limit: 2, Offset: 5})
		require.Equal(t, want[5:], names(res.Items))
		require.Equal(t, -1, res.NextOffset)
		res = list(store.ListOptions{Mesh: "a", Limit: 7})
		require.Equal(t, want, names(res.Items))
		require.Equal(t, -1, res.NextOffset)

		// Offset without limit: the rest.
		res = list(store.ListOptions{Mesh: "a", Offset: 4})
		require.Equal(t, want[4:], names(res.Items))
		require.Equal(t, 7, res.Total)
		require.Equal(t, -1, res.NextOffset)

		// Past the end: no items, but the right total.
		for _, off := range []int{7, 8, 100} {
			res = list(store.ListOptions{Mesh: "a", Limit: 3, Offset: off})
			require.Empty(t, res.Items, "offset %d", off)
			require.Equal(t, 7, res.Total)
			require.Equal(t, -1, res.NextOffset)
		}

		// Paging over every mesh walks the full sorted listing.
		all := list(store.ListOptions{})
		require.Equal(t, 10, all.Total)
		var walked []string
		for off := 0; off != -1; {
			page := list(store.ListOptions{Limit: 4, Offset: off})
			require.Equal(t, 10, page.Total)
			require.LessOrEqual(t, len(page.Items), 4)
			walked = append(walked, names(page.Items)...)
			off = page.NextOffset
		}
		require.Equal(t, names(all.Items), walked)
	})

	t.Run("Count", func(t *testing.T) {
		s := newStore(t)
		for _, kind := range []resource.Kind{resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission} {
			n, err := s.Count(t.Context(), kind)
			require.NoError(t, err)
			require.Zero(t, n, "%s", kind)
		}
		mustCreate(t, s, Mesh("a"))
		mustCreate(t, s, Mesh("b"))
		for i := range 4 {
			mustCreate(t, s, Dataplane("a", fmt.Sprintf("dp-%d", i), i))
		}
		mustCreate(t, s, Dataplane("b", "b-dp-0", 0))
		mustCreate(t, s, TrafficPermission("b", "tp"))
		count := func(kind resource.Kind) int {
			t.Helper()
			n, err := s.Count(t.Context(), kind)
			require.NoError(t, err)
			return n
		}
		require.Equal(t, 2, count(resource.KindMesh))
		require.Equal(t, 5, count(resource.KindDataplane), "all meshes")
		require.Equal(t, 1, count(resource.KindTrafficPermission))
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("a", "dp-0"), 0))
		require.Equal(t, 4, count(resource.KindDataplane))
	})

	t.Run("DeleteMeshCascades", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("doomed"))
		mustCreate(t, s, Mesh("kept"))
		// Where names are per mesh, the kept mesh's resources are named like
		// the doomed mesh's: only the mesh tells them apart.
		for i := range 3 {
			mustCreate(t, s, Dataplane("doomed", fmt.Sprintf("dp-%d", i), i))
			mustCreate(t, s, Dataplane("kept", c.other(fmt.Sprintf("dp-%d", i)), i))
		}
		mustCreate(t, s, TrafficPermission("doomed", "tp"))
		mustCreate(t, s, TrafficPermission("kept", c.other("tp")))
		// Resources named like the mesh, in another mesh, are not its own.
		mustCreate(t, s, Dataplane("kept", "doomed", 9))

		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "doomed"), 0))

		_, err := s.Get(t.Context(), resource.KindMesh, key("", "doomed"))
		require.ErrorIs(t, err, store.ErrNotFound)
		for i := range 3 {
			_, err := s.Get(t.Context(), resource.KindDataplane, key("doomed", fmt.Sprintf("dp-%d", i)))
			require.ErrorIs(t, err, store.ErrNotFound)
		}
		_, err = s.Get(t.Context(), resource.KindTrafficPermission, key("doomed", "tp"))
		require.ErrorIs(t, err, store.ErrNotFound)

		dps, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{})
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"kept/doomed", "kept/" + c.other("dp-0"), "kept/" + c.other("dp-1"), "kept/" + c.other("dp-2")}, names(dps.Items))
		tps, err := s.List(t.Context(), resource.KindTrafficPermission, store.ListOptions{})
		require.NoError(t, err)
		require.Equal(t, []string{"kept/" + c.other("tp")}, names(tps.Items))
		n, err := s.Count(t.Context(), resource.KindMesh)
		require.NoError(t, err)
		require.Equal(t, 1, n)

		// The mesh can be created again, empty; its old resources stay gone.
		mustCreate(t, s, Mesh("doomed"))
		res, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "doomed"})
		require.NoError(t, err)
		require.Zero(t, res.Total)
		// A scoped resource of a deleted mesh cannot be created.
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "doomed"), 0))
		require.ErrorIs(t, s.Create(t.Context(), Dataplane("doomed", "dp-0", 0)), store.ErrMeshNotFound)
	})

	t.Run("ContextCancelled", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp-1", 1))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		dp := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		require.ErrorIs(t, s.Create(ctx, Dataplane("default", "dp-2", 2)), context.Canceled)
		require.ErrorIs(t, s.Update(ctx, dp), context.Canceled)
		require.ErrorIs(t, s.Delete(ctx, resource.KindDataplane, key("default", "dp-1"), 0), context.Canceled)
		_, err := s.Get(ctx, resource.KindDataplane, key("default", "dp-1"))
		require.ErrorIs(t, err, context.Canceled)
		_, err = s.List(ctx, resource.KindDataplane, store.ListOptions{})
		require.ErrorIs(t, err, context.Canceled)
		_, err = s.Count(ctx, resource.KindDataplane)
		require.ErrorIs(t, err, context.Canceled)
		_, err = s.Upsert(ctx, Dataplane("default", "dp-1", 5))
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, s.Delete(ctx, resource.KindDataplane, key("default", "dp-1"), 1), context.Canceled)
		// Nothing happened.
		require.Equal(t, dp, mustGet(t, s, resource.KindDataplane, key("default", "dp-1")))
		_, err = s.Get(t.Context(), resource.KindDataplane, key("default", "dp-2"))
		require.ErrorIs(t, err, store.ErrNotFound)
		require.NoError(t, s.Ping(t.Context()))
	})

	t.Run("WatchEvents", func(t *testing.T) {
		s := newStore(t)
		ch := s.Watch(t.Context())
		m := mustCreate(t, s, Mesh("default"))
		dp := mustCreate(t, s, Dataplane("default", "dp-1", 1))
		versions := []int64{dp.Meta.Version}
		// Refused writes publish nothing.
		require.ErrorIs(t, s.Create(t.Context(), Dataplane("default", "dp-1", 1)), store.ErrAlreadyExists)
		require.ErrorIs(t, s.Create(t.Context(), Dataplane("nope", "dp-1", 1)), store.ErrMeshNotFound)
		stale := mustGet(t, s, resource.KindDataplane, key("default", "dp-1"))
		dp.Dataplane().Networking.Address = "10.0.0.1"
		require.NoError(t, s.Update(t.Context(), dp))
		versions = append(versions, dp.Meta.Version)
		require.ErrorIs(t, s.Update(t.Context(), stale), store.ErrConflict)
		require.NoError(t, s.Update(t.Context(), dp))
		versions = append(versions, dp.Meta.Version)
		require.ErrorIs(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-2"), 0), store.ErrNotFound)
		require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, key("default", "dp-1"), 0))
		c.created(t, versions[0])
		c.next(t, versions[0], versions[1])
		c.next(t, versions[1], versions[2])

		want := []store.Event{
			{Type: store.Created, Kind: resource.KindMesh, Key: key("", "default"), Version: m.Meta.Version},
			{Type: store.Created, Kind: resource.KindDataplane, Key: key("default", "dp-1"), Version: versions[0]},
			{Type: store.Updated, Kind: resource.KindDataplane, Key: key("default", "dp-1"), Version: versions[1]},
			{Type: store.Updated, Kind: resource.KindDataplane, Key: key("default", "dp-1"), Version: versions[2]},
			{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("default", "dp-1"), Version: 0},
		}
		for i, w := range want {
			require.Equal(t, w, nextEvent(t, ch), "event %d", i)
		}
		requireNoEvent(t, ch)
	})

	t.Run("WatchFanOut", func(t *testing.T) {
		s := newStore(t)
		a, b := s.Watch(t.Context()), s.Watch(t.Context())
		m := mustCreate(t, s, Mesh("default"))
		want := store.Event{Type: store.Created, Kind: resource.KindMesh, Key: key("", "default"), Version: m.Meta.Version}
		require.Equal(t, want, nextEvent(t, a))
		require.Equal(t, want, nextEvent(t, b))
		// A watcher started later sees only later changes.
		c := s.Watch(t.Context())
		requireNoEvent(t, c)
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), 0))
		want = store.Event{Type: store.Deleted, Kind: resource.KindMesh, Key: key("", "default")}
		for _, ch := range []<-chan store.Event{a, b, c} {
			require.Equal(t, want, nextEvent(t, ch))
		}
	})

	t.Run("WatchCascade", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("doomed"))
		mustCreate(t, s, Mesh("kept"))
		mustCreate(t, s, Dataplane("doomed", "dp-b", 1))
		mustCreate(t, s, Dataplane("doomed", "dp-a", 2))
		mustCreate(t, s, TrafficPermission("doomed", "tp"))
		mustCreate(t, s, Dataplane("kept", c.other("dp-a"), 3))
		ch := s.Watch(t.Context())
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "doomed"), 0))

		var got []store.Event
		for range 4 {
			got = append(got, nextEvent(t, ch))
		}
		requireNoEvent(t, ch)
		last := got[len(got)-1]
		require.Equal(t, store.Event{Type: store.Deleted, Kind: resource.KindMesh, Key: key("", "doomed")}, last, "the mesh goes last")
		children := got[:len(got)-1]
		sort.Slice(children, func(i, j int) bool {
			if children[i].Kind != children[j].Kind {
				return children[i].Kind < children[j].Kind
			}
			return children[i].Key.Name < children[j].Key.Name
		})
		require.Equal(t, []store.Event{
			{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("doomed", "dp-a")},
			{Type: store.Deleted, Kind: resource.KindDataplane, Key: key("doomed", "dp-b")},
			{Type: store.Deleted, Kind: resource.KindTrafficPermission, Key: key("doomed", "tp")},
		}, children)
	})

	t.Run("WatchCancel", func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		ch := s.Watch(ctx)
		other := s.Watch(t.Context())
		mustCreate(t, s, Mesh("default"))
		cancel()
		// The buffered event may still be delivered; then the channel closes.
		deadline := time.After(waitTimeout)
		for closed := false; !closed; {
			select {
			case _, ok := <-ch:
				closed = !ok
			case <-deadline:
				t.Fatal("watch channel not closed after its context was cancelled")
			}
		}
		// The store and the other watchers carry on.
		require.NoError(t, s.Delete(t.Context(), resource.KindMesh, key("", "default"), 0))
		require.Equal(t, store.Created, nextEvent(t, other).Type)
		require.Equal(t, store.Deleted, nextEvent(t, other).Type)
	})

	t.Run("ConcurrentUpdatesOneWinnerPerVersion", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		mustCreate(t, s, Dataplane("default", "dp", 0))
		const writers, rounds = 8, 5
		for round := range rounds {
			base := mustGet(t, s, resource.KindDataplane, key("default", "dp"))
			var wins, conflicts atomic.Int32
			var winner atomic.Int32
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					obj := &resource.Object{Meta: base.Meta, Spec: Dataplane("default", "dp", w).Spec}
					<-start
					err := s.Update(t.Context(), obj)
					switch {
					case err == nil:
						wins.Add(1)
						winner.Store(int32(w))
					case errors.Is(err, store.ErrConflict):
						conflicts.Add(1)
					default:
						t.Errorf("writer %d: unexpected error %v", w, err)
					}
				})
			}
			close(start)
			wg.Wait()
			require.Equal(t, int32(1), wins.Load(), "round %d: exactly one writer wins", round)
			require.Equal(t, int32(writers-1), conflicts.Load(), "round %d: every other writer conflicts", round)
			got := mustGet(t, s, resource.KindDataplane, key("default", "dp"))
			c.next(t, base.Meta.Version, got.Meta.Version)
			require.Equal(t, Dataplane("default", "dp", int(winner.Load())).Spec, got.Spec, "the winner's spec is stored")
		}
	})

	t.Run("ConcurrentUpdatesNoLostUpdate", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		first := mustCreate(t, s, Dataplane("default", "dp", 0)).Meta.Version
		ch := s.Watch(t.Context())
		const writers, each = 6, 10
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for range each {
					for {
						obj, err := s.Get(t.Context(), resource.KindDataplane, key("default", "dp"))
						if err != nil {
							t.Errorf("get: %v", err)
							return
						}
						err = s.Update(t.Context(), obj)
						if err == nil {
							break
						}
						if !errors.Is(err, store.ErrConflict) {
							t.Errorf("writer %d: unexpected error %v", w, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		final := mustGet(t, s, resource.KindDataplane, key("default", "dp")).Meta.Version
		// Events arrive in commit order: one per update, each version the
		// next after its predecessor's (2, 3, ... without gaps for counters).
		prev := first
		for range writers * each {
			e := nextEvent(t, ch)
			require.Equal(t, store.Event{Type: store.Updated, Kind: resource.KindDataplane, Key: key("default", "dp"), Version: e.Version}, e)
			c.next(t, prev, e.Version)
			prev = e.Version
		}
		require.Equal(t, final, prev, "the last event is the stored version")
		requireNoEvent(t, ch)
	})

	t.Run("ConcurrentCreates", func(t *testing.T) {
		s := newStore(t)
		mustCreate(t, s, Mesh("default"))
		ch := s.Watch(t.Context())
		const writers, each = 8, 25
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					if err := s.Create(t.Context(), Dataplane("default", fmt.Sprintf("dp-%d-%02d", w, i), i)); err != nil {
						t.Errorf("create: %v", err)
					}
				}
			})
		}
		// Readers run alongside the writers.
		for range 2 {
			wg.Go(func() {
				for range 20 {
					res, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "default", Limit: 10})
					if err != nil {
						t.Errorf("list: %v", err)
						return
					}
					if len(res.Items) > res.Total {
						t.Errorf("list: %d items > total %d", len(res.Items), res.Total)
					}
				}
			})
		}
		wg.Wait()
		n, err := s.Count(t.Context(), resource.KindDataplane)
		require.NoError(t, err)
		require.Equal(t, writers*each, n)
		res, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "default"})
		require.NoError(t, err)
		require.Len(t, res.Items, writers*each)
		seen := map[resource.Key]bool{}
		for range writers * each {
			e := nextEvent(t, ch)
			require.Equal(t, store.Created, e.Type)
			c.created(t, e.Version)
			require.False(t, seen[e.Key], "duplicate event for %s", e.Key)
			seen[e.Key] = true
		}
		requireNoEvent(t, ch)
	})

	c.runTransactions(t, newStore)

	t.Run("Ping", func(t *testing.T) {
		s := newStore(t)
		require.NoError(t, s.Ping(t.Context()))
	})
}

func withVersion(obj *resource.Object, v int64) *resource.Object {
	obj.Meta.Version = v
	return obj
}
