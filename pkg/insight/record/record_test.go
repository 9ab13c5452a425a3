package record_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/insight/record"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/sqlite"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable clock shared by the recorders of a test.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	return c
}

func (c *clock) now() time.Time          { return *c.t.Load() }
func (c *clock) set(t time.Time)         { c.t.Store(&t) }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }

var dpKey = resource.Key{Mesh: "default", Name: "web-1"}

// seed creates the default mesh and the dataplane web-1.
func seed(t *testing.T, s store.Store) {
	t.Helper()
	require.NoError(t, manager.New(s, nil).EnsureDefaultMesh(t.Context()))
	require.NoError(t, s.Create(t.Context(), storetest.Dataplane("default", "web-1", 1)))
}

func newRecorder(t *testing.T, s store.Store, id string, c *clock, exclusive bool) *record.Recorder {
	t.Helper()
	// Hour-long intervals: the tests flush and beat by hand.
	r, err := record.New(record.Options{Store: s, InstanceID: id, Now: c.now, FlushInterval: time.Hour, HeartbeatInterval: time.Hour, Exclusive: exclusive})
	require.NoError(t, err)
	require.NoError(t, r.Register(t.Context()))
	return r
}

// run runs r until the returned stop is called (which waits for the clean shutdown).
func run(r *record.Recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	return func() { cancel(); wg.Wait() }
}

func stored(t *testing.T, s store.Store) *resource.Object {
	t.Helper()
	o, err := s.Get(t.Context(), resource.KindDataplaneInsight, dpKey)
	require.NoError(t, err)
	return o
}

func instances(t *testing.T, s store.Store) insight.Instances {
	t.Helper()
	res, err := s.List(t.Context(), resource.KindControlPlaneInstance, store.ListOptions{})
	require.NoError(t, err)
	return insight.InstancesOf(res.Items)
}

func status(t *testing.T, s store.Store, c *clock) string {
	t.Helper()
	return insight.Status(stored(t, s).DataplaneInsight(), instances(t, s), c.now())
}

func TestConnectAndDisconnectAreWrittenAtOnceCountersCoalesced(t *testing.T) {
	s := memory.New()
	seed(t, s)
	c := newClock()
	r := newRecorder(t, s, "cp-1", c, false)
	connected := c.now()
	r.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: connected})
	in := stored(t, s)
	require.Equal(t, []resource.Subscription{{ID: "s1", ControlPlaneInstanceID: "cp-1", ConnectTime: connected}}, in.DataplaneInsight().Subscriptions)
	require.Equal(t, insight.StatusOnline, status(t, s, c))

	for range 10 {
		r.Update(dpKey, "s1", func(sub *resource.Subscription) { sub.Status.Total.ResponsesSent++ })
	}
	r.Update(dpKey, "other", func(sub *resource.Subscription) { t.Fatal("changed a subscription of another id") })
	require.Equal(t, in.Meta.Version, stored(t, s).Meta.Version, "counter changes wait for the flush")
	r.Flush()
	in2 := stored(t, s)
	require.Equal(t, in.Meta.Version+1, in2.Meta.Version, "ten changes, one write")
	require.EqualValues(t, 10, in2.DataplaneInsight().Latest().Status.Total.ResponsesSent)
	r.Flush()
	require.Equal(t, in2.Meta.Version, stored(t, s).Meta.Version, "nothing changed: nothing written")

	c.advance(time.Minute)
	r.Disconnect(dpKey, "s1", c.now())
	latest := stored(t, s).DataplaneInsight().Latest()
	require.Equal(t, c.now(), *latest.DisconnectTime)
	require.EqualValues(t, 10, latest.Status.Total.ResponsesSent)
	require.Equal(t, insight.StatusOffline, status(t, s, c))
}

