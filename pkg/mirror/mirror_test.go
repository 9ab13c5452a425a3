package mirror

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startMirror(t *testing.T, s store.Store) *Mirror {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := New(s, nil, resource.KindMesh, resource.KindDataplane)
	done := make(chan struct{})
	go func() { defer close(done); _ = m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	_, err := m.WaitView(ctx)
	require.NoError(t, err)
	return m
}

// waitFor polls the mirror's views until cond holds.
func waitFor(t *testing.T, m *Mirror, cond func(*View) bool) *View {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		v, ch := m.View()
		if v != nil && cond(v) {
			return v
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("condition not reached")
		}
	}
}

func TestLoadsThenFollowsChanges(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	require.NoError(t, s.Create(ctx, storetest.Mesh("m1")))
	require.NoError(t, s.Create(ctx, storetest.Dataplane("m1", "a", 1)))
	require.NoError(t, s.Create(ctx, storetest.TrafficPermission("m1", "tp")))

	m := startMirror(t, s)
	v0, _ := m.View()
	require.Equal(t, 1, v0.Len(resource.KindMesh))
	require.Equal(t, 1, v0.Len(resource.KindDataplane))
	require.Equal(t, 0, v0.Len(resource.KindTrafficPermission), "kinds not mirrored stay out")

	require.NoError(t, s.Create(ctx, storetest.Dataplane("m1", "b", 2)))
	v1 := waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == 2 })
	require.Greater(t, v1.Revision(), v0.Revision())
	require.Equal(t, 1, v0.Len(resource.KindDataplane), "an old view never changes")

	dp := v1.Get(resource.KindDataplane, resource.Key{Mesh: "m1", Name: "b"})
	require.NotNil(t, dp)
	upd := &resource.Object{Meta: dp.Meta, Spec: storetest.Dataplane("m1", "b", 3).Spec}
	require.NoError(t, s.Update(ctx, upd))
	waitFor(t, m, func(v *View) bool {
		o := v.Get(resource.KindDataplane, resource.Key{Mesh: "m1", Name: "b"})
		return o != nil && o.Meta.Version == 2
	})

	require.NoError(t, s.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "m1", Name: "a"}, 0))
	waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == 1 })

	// Deleting the mesh removes what belongs to it.
	require.NoError(t, s.Delete(ctx, resource.KindMesh, resource.Key{Name: "m1"}, 0))
	waitFor(t, m, func(v *View) bool {
		return v.Len(resource.KindMesh) == 0 && v.Len(resource.KindDataplane) == 0
	})
}

func TestListIsSortedAndFiltersByMesh(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	for _, mesh := range []string{"b", "a", "c"} {
		require.NoError(t, s.Create(ctx, storetest.Mesh(mesh)))
		for _, name := range []string{"z", "x", "y"} {
			require.NoError(t, s.Create(ctx, storetest.Dataplane(mesh, name, 1)))
		}
	}
	m := startMirror(t, s)
	v, _ := m.View()
	var got []string
	for _, o := range v.List(resource.KindDataplane, "") {
		got = append(got, o.Meta.Key().String())
	}
	require.Equal(t, []string{"a/x", "a/y", "a/z", "b/x", "b/y", "b/z", "c/x", "c/y", "c/z"}, got)
	got = nil
	for _, o := range v.List(resource.KindDataplane, "b") {
		got = append(got, o.Meta.Name)
	}
	require.Equal(t, []string{"x", "y", "z"}, got)
	require.Empty(t, v.List(resource.KindDataplane, "nope"))
	require.Empty(t, v.List(resource.KindTrafficPermission, ""))
}

func TestManyChangesConverge(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	require.NoError(t, s.Create(ctx, storetest.Mesh("m")))
	m := startMirror(t, s)
	const n = 2000
	for i := range n {
		require.NoError(t, s.Create(ctx, storetest.Dataplane("m", "dp-"+strconv.Itoa(i), i)))
	}
	waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == n })
	for i := 0; i < n; i += 2 {
		require.NoError(t, s.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "m", Name: "dp-" + strconv.Itoa(i)}, 0))
	}
	v := waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == n/2 })
	for _, o := range v.List(resource.KindDataplane, "m") {
		require.NotNil(t, v.Get(resource.KindDataplane, o.Meta.Key()))
	}
}

