// Package record writes what one control-plane instance knows of the
// proxies connected to it into the store: their subscriptions, as
// DataplaneInsights, and its own heartbeat, as a ControlPlaneInstance. It
// also closes the subscriptions of instances that died without doing so.
//
// Connects and disconnects are written at once; counter changes (responses
// sent, acknowledged, rejected; the acknowledged version) are coalesced, at
// most one write per dataplane every FlushInterval. An instance only writes
// its own subscriptions, merged into what the store holds.
package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Store is what the recorder needs of the store.
type Store interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
	List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error)
	Create(ctx context.Context, objs ...*resource.Object) error
	Update(ctx context.Context, obj *resource.Object) error
	Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error)
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error
}

// DefaultFlushInterval bounds how often counter changes of one dataplane are written.
const DefaultFlushInterval = 5 * time.Second

// writeTimeout bounds one write (a subscription, a heartbeat).
const writeTimeout = 10 * time.Second

// maxAttempts bounds the read-merge-write rounds of one subscription write
// that lose against other control planes writing the same insight; a write
// that loses them all is retried at the next flush.
const maxAttempts = 5

// Options configure a Recorder.
type Options struct {
	Store      Store
	InstanceID string
	Log        *slog.Logger
	// Now is the clock (time.Now by default).
	Now func() time.Time
	// FlushInterval (default DefaultFlushInterval) is how often coalesced
	// changes are written; HeartbeatInterval (default
	// insight.HeartbeatInterval) how often the heartbeat is renewed.
	FlushInterval     time.Duration
	HeartbeatInterval time.Duration
	// Exclusive says this is the only control plane on its store (SQLite,
	// memory): every other instance found at Register is a predecessor
	// that died, and its subscriptions are closed at once instead of after
	// insight.HeartbeatTimeout.
	Exclusive bool
}

// Recorder records the subscriptions of one control-plane instance. Its
// methods are safe for concurrent use.
type Recorder struct {
	opts  Options
	log   *slog.Logger
	start time.Time

	mu     sync.Mutex
	subs   map[resource.Key]*tracked
	closed bool

	// writing serializes the writes of each dataplane's insight, so that
	// two writes of one subscription never race each other (the later
	// could put back an older state); different dataplanes write in
	// parallel.
	wmu     sync.Mutex
	writing map[resource.Key]*keyLock
}

type keyLock struct {
	mu    sync.Mutex
	users int
}

// lockKey serializes writers of one key; call the returned func to unlock.
func (r *Recorder) lockKey(key resource.Key) func() {
	r.wmu.Lock()
	l := r.writing[key]
	if l == nil {
		l = &keyLock{}
		r.writing[key] = l
	}
	l.users++
	r.wmu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.wmu.Lock()
		if l.users--; l.users == 0 {
			delete(r.writing, key)
		}
		r.wmu.Unlock()
	}
}

// tracked is a live subscription of this instance.
type tracked struct {
	sub resource.Subscription
	// written is true once the subscription is in the store.
	written bool
	dirty   bool
}