func TestADeletedDataplaneGetsNoInsightBack(t *testing.T) {
	s := memory.New()
	seed(t, s)
	c := newClock()
	r := newRecorder(t, s, "cp-1", c, false)
	r.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: c.now()})
	r.Update(dpKey, "s1", func(sub *resource.Subscription) { sub.Status.Total.ResponsesSent++ })
	require.NoError(t, s.Delete(t.Context(), resource.KindDataplane, dpKey, 0))
	r.Flush()
	r.Disconnect(dpKey, "s1", c.now())
	_, err := s.Get(t.Context(), resource.KindDataplaneInsight, dpKey)
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestEachControlPlaneWritesOnlyItsOwnSubscriptions(t *testing.T) {
	s := memory.New()
	seed(t, s)
	c := newClock()
	a, b := newRecorder(t, s, "cp-a", c, false), newRecorder(t, s, "cp-b", c, false)
	a.Connect(dpKey, resource.Subscription{ID: "s-a", ConnectTime: c.now()})
	c.advance(time.Second)
	b.Connect(dpKey, resource.Subscription{ID: "s-b", ConnectTime: c.now()})
	// a's stream ends after b's began; a's counters are flushed late.
	a.Update(dpKey, "s-a", func(sub *resource.Subscription) { sub.Status.Total.ResponsesAcknowledged = 7 })
	a.Flush()
	c.advance(time.Second)
	a.Disconnect(dpKey, "s-a", c.now())
	subs := stored(t, s).DataplaneInsight().Subscriptions
	require.Len(t, subs, 2)
	require.Equal(t, "s-a", subs[0].ID)
	require.EqualValues(t, 7, subs[0].Status.Total.ResponsesAcknowledged)
	require.NotNil(t, subs[0].DisconnectTime)
	require.Equal(t, "s-b", subs[1].ID)
	require.Nil(t, subs[1].DisconnectTime, "b's subscription is untouched")
	require.Equal(t, insight.StatusOnline, status(t, s, c))
}

func TestAKilledControlPlanesProxiesGoOffline(t *testing.T) {
	s := memory.New()
	seed(t, s)
	c := newClock()
	killed := newRecorder(t, s, "cp-killed", c, false)
	killed.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: c.now()})
	lastBeat := c.now()
	// cp-killed dies: it neither beats nor writes a disconnect. Another
	// control plane keeps beating.
	other := newRecorder(t, s, "cp-other", c, false)
	c.advance(insight.HeartbeatTimeout - time.Second)
	other.Beat(t.Context())
	require.Equal(t, insight.StatusOnline, status(t, s, c), "within the timeout the proxy is taken as connected")
	require.Contains(t, instances(t, s), "cp-killed", "not closed yet")

	c.advance(time.Second)
	require.Equal(t, insight.StatusOffline, status(t, s, c), "offline once the heartbeat is stale, before anyone writes")
	other.Beat(t.Context())
	sub := stored(t, s).DataplaneInsight().Latest()
	require.NotNil(t, sub.DisconnectTime, "the survivor closed the dead instance's subscription")
	require.Equal(t, lastBeat, *sub.DisconnectTime, "at its last heartbeat")
	require.NotContains(t, instances(t, s), "cp-killed", "and removed its record")
	require.Contains(t, instances(t, s), "cp-other")
	version := stored(t, s).Meta.Version
	other.Beat(t.Context())
	require.Equal(t, version, stored(t, s).Meta.Version, "closed once")
}

func TestCleanShutdownClosesEverySubscription(t *testing.T) {
	s := memory.New()
	seed(t, s)
	c := newClock()
	r := newRecorder(t, s, "cp-1", c, false)
	stop := run(r)
	r.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: c.now()})
	c.advance(time.Minute)
	stop()
	require.Equal(t, c.now(), *stored(t, s).DataplaneInsight().Latest().DisconnectTime)
	require.Empty(t, instances(t, s), "the heartbeat record is deleted")
	// The stream's own close comes later and writes nothing.
	version := stored(t, s).Meta.Version
	r.Disconnect(dpKey, "s1", c.now().Add(time.Minute))
	r.Connect(dpKey, resource.Subscription{ID: "s2", ConnectTime: c.now()})
	require.Equal(t, version, stored(t, s).Meta.Version)
}