func TestDebounce(t *testing.T) {
	changes := make(chan struct{})
	ch := func() <-chan struct{} { return changes }
	kick := make(chan struct{})
	// Quiet: returns after the quiet period.
	require.True(t, Debounce(t.Context(), ch, kick, time.Millisecond))
	// Continuous changes: bounded by 4× the quiet period.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case changes <- struct{}{}:
			case kick <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	require.True(t, Debounce(t.Context(), ch, kick, 5*time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.False(t, Debounce(ctx, ch, kick, time.Hour))
}

// feedless is a store whose change feed the test drives by hand.
type feedless struct {
	store.Store
	events chan store.Event
}

func (f *feedless) Watch(ctx context.Context) <-chan store.Event {
	out := make(chan store.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-f.events:
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// A Resync (the feed dropped events) makes the mirror re-read everything:
// changes whose events were lost show up, deletions included.
func TestResyncReloads(t *testing.T) {
	ctx := t.Context()
	mem := memory.New()
	require.NoError(t, mem.Create(ctx, storetest.Mesh("m")))
	require.NoError(t, mem.Create(ctx, storetest.Dataplane("m", "gone", 1)))
	s := &feedless{Store: mem, events: make(chan store.Event)}
	m := startMirror(t, s)
	v0, _ := m.View()
	require.Equal(t, 1, v0.Len(resource.KindDataplane))

	// Changes whose events never arrive.
	require.NoError(t, mem.Create(ctx, storetest.Dataplane("m", "new", 2)))
	require.NoError(t, mem.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "m", Name: "gone"}, 0))
	s.events <- store.Event{Type: store.Resync}
	v := waitFor(t, m, func(v *View) bool { return v.Revision() > v0.Revision() })
	require.Equal(t, 1, v.Len(resource.KindDataplane))
	require.NotNil(t, v.Get(resource.KindDataplane, resource.Key{Mesh: "m", Name: "new"}))
	require.Nil(t, v.Get(resource.KindDataplane, resource.Key{Mesh: "m", Name: "gone"}))

	// An event after the Resync is followed as usual.
	require.NoError(t, mem.Create(ctx, storetest.Dataplane("m", "later", 3)))
	s.events <- store.Event{Type: store.Created, Kind: resource.KindDataplane, Key: resource.Key{Mesh: "m", Name: "later"}, Version: 1}
	waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == 2 })
}

// TestInsightWritesChangeNothing: the control plane's mirror leaves out
// insights and heartbeats, so their writes (every connect, ACK and
// heartbeat) never announce a change to the reconcilers.
func TestInsightWritesChangeNothing(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	require.NoError(t, s.Create(ctx, storetest.Mesh("m1")))
	require.NoError(t, s.Create(ctx, storetest.Dataplane("m1", "a", 1)))
	m := startMirror(t, s)
	v0, _ := m.View()
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for i := range 20 {
		storetest.MustUpsert(t, s, storetest.Insight("m1", "a", fmt.Sprintf("s%d", i), at))
		storetest.MustUpsert(t, s, resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{HeartbeatTime: at.Add(time.Duration(i) * time.Second)}))
	}
	// A real change after them: the mirror has seen everything before it.
	require.NoError(t, s.Create(ctx, storetest.Dataplane("m1", "b", 2)))
	v1 := waitFor(t, m, func(v *View) bool { return v.Len(resource.KindDataplane) == 2 })
	require.Equal(t, v0.Revision()+1, v1.Revision(), "only the Dataplane changed the mirror")
	require.Zero(t, v1.Len(resource.KindDataplaneInsight))
}

// A resource deleted and created again within one batch of events is in
// the mirror afterwards, although its new version is not above the one the
// mirror held (versions start again at 1).
func TestDeletedAndCreatedAgainInOneBatch(t *testing.T) {
	s := memory.New()
	ctx := t.Context()
	require.NoError(t, s.Create(ctx, storetest.Mesh("default")))
	old := resource.NewSecret("default", "s", []byte("old"))
	require.NoError(t, s.Create(ctx, old))
	m := New(s, nil, resource.KindMesh, resource.KindSecret)
	require.NoError(t, m.reload(ctx))

	require.NoError(t, s.Delete(ctx, resource.KindSecret, old.Meta.Key(), 0))
	again := resource.NewSecret("default", "s", []byte("new"))
	require.NoError(t, s.Create(ctx, again))
	require.Equal(t, old.Meta.Version, again.Meta.Version, "the store starts the key's versions again")
	require.NoError(t, m.apply(ctx, []store.Event{
		{Type: store.Deleted, Kind: resource.KindSecret, Key: old.Meta.Key()},
		{Type: store.Created, Kind: resource.KindSecret, Key: again.Meta.Key(), Version: again.Meta.Version},
	}))
	v, _ := m.View()
	got := v.Get(resource.KindSecret, again.Meta.Key())
	require.NotNil(t, got, "the key created again is mirrored")
	data, err := got.Secret().Bytes()
	require.NoError(t, err)
	require.Equal(t, []byte("new"), data)
}

