// Package metered wraps any store.Store with the control plane's store
// metrics: the `store` latency histogram by operation and resource type, and
// the `resources_count` gauge read from the store at scrape time.
package metered

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Store is a store.Store that records metrics.
type Store struct {
	store.Store
	latency *prometheus.HistogramVec
}

var _ store.Store = (*Store)(nil)

// Wrap returns s with metrics registered on reg.
func Wrap(s store.Store, reg prometheus.Registerer) (*Store, error) {
	m := &Store{
		Store: s,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "store",
			Help:    "Latency of resource store operations in seconds.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
		}, []string{"operation", "resource_type"}),
	}
	if err := reg.Register(m.latency); err != nil {
		return nil, err
	}
	if err := reg.Register(&countCollector{store: s}); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Store) observe(op string, kind resource.Kind, start time.Time) {
	m.latency.WithLabelValues(op, string(kind)).Observe(time.Since(start).Seconds())
}

// Create implements store.Store; a creation of several resources is
// observed under the first one's kind.
func (m *Store) Create(ctx context.Context, objs ...*resource.Object) error {
	var kind resource.Kind
	if len(objs) > 0 && objs[0] != nil {
		kind = objs[0].Meta.Kind
	}
	defer m.observe("create", kind, time.Now())
	return m.Store.Create(ctx, objs...)
}

// Upsert implements store.Store.
func (m *Store) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	defer m.observe("upsert", obj.Meta.Kind, time.Now())
	return m.Store.Upsert(ctx, obj, withNew...)
}

// Update implements store.Store.
func (m *Store) Update(ctx context.Context, obj *resource.Object) error {
	defer m.observe("update", obj.Meta.Kind, time.Now())
	return m.Store.Update(ctx, obj)
}

// Delete implements store.Store.
func (m *Store) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	defer m.observe("delete", kind, time.Now())
	return m.Store.Delete(ctx, kind, key, version)
}

// Get implements store.Store.
func (m *Store) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	defer m.observe("get", kind, time.Now())
	return m.Store.Get(ctx, kind, key)
}

// List implements store.Store.
func (m *Store) List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error) {
	defer m.observe("list", kind, time.Now())
	return m.Store.List(ctx, kind, opts)
}

// countCollector reports resources_count by asking the store at scrape time.
type countCollector struct {
	store store.Store
}

var countDesc = prometheus.NewDesc("resources_count", "Number of resources by type.", []string{"resource_type"}, nil)

func (c *countCollector) Describe(ch chan<- *prometheus.Desc) { ch <- countDesc }

func (c *countCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, d := range resource.Descriptors() {
		n, err := c.store.Count(ctx, d.Kind)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(countDesc, err)
			continue
		}
		ch <- prometheus.MustNewConstMetric(countDesc, prometheus.GaugeValue, float64(n), string(d.Kind))
	}
}