// TestHistorySurvivesARestart runs a control plane's recorder on a SQLite
// file, restarts it (a new instance on the reopened file), and reconnects
// the proxy: its old subscription is still there, beside the new one.
func TestHistorySurvivesARestart(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := map[bool]string{true: "clean shutdown", false: "killed"}[clean]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kuma.db")
			c := newClock()
			s1, err := sqlite.Open(t.Context(), path)
			require.NoError(t, err)
			seed(t, s1)
			firstBeat := c.now()
			first := newRecorder(t, s1, "cp-first", c, true)
			stop := run(first)
			first.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: c.now()})
			first.Update(dpKey, "s1", func(sub *resource.Subscription) {
				sub.Status.Total.ResponsesSent, sub.Status.Total.ResponsesAcknowledged, sub.ConfigVersion = 3, 3, "v3"
			})
			first.Flush()
			c.advance(2 * time.Second)
			lastSeen := c.now()
			if clean {
				stop()
				require.NoError(t, s1.Close())
			} else {
				// Killed: the store is closed under the running recorder,
				// which writes nothing more (no disconnect, and its
				// heartbeat record stays, fresh).
				require.NoError(t, s1.Close())
				stop()
			}

			// Restarted within the heartbeat timeout.
			c.advance(5 * time.Second)
			s2, err := sqlite.Open(t.Context(), path)
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, s2.Close()) })
			second := newRecorder(t, s2, "cp-second", c, true)
			old := stored(t, s2).DataplaneInsight().Latest()
			require.Equal(t, "s1", old.ID, "the history is kept")
			require.Equal(t, "v3", old.ConfigVersion)
			require.EqualValues(t, 3, old.Status.Total.ResponsesAcknowledged)
			require.Equal(t, insight.StatusOffline, status(t, s2, c), "offline at once after the restart")
			if clean {
				require.Equal(t, lastSeen, *old.DisconnectTime, "closed at the shutdown")
				require.NotContains(t, instances(t, s2), "cp-first")
			} else {
				require.Nil(t, old.DisconnectTime, "nobody wrote it yet")
				second.Beat(t.Context())
				old = stored(t, s2).DataplaneInsight().Latest()
				require.Equal(t, firstBeat, *old.DisconnectTime, "closed at the predecessor's last heartbeat")
				require.NotContains(t, instances(t, s2), "cp-first")
			}

			second.Connect(dpKey, resource.Subscription{ID: "s2", ConnectTime: c.now()})
			subs := stored(t, s2).DataplaneInsight().Subscriptions
			require.Len(t, subs, 2, "the old subscription and the new one")
			require.Equal(t, []string{"s1", "s2"}, []string{subs[0].ID, subs[1].ID})
			require.Equal(t, "cp-second", subs[1].ControlPlaneInstanceID)
			require.Equal(t, insight.StatusOnline, status(t, s2, c))
		})
	}
}

// failingStore fails every write once its fail flag is set.
type failingStore struct {
	store.Store
	fail atomic.Bool
}

var errDown = errors.New("store down")

func (f *failingStore) Update(ctx context.Context, obj *resource.Object) error {
	if f.fail.Load() {
		return errDown
	}
	return f.Store.Update(ctx, obj)
}

func TestAFailedWriteIsRetriedAtTheNextFlush(t *testing.T) {
	mem := memory.New()
	seed(t, mem)
	s := &failingStore{Store: mem}
	c := newClock()
	r := newRecorder(t, s, "cp-1", c, false)
	r.Connect(dpKey, resource.Subscription{ID: "s1", ConnectTime: c.now()})
	s.fail.Store(true)
	r.Update(dpKey, "s1", func(sub *resource.Subscription) { sub.Status.Total.ResponsesSent = 4 })
	r.Flush()
	require.Zero(t, stored(t, mem).DataplaneInsight().Latest().Status.Total.ResponsesSent)
	s.fail.Store(false)
	r.Flush()
	require.EqualValues(t, 4, stored(t, mem).DataplaneInsight().Latest().Status.Total.ResponsesSent)
}