// TestMergeEqualsSorting: a view's slice after merging random changes is
// the one sorting the changed set from scratch gives.
func TestMergeEqualsSorting(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	obj := func(mesh, name string, version int) *resource.Object {
		return &resource.Object{Meta: resource.Meta{Kind: resource.KindDataplane, Mesh: mesh, Name: name, Version: int64(version)}}
	}
	meshes := []string{"a", "a-b", "b", ""}
	for round := range 300 {
		model := map[resource.Key]*resource.Object{}
		for range rnd.IntN(50) {
			o := obj(meshes[rnd.IntN(len(meshes))], fmt.Sprintf("dp-%d", rnd.IntN(60)), round)
			model[o.Meta.Key()] = o
		}
		base := sorted(slices.Collect(maps.Values(model)))
		changes := map[resource.Key]*resource.Object{}
		for range rnd.IntN(20) {
			k := resource.Key{Mesh: meshes[rnd.IntN(len(meshes))], Name: fmt.Sprintf("dp-%d", rnd.IntN(60))}
			if rnd.IntN(3) == 0 {
				changes[k] = nil
				delete(model, k)
			} else {
				o := obj(k.Mesh, k.Name, round+1)
				changes[k] = o
				model[k] = o
			}
		}
		before := slices.Clone(base)
		got := merge(base, changes)
		require.Equal(t, before, base, "merge must not modify its input")
		require.Equal(t, sorted(slices.Collect(maps.Values(model))), got, "round %d", round)
		v := &View{objects: map[resource.Kind][]*resource.Object{resource.KindDataplane: got}}
		for k, o := range model {
			require.Same(t, o, v.Get(resource.KindDataplane, k))
		}
		for _, m := range meshes {
			var want []*resource.Object
			for _, o := range got {
				if o.Meta.Mesh == m {
					want = append(want, o)
				}
			}
			if m != "" {
				require.Equal(t, len(want), len(v.List(resource.KindDataplane, m)), "mesh %q", m)
				if len(want) > 0 {
					require.Equal(t, want, v.List(resource.KindDataplane, m))
				}
			}
		}
	}
}

// TestRandomChangesMatchTheStore: after random creates, updates and
// deletes, with views taken in between, the mirror's view is the store's
// content, and views taken earlier keep what they showed.
func TestRandomChangesMatchTheStore(t *testing.T) {
	ctx := t.Context()
	s := memory.New()
	for _, mesh := range []string{"m1", "m2"} {
		require.NoError(t, s.Create(ctx, storetest.Mesh(mesh)))
	}
	m := startMirror(t, s)
	rnd := rand.New(rand.NewPCG(3, 4))
	type snap struct {
		v    *View
		keys []string
	}
	keysOf := func(v *View) []string {
		var out []string
		for _, o := range v.List(resource.KindDataplane, "") {
			out = append(out, fmt.Sprintf("%s@%d", o.Meta.Key(), o.Meta.Version))
		}
		return out
	}
	var snaps []snap
	for round := range 30 {
		for range 1 + rnd.IntN(40) {
			mesh := []string{"m1", "m2"}[rnd.IntN(2)]
			key := resource.Key{Mesh: mesh, Name: fmt.Sprintf("dp-%03d", rnd.IntN(100))}
			have, err := s.Get(ctx, resource.KindDataplane, key)
			switch {
			case err != nil:
				require.NoError(t, s.Create(ctx, storetest.Dataplane(mesh, key.Name, rnd.IntN(1000))))
			case rnd.IntN(2) == 0:
				require.NoError(t, s.Delete(ctx, resource.KindDataplane, key, 0))
			default:
				upd := &resource.Object{Meta: have.Meta, Spec: storetest.Dataplane(mesh, key.Name, rnd.IntN(1000)).Spec}
				require.NoError(t, s.Update(ctx, upd))
			}
		}
		res, err := s.List(ctx, resource.KindDataplane, store.ListOptions{})
		require.NoError(t, err)
		var want []string
		for _, o := range sorted(slices.Clone(res.Items)) {
			want = append(want, fmt.Sprintf("%s@%d", o.Meta.Key(), o.Meta.Version))
		}
		v := waitFor(t, m, func(v *View) bool { return slices.Equal(keysOf(v), want) })
		for _, o := range res.Items {
			got := v.Get(resource.KindDataplane, o.Meta.Key())
			require.NotNil(t, got, "round %d: %s", round, o.Meta.Key())
			require.Equal(t, o.Meta.Version, got.Meta.Version)
		}
		snaps = append(snaps, snap{v, want})
	}
	for i, sn := range snaps {
		require.Equal(t, sn.keys, keysOf(sn.v), "view %d changed after it was handed out", i)
	}
}