// New returns a recorder; Register writes its first heartbeat.
func New(opts Options) (*Recorder, error) {
	if opts.Store == nil || opts.InstanceID == "" {
		return nil, errors.New("record: Store and InstanceID are required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = insight.HeartbeatInterval
	}
	return &Recorder{opts: opts, log: opts.Log, start: opts.Now().UTC(), subs: map[resource.Key]*tracked{}, writing: map[resource.Key]*keyLock{}}, nil
}

// Register writes the instance's heartbeat record: its subscriptions count
// as online from now on. Call it before proxies can connect.
func (r *Recorder) Register(ctx context.Context) error {
	if err := r.heartbeat(ctx); err != nil {
		return fmt.Errorf("register control-plane instance %s: %w", r.opts.InstanceID, err)
	}
	if r.opts.Exclusive {
		if err := r.markPredecessors(ctx); err != nil {
			r.log.Warn("marking earlier control planes stopped failed", "err", err)
		}
	}
	return nil
}

// markPredecessors marks every other instance stopped: one write each, so
// that their subscriptions read offline at once; CloseDead writes their
// disconnect times later, in the background.
func (r *Recorder) markPredecessors(ctx context.Context) error {
	res, err := r.opts.Store.List(ctx, resource.KindControlPlaneInstance, store.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range res.Items {
		if o.Meta.Name == r.opts.InstanceID || o.ControlPlaneInstance().Stopped {
			continue
		}
		o.ControlPlaneInstance().Stopped = true
		if err := r.opts.Store.Update(ctx, o); err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("mark %s stopped: %w", o.Meta.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Recorder) heartbeat(ctx context.Context) error {
	_, err := r.opts.Store.Upsert(ctx, resource.New("", r.opts.InstanceID, &resource.ControlPlaneInstanceSpec{
		StartTime: r.start, HeartbeatTime: r.opts.Now().UTC(),
	}))
	return err
}

func (r *Recorder) now() time.Time { return r.opts.Now().UTC() }

// Connect records a new subscription of a dataplane and writes it.
func (r *Recorder) Connect(key resource.Key, sub resource.Subscription) {
	sub.ControlPlaneInstanceID = r.opts.InstanceID
	sub.ConnectTime = sub.ConnectTime.UTC()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if old := r.subs[key]; old != nil && old.sub.ID != sub.ID {
		// The older stream of this dataplane is being replaced; its
		// Disconnect comes and finds nothing: close it here.
		at := sub.ConnectTime
		old.sub.DisconnectTime = &at
		if old.written {
			r.mu.Unlock()
			r.write(key, old)
			r.mu.Lock()
		}
	}
	t := &tracked{sub: sub, dirty: true}
	r.subs[key] = t
	r.mu.Unlock()
	r.write(key, t)
}

// Update changes a subscription's counters in memory; they are written at
// the next flush.
func (r *Recorder) Update(key resource.Key, id string, change func(*resource.Subscription)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.subs[key]; t != nil && t.sub.ID == id {
		change(&t.sub)
		t.dirty = true
	}
}

// Disconnect closes a subscription at `at` and writes it.
func (r *Recorder) Disconnect(key resource.Key, id string, at time.Time) {
	r.mu.Lock()
	t := r.subs[key]
	if t == nil || t.sub.ID != id {
		r.mu.Unlock()
		return
	}
	delete(r.subs, key)
	at = at.UTC()
	t.sub.DisconnectTime = &at
	t.dirty = true
	r.mu.Unlock()
	r.write(key, t)
}

// Forget stops tracking a dataplane (its Dataplane, and with it its
// insight, was deleted): nothing more is written for it.
func (r *Recorder) Forget(key resource.Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.subs, key)
}

// write merges t's subscription into the stored insight of key.
func (r *Recorder) write(key resource.Key, t *tracked) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	defer r.lockKey(key)()
	r.mu.Lock()
	sub, written := t.sub, t.written
	t.dirty = false
	r.mu.Unlock()
	err := r.merge(ctx, key, sub, written)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case errors.Is(err, errGone):
		// The dataplane was deleted: so was its insight; do not bring it back.
		if r.subs[key] == t {
			delete(r.subs, key)
		}
	case err != nil:
		t.dirty = true // retried at the next flush
		r.log.Warn("writing a dataplane insight failed", "dataplane", key.String(), "err", err)
	default:
		t.written = true
	}
}

// errGone: the insight of a subscription already written has vanished.
var errGone = errors.New("the dataplane insight was deleted")

func (r *Recorder) merge(ctx context.Context, key resource.Key, sub resource.Subscription, written bool) error {
	for range maxAttempts {
		obj, err := r.opts.Store.Get(ctx, resource.KindDataplaneInsight, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if written {
				return errGone
			}
			err = r.opts.Store.Create(ctx, resource.New(key.Mesh, key.Name, &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{sub}}))
			if errors.Is(err, store.ErrMeshNotFound) {
				return errGone
			}
		case err != nil:
			return err
		default:
			spec := obj.DataplaneInsight()
			spec.Subscriptions = insight.Merge(spec.Subscriptions, sub)
			err = r.opts.Store.Update(ctx, obj)
			if errors.Is(err, store.ErrNotFound) && written {
				return errGone
			}
		}
		if err == nil || !(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound)) {
			return err
		}
	}
	return fmt.Errorf("lost %d rounds against other writers", maxAttempts)
}

// Flush writes every subscription changed since its last write.
func (r *Recorder) Flush() {
	r.mu.Lock()
	var keys []resource.Key
	var ts []*tracked
	for k, t := range r.subs {
		if t.dirty {
			keys, ts = append(keys, k), append(ts, t)
		}
	}
	r.mu.Unlock()
	for i, k := range keys {
		r.write(k, ts[i])
	}
}

