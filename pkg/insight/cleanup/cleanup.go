// Package cleanup deletes the Dataplanes whose proxies have been offline
// for longer than the cleanup age (runtime.universal.dataplaneCleanupAge),
// so that discovery stops advertising dead proxies, and the insights left
// without a Dataplane. Which to delete is insight.Cleanup's pure decision;
// this package reads the store, deletes, logs and counts.
package cleanup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Store is what the cleanup needs of the store.
type Store interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
	List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error)
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error
}

// Interval is how often the cleanup runs for a cleanup age: a tenth of
// it, at least a second and at most a minute.
func Interval(age time.Duration) time.Duration {
	return min(max(age/10, time.Second), time.Minute)
}

// Options configure a Cleaner.
type Options struct {
	Store Store
	// Age is how long a proxy must have been offline (> 0).
	Age        time.Duration
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock (time.Now by default).
	Now func() time.Time
}

// Cleaner runs the cleanup.
type Cleaner struct {
	opts    Options
	log     *slog.Logger
	deleted prometheus.Counter
}

// New returns a cleaner, its counter registered on opts.Registerer (if set).
func New(opts Options) (*Cleaner, error) {
	if opts.Store == nil || opts.Age <= 0 {
		return nil, errors.New("cleanup: Store and a positive Age are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cleaner{opts: opts, log: opts.Log, deleted: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cp_dataplanes_cleaned_up_total",
		Help: "Dataplanes deleted because their proxy was offline for longer than runtime.universal.dataplaneCleanupAge.",
	})}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(c.deleted); err != nil {
			return nil, fmt.Errorf("cleanup metrics: %w", err)
		}
	}
	return c, nil
}

// Run cleans up every Interval(age) until ctx is done.
func (c *Cleaner) Run(ctx context.Context) error {
	t := time.NewTicker(Interval(c.opts.Age))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := c.Once(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("dataplane cleanup failed", "err", err)
			}
		}
	}
}

// Once runs one cleanup and returns the dataplanes it deleted.
func (c *Cleaner) Once(ctx context.Context) ([]resource.Key, error) {
	// Insights are listed before dataplanes: an insight whose dataplane is
	// missing from the later listing has really lost it (a dataplane is
	// stored before its first insight).
	insights, err := c.opts.Store.List(ctx, resource.KindDataplaneInsight, store.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list insights: %w", err)
	}
	dataplanes, err := c.opts.Store.List(ctx, resource.KindDataplane, store.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list dataplanes: %w", err)
	}
	instances, err := c.instances(ctx)
	if err != nil {
		return nil, err
	}
	byKey := make(map[resource.Key]*resource.Object, len(insights.Items))
	for _, in := range insights.Items {
		byKey[in.Meta.Key()] = in
	}
	var errs []error
	for _, in := range insight.Orphans(insights.Items, dataplanes.Items) {
		err := c.opts.Store.Delete(ctx, resource.KindDataplaneInsight, in.Meta.Key(), in.Meta.Version)
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
			errs = append(errs, fmt.Errorf("delete the insight of missing dataplane %s: %w", in.Meta.Key(), err))
		}
	}
	now := c.opts.Now()
	var deleted []resource.Key
	for _, d := range insight.Cleanup(dataplanes.Items, byKey, instances, now, c.opts.Age) {
		// Judge again on a fresh read: the proxy may have reconnected.
		in, err := c.opts.Store.Get(ctx, resource.KindDataplaneInsight, d.Key)
		if err != nil {
			if !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, fmt.Errorf("reread the insight of %s: %w", d.Key, err))
			}
			continue
		}
		if since, offline := insight.OfflineSince(in, instances, now); !offline || now.Sub(since) <= c.opts.Age {
			continue
		}
		// Conditional on the version judged: a Dataplane changed since is kept.
		err = c.opts.Store.Delete(ctx, resource.KindDataplane, d.Key, d.Version)
		switch {
		case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("delete dataplane %s: %w", d.Key, err))
			continue
		}
		c.deleted.Inc()
		deleted = append(deleted, d.Key)
		c.log.Info("deleted a dataplane whose proxy was offline for longer than the cleanup age",
			"mesh", d.Key.Mesh, "dataplane", d.Key.Name, "offline_since", d.OfflineSince, "cleanup_age", c.opts.Age)
	}
	return deleted, errors.Join(errs...)
}

func (c *Cleaner) instances(ctx context.Context) (insight.Instances, error) {
	res, err := c.opts.Store.List(ctx, resource.KindControlPlaneInstance, store.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list control-plane instances: %w", err)
	}
	return insight.InstancesOf(res.Items), nil
}

// Metric is the counter of deleted dataplanes (cp_dataplanes_cleaned_up_total).
func (c *Cleaner) Metric() prometheus.Counter { return c.deleted }
