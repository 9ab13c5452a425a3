package cleanup_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/insight/cleanup"
	"github.com/kumametrics/mesh/pkg/insight/record"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	age         = 72 * time.Hour
	waitTimeout = 10 * time.Second
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func dataplane(name, addr string) *resource.Object {
	return resource.New("default", name, &resource.DataplaneSpec{Networking: &resource.Networking{
		Address: addr,
		Inbound: []resource.Inbound{{Port: 8080, Tags: map[string]string{resource.ServiceTag: "web"}}},
	}})
}

type env struct {
	store *memory.Store
	mgr   *manager.Manager
	now   time.Time
	rec   *record.Recorder
}

// newEnv has the default mesh (metrics on) and a live control plane cp-1
// whose recorder writes the proxies' subscriptions at the env's clock.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{store: memory.New(), now: t0}
	e.mgr = manager.New(e.store, nil)
	_, err := e.mgr.Apply(t.Context(), resource.New("", "default", &resource.MeshSpec{Metrics: &resource.Metrics{
		EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: resource.MetricsTypePrometheus}},
	}}), 0)
	require.NoError(t, err)
	e.rec, err = record.New(record.Options{Store: e.store, InstanceID: "cp-1", Now: func() time.Time { return e.now }, FlushInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, e.rec.Register(t.Context()))
	return e
}

// proxy registers a dataplane whose proxy connected at `connected` and,
// unless disconnected is zero, went away then.
func (e *env) proxy(t *testing.T, name, addr string, connected, disconnected time.Time) {
	t.Helper()
	_, err := e.mgr.Apply(t.Context(), dataplane(name, addr), 0)
	require.NoError(t, err)
	key := resource.Key{Mesh: "default", Name: name}
	e.rec.Connect(key, resource.Subscription{ID: name + "-sub", ConnectTime: connected})
	if !disconnected.IsZero() {
		e.rec.Disconnect(key, name+"-sub", disconnected)
	}
}

// beat renews cp-1's heartbeat at the env's clock.
func (e *env) beat(t *testing.T) { e.rec.Beat(t.Context()) }

func names(t *testing.T, s store.Store) []string {
	t.Helper()
	res, err := s.List(t.Context(), resource.KindDataplane, store.ListOptions{})
	require.NoError(t, err)
	var out []string
	for _, o := range res.Items {
		out = append(out, o.Meta.Name)
	}
	return out
}

func TestCleanupDeletesOnlyDataplanesOfflineLongerThanTheAge(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, "gone-long", "127.0.0.2", t0, t0.Add(time.Hour))
	e.proxy(t, "gone-recently", "127.0.0.3", t0, t0.Add(70*time.Hour))
	e.proxy(t, "online", "127.0.0.4", t0, time.Time{})
	_, err := e.mgr.Apply(t.Context(), dataplane("by-hand", "127.0.0.5"), 0) // never connected
	require.NoError(t, err)
	// An insight left behind by a dataplane deleted while its disconnect was written.
	require.NoError(t, e.store.Create(t.Context(), resource.New("default", "orphan", &resource.DataplaneInsightSpec{})))

	reg := prometheus.NewRegistry()
	clock := t0.Add(73*time.Hour + time.Minute)
	c, err := cleanup.New(cleanup.Options{Store: e.store, Age: age, Registerer: reg, Now: func() time.Time { return clock }})
	require.NoError(t, err)
	e.now = clock
	e.beat(t)
	deleted, err := c.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, []resource.Key{{Mesh: "default", Name: "gone-long"}}, deleted)
	require.Equal(t, []string{"by-hand", "gone-recently", "online"}, names(t, e.store))
	require.Equal(t, 1.0, testutil.ToFloat64(c.Metric()))
	for _, gone := range []string{"gone-long", "orphan"} {
		_, err = e.store.Get(t.Context(), resource.KindDataplaneInsight, resource.Key{Mesh: "default", Name: gone})
		require.ErrorIs(t, err, store.ErrNotFound, "%s: its insight is gone too", gone)
	}

	// Later, the recent one is old enough; the online one never is, nor
	// the one that never connected.
	clock = clock.Add(72 * time.Hour)
	e.now = clock
	e.beat(t)
	deleted, err = c.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, []resource.Key{{Mesh: "default", Name: "gone-recently"}}, deleted)
	require.Equal(t, []string{"by-hand", "online"}, names(t, e.store))
	n, err := testutil.GatherAndCount(reg, "cp_dataplanes_cleaned_up_total")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, 2.0, testutil.ToFloat64(c.Metric()))
}

