package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/leader"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/postgres"
	"github.com/kumametrics/mesh/pkg/store/sqlite"
)

// Several control planes on one store (docs/2026-12-06-several-control-planes.md):
// the work that must happen once runs on the leader only. Everything else
// (the servers, the mirror, the reconcilers, the insights recorder) runs on
// every replica.

// backend is an opened store and what comes with it: the elector of its
// replicas and whether other control planes may share it. It is the one
// place where the kind of store decides those.
type backend struct {
	store store.Store
	// elector picks the replica that does the singleton work.
	elector leader.Elector
	// shared: other control planes may run on this store at the same time
	// (Kubernetes, PostgreSQL); false for SQLite and memory, whose
	// control plane is alone on it.
	shared bool
	// borrowed: the store was given to New (WithStore); the control plane
	// does not close it.
	borrowed bool
}

// Option changes how New builds a control plane.
type Option func(*options)

type options struct {
	backend   *backend
	now       func() time.Time
	heartbeat time.Duration
}

// WithHeartbeatInterval sets how often the instance renews its heartbeat
// and closes the subscriptions of dead instances (insight.HeartbeatInterval
// by default): for tests.
func WithHeartbeatInterval(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// WithClock sets the clock of the heartbeats and of the online status the
// API shows (time.Now by default): for tests.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithStore runs the control plane on st instead of opening the store
// cfg names (Universal mode only), with elector e (leader.Always when nil);
// shared says whether other control planes run on st too. The control plane
// does not close st. For tests of several control planes on one store, and
// for embedding.
func WithStore(st store.Store, e leader.Elector, shared bool) Option {
	if e == nil {
		e = leader.Always{}
	}
	return func(o *options) { o.backend = &backend{store: st, elector: e, shared: shared, borrowed: true} }
}

// firstStartRetry is how long a leader waits before retrying failed
// first-start steps.
const firstStartRetry = time.Second

// leadership runs the singleton work while this instance leads.
type leadership struct {
	elector leader.Elector
	log     *slog.Logger
	leading atomic.Bool
	// firstStart are the idempotent steps of the first start of the whole
	// control plane (the default mesh); each run of lead does them before
	// the tasks start.
	firstStart func(ctx context.Context) error
	// tasks run until leadership is lost.
	tasks []task
}

// registerMetrics exposes whether this instance leads, under the reference
// system's name `leader` and the issue's `cp_leader`: one value, read by
// both gauges.
func (l *leadership) registerMetrics(reg prometheus.Registerer) error {
	value := func() float64 {
		if l.leading.Load() {
			return 1
		}
		return 0
	}
	for _, name := range []string{"leader", "cp_leader"} {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: name, Help: "1 while this control-plane instance is the leader of the control planes sharing its store, else 0.",
		}, value)
		if err := reg.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// run campaigns until ctx is done; while leading it runs the first-start
// steps and then the tasks, with a context cancelled when leadership is lost.
func (l *leadership) run(ctx context.Context) error {
	return l.elector.Run(ctx, l.lead)
}

func (l *leadership) lead(ctx context.Context) {
	l.leading.Store(true)
	l.log.Info("became leader")
	defer func() {
		l.leading.Store(false)
		if ctx.Err() != nil {
			l.log.Info("lost leadership")
		}
	}()
	var wg sync.WaitGroup
	if l.firstStart != nil {
		// Retried until they succeed (the store may be away for a while),
		// beside the tasks.
		wg.Go(func() {
			for {
				err := l.firstStart(ctx)
				if err == nil || ctx.Err() != nil {
					return
				}
				l.log.Error("first-start steps failed; retrying", "err", err, "in", firstStartRetry)
				select {
				case <-ctx.Done():
					return
				case <-time.After(firstStartRetry):
				}
			}
		})
	}
	for _, t := range l.tasks {
		wg.Go(func() {
			if err := t.run(ctx); err != nil && ctx.Err() == nil {
				l.log.Error("leader task failed", "task", t.name, "err", err)
			}
		})
	}
	wg.Wait()
	// Leadership lasts until ctx says it is lost, whether or not tasks run.
	<-ctx.Done()
}

// openBackend opens the store cfg names (Universal mode) with its elector.
// SQLite and memory serve one control plane: it leads at once and alone.
// PostgreSQL is shared by the replicas: the leader holds the database's
// advisory lock.
func openBackend(ctx context.Context, cfg cpconfig.Config, log *slog.Logger) (*backend, error) {
	switch cfg.Store.Type {
	case cpconfig.StoreKubernetes:
		return nil, fmt.Errorf("store.type %s needs environment %s", cpconfig.StoreKubernetes, cpconfig.EnvironmentKubernetes)
	case cpconfig.StoreMemory:
		log.Info("using the memory store: resources are lost on restart")
		return &backend{store: memory.New(), elector: leader.Always{}}, nil
	case cpconfig.StorePostgres:
		pc := cfg.Store.Postgres
		opts, err := postgres.OptionsOf(pc, log)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store: %w", err)
		}
		s, err := postgres.Open(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store: %w", err)
		}
		log.Info("using the PostgreSQL store", "host", pc.Host, "port", pc.Port, "db", pc.DBName)
		return &backend{store: s, elector: postgres.NewElector(opts.Conn, postgres.LeaderLockKey), shared: true}, nil
	default:
		path := cfg.SQLitePath()
		s, err := sqlite.Open(ctx, path, sqlite.WithSynchronous(cfg.Store.SQLite.Synchronous))
		if err != nil {
			return nil, fmt.Errorf("open SQLite store %s: %w", path, err)
		}
		log.Info("using the SQLite store", "path", path)
		return &backend{store: s, elector: leader.Always{}}, nil
	}
}