// Run flushes coalesced changes, renews the heartbeat and closes the
// subscriptions of dead instances until ctx is done. It then closes every
// subscription of this instance and deletes its heartbeat record: a clean
// shutdown leaves every proxy offline with its disconnect time.
func (r *Recorder) Run(ctx context.Context) error {
	flush := time.NewTicker(r.opts.FlushInterval)
	defer flush.Stop()
	beat := time.NewTicker(r.opts.HeartbeatInterval)
	defer beat.Stop()
	if r.opts.Exclusive {
		// Predecessors marked stopped at Register: close their subscriptions now.
		r.Beat(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			r.shutdown()
			return nil
		case <-flush.C:
			r.Flush()
		case <-beat.C:
			r.Beat(ctx)
		}
	}
}

// Beat renews the heartbeat and closes the subscriptions of dead instances.
func (r *Recorder) Beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	if err := r.heartbeat(ctx); err != nil {
		r.log.Warn("renewing the control-plane heartbeat failed", "err", err)
	}
	if err := r.CloseDead(ctx); err != nil {
		r.log.Warn("closing the subscriptions of dead control planes failed", "err", err)
	}
}

// CloseDead finds control-plane instances that are not alive (stopped, or
// a heartbeat older than insight.HeartbeatTimeout), writes their last
// heartbeat as the disconnect time of every subscription they left open,
// and then deletes their record. Several control planes may do this at
// once: every write is conditional on the version read.
func (r *Recorder) CloseDead(ctx context.Context) error {
	res, err := r.opts.Store.List(ctx, resource.KindControlPlaneInstance, store.ListOptions{})
	if err != nil {
		return err
	}
	instances, now := insight.InstancesOf(res.Items), r.now()
	var dead []*resource.Object
	for _, o := range res.Items {
		if o.Meta.Name != r.opts.InstanceID && !instances.Alive(o.Meta.Name, now) {
			dead = append(dead, o)
		}
	}
	if len(dead) == 0 {
		return nil
	}
	insights, err := r.opts.Store.List(ctx, resource.KindDataplaneInsight, store.ListOptions{})
	if err != nil {
		return err
	}
	var errs []error
	for _, inst := range dead {
		lastBeat := inst.ControlPlaneInstance().HeartbeatTime
		failed := false
		for _, in := range insights.Items {
			changed := false
			for i := range in.DataplaneInsight().Subscriptions {
				s := &in.DataplaneInsight().Subscriptions[i]
				if s.ControlPlaneInstanceID == inst.Meta.Name && s.DisconnectTime == nil {
					at := lastBeat
					s.DisconnectTime = &at
					changed = true
				}
			}
			if !changed {
				continue
			}
			if err := r.opts.Store.Update(ctx, in); err != nil && !errors.Is(err, store.ErrNotFound) {
				// ErrConflict: another writer was first; the next round rereads.
				failed = true
				errs = append(errs, fmt.Errorf("close %s's subscriptions of %s: %w", inst.Meta.Name, in.Meta.Key(), err))
			}
		}
		if failed {
			continue
		}
		if err := r.opts.Store.Delete(ctx, resource.KindControlPlaneInstance, inst.Meta.Key(), inst.Meta.Version); err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete the record of %s: %w", inst.Meta.Name, err))
			continue
		}
		r.log.Info("closed the subscriptions of a dead control plane", "instance_id", inst.Meta.Name, "last_heartbeat", lastBeat)
	}
	return errors.Join(errs...)
}

// shutdown closes every subscription of this instance and deletes its
// heartbeat record; later Connects are ignored.
func (r *Recorder) shutdown() {
	now := r.now()
	r.mu.Lock()
	r.closed = true
	open := r.subs
	r.subs = map[resource.Key]*tracked{}
	for _, t := range open {
		at := now
		t.sub.DisconnectTime = &at
	}
	r.mu.Unlock()
	for key, t := range open {
		r.write(key, t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := r.opts.Store.Delete(ctx, resource.KindControlPlaneInstance, resource.Key{Name: r.opts.InstanceID}, 0); err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Warn("deleting the control-plane heartbeat record failed", "err", err)
	}
}