func TestCleanupOfAProxyWhoseControlPlaneDied(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, "web-1", "127.0.0.2", t0, time.Time{}) // cp-1 dies with it connected
	clock := t0.Add(age)
	c, err := cleanup.New(cleanup.Options{Store: e.store, Age: age, Now: func() time.Time { return clock }})
	require.NoError(t, err)
	deleted, err := c.Once(t.Context())
	require.NoError(t, err)
	require.Empty(t, deleted, "offline since cp-1's last heartbeat, exactly the age")
	clock = clock.Add(time.Second)
	deleted, err = c.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, []resource.Key{{Mesh: "default", Name: "web-1"}}, deleted)
}

func TestCleanupKeepsADataplaneChangedSinceItWasJudged(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, "web-1", "127.0.0.2", t0, t0.Add(time.Minute))
	clock := t0.Add(100 * time.Hour)
	e.now = clock
	e.beat(t)
	// The store changes the Dataplane right before the cleanup deletes it.
	racing := &racingStore{Store: e.store, before: func() {
		_, err := e.mgr.Apply(context.Background(), dataplane("web-1", "127.0.0.9"), 0)
		require.NoError(t, err)
	}}
	c, err := cleanup.New(cleanup.Options{Store: racing, Age: age, Now: func() time.Time { return clock }})
	require.NoError(t, err)
	deleted, err := c.Once(t.Context())
	require.NoError(t, err)
	require.Empty(t, deleted)
	require.Equal(t, []string{"web-1"}, names(t, e.store))
}

// racingStore runs before ahead of the first Dataplane delete.
type racingStore struct {
	store.Store
	before func()
	once   sync.Once
}

func (r *racingStore) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if kind == resource.KindDataplane {
		r.once.Do(r.before)
	}
	return r.Store.Delete(ctx, kind, key, version)
}

func TestInterval(t *testing.T) {
	require.Equal(t, time.Minute, cleanup.Interval(72*time.Hour))
	require.Equal(t, 30*time.Second, cleanup.Interval(5*time.Minute))
	require.Equal(t, time.Second, cleanup.Interval(2*time.Second))
}

// TestCleanedUpDataplaneLeavesDiscovery runs the cleanup beside a real
// mirror and MADS server: Prometheus (http_sd) stops being told about the
// dead proxy, and keeps the live one.
func TestCleanedUpDataplaneLeavesDiscovery(t *testing.T) {
	e := newEnv(t)
	e.proxy(t, "dead", "127.0.0.2", t0, t0.Add(time.Hour))
	e.proxy(t, "live", "127.0.0.3", t0, time.Time{})

	ctx, cancel := context.WithCancel(context.Background())
	mir := mirror.New(e.store, nil, resource.KindMesh, resource.KindDataplane)
	reg := prometheus.NewRegistry()
	xm, err := xds.NewMetrics(reg)
	require.NoError(t, err)
	srv, err := mads.New(mads.Options{Views: mir, XDSMetrics: xm, Registerer: reg, Debounce: 5 * time.Millisecond})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() { _ = mir.Run(ctx) })
	wg.Go(func() { srv.Reconcile(ctx) })
	wg.Go(func() { _ = srv.Serve(ctx, ln) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	targets := func() []string {
		res, err := http.Get("http://" + ln.Addr().String() + mads.HTTPSDPath)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		var groups []struct {
			Labels map[string]string `json:"labels"`
		}
		require.NoError(t, json.Unmarshal(b, &groups), string(b))
		var out []string
		for _, g := range groups {
			out = append(out, g.Labels["__meta_kuma_dataplane"])
		}
		sort.Strings(out)
		return out
	}
	require.Eventually(t, func() bool { return len(targets()) == 2 }, waitTimeout, 5*time.Millisecond)

	clock := t0.Add(age + 2*time.Hour)
	e.now = clock
	e.beat(t)
	c, err := cleanup.New(cleanup.Options{Store: e.store, Age: age, Now: func() time.Time { return clock }})
	require.NoError(t, err)
	deleted, err := c.Once(t.Context())
	require.NoError(t, err)
	require.Equal(t, []resource.Key{{Mesh: "default", Name: "dead"}}, deleted)
	require.Eventually(t, func() bool {
		got := targets()
		return len(got) == 1 && got[0] == "live"
	}, waitTimeout, 5*time.Millisecond, "the dead proxy leaves http_sd")
}
