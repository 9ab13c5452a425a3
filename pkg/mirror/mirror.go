// Package mirror keeps an in-memory, read-only replica of the store's
// resources, kept current by the store's change feed, and hands out
// immutable views of it. The reconcilers (MADS, proxy configs) generate from
// views, so regenerating never re-reads the whole store, and a change costs
// one Get.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/latest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// View is an immutable picture of the mirrored resources at one revision.
// Objects in a view must not be modified.
type View struct {
	rev     uint64
	objects map[resource.Kind]map[resource.Key]*resource.Object

	sortOnce sync.Once
	sorted   map[resource.Kind][]*resource.Object
}

// NewView builds a view from objects (for tests and benchmarks of the
// functions that take views).
func NewView(objs ...*resource.Object) *View {
	v := &View{objects: map[resource.Kind]map[resource.Key]*resource.Object{}}
	for _, o := range objs {
		if v.objects[o.Meta.Kind] == nil {
			v.objects[o.Meta.Kind] = map[resource.Key]*resource.Object{}
		}
		v.objects[o.Meta.Kind][o.Meta.Key()] = o
	}
	return v
}

// Revision increases with every change the mirror applied.
func (v *View) Revision() uint64 { return v.rev }

// Get returns one object, or nil.
func (v *View) Get(kind resource.Kind, key resource.Key) *resource.Object {
	return v.objects[kind][key]
}

// Len is the number of objects of a kind.
func (v *View) Len(kind resource.Kind) int { return len(v.objects[kind]) }

// List returns the objects of a kind sorted by mesh, then name; with a
// non-empty mesh only those of that mesh. The slice is shared: do not modify it.
func (v *View) List(kind resource.Kind, mesh string) []*resource.Object {
	v.sortOnce.Do(func() {
		v.sorted = make(map[resource.Kind][]*resource.Object, len(v.objects))
		for k, m := range v.objects {
			l := slices.Collect(maps.Values(m))
			slices.SortFunc(l, func(a, b *resource.Object) int {
				if c := strings.Compare(a.Meta.Mesh, b.Meta.Mesh); c != 0 {
					return c
				}
				return strings.Compare(a.Meta.Name, b.Meta.Name)
			})
			v.sorted[k] = l
		}
	})
	all := v.sorted[kind]
	if mesh == "" {
		return all
	}
	lo, _ := slices.BinarySearchFunc(all, mesh, func(o *resource.Object, m string) int { return strings.Compare(o.Meta.Mesh, m) })
	hi := lo
	for hi < len(all) && all[hi].Meta.Mesh == mesh {
		hi++
	}
	return all[lo:hi:hi]
}

// Mirror replicates resources of some kinds from a store.
type Mirror struct {
	store store.Store
	kinds []resource.Kind
	log   *slog.Logger

	mu      sync.Mutex
	working map[resource.Kind]map[resource.Key]*resource.Object
	rev     uint64
	view    *View // nil when working changed since it was built
	loaded  bool

	notify latest.Value[uint64]
	ready  chan struct{}
}

// New returns a mirror of the given kinds of s; Run fills and follows it.
func New(s store.Store, log *slog.Logger, kinds ...resource.Kind) *Mirror {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mirror{store: s, kinds: kinds, log: log, ready: make(chan struct{})}
}

// retryDelay bounds how fast a failing store is retried.
const retryDelay = 500 * time.Millisecond

// errFellBehind: the feed dropped events (store.Resync); only a reload
// brings the mirror up to date.
var errFellBehind = errors.New("the change feed fell behind")

// maxBatch is how many queued events are applied before the change is announced.
const maxBatch = 4096

// Run loads the mirrored kinds and follows the store's change feed until ctx
// is done. A store error is retried; a subscriber that fell behind reloads.
func (m *Mirror) Run(ctx context.Context) error {
	events := m.store.Watch(ctx)
	for {
		err := m.reload(ctx)
		if err == nil {
			break
		}
		m.log.Warn("loading the store failed, retrying", "err", err)
		if !sleep(ctx, retryDelay) {
			return nil
		}
	}
	close(m.ready)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			batch := []store.Event{ev}
		drain:
			for len(batch) < maxBatch {
				select {
				case ev, ok := <-events:
					if !ok {
						break drain
					}
					batch = append(batch, ev)
				default:
					break drain
				}
			}
			for err := m.apply(ctx, batch); err != nil; err = m.reload(ctx) {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, errFellBehind) {
					// Nothing is wrong with the store: reload at once.
					m.log.Info("the change feed fell behind, reloading")
					continue
				}
				m.log.Warn("following the store failed, reloading", "err", err)
				if !sleep(ctx, retryDelay) {
					return nil
				}
			}
		}
	}
}

// Ready is closed once the first load is done.
func (m *Mirror) Ready() <-chan struct{} { return m.ready }

// View returns the current view (nil before the first load) and a channel
// closed when the mirror changes after it.
func (m *Mirror) View() (*View, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ch := m.notify.Get()
	if !m.loaded {
		return nil, ch
	}
	if m.view == nil {
		objs := make(map[resource.Kind]map[resource.Key]*resource.Object, len(m.working))
		for k, byKey := range m.working {
			objs[k] = maps.Clone(byKey)
		}
		m.view = &View{rev: m.rev, objects: objs}
	}
	return m.view, ch
}

// Changed returns a channel closed at the mirror's next change, without
// building a view.
func (m *Mirror) Changed() <-chan struct{} {
	_, ch := m.notify.Get()
	return ch
}

// WaitView waits for the first load and returns the current view.
func (m *Mirror) WaitView(ctx context.Context) (*View, error) {
	select {
	case <-m.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v, _ := m.View()
	return v, nil
}

func (m *Mirror) mirrored(kind resource.Kind) bool { return slices.Contains(m.kinds, kind) }

func (m *Mirror) reload(ctx context.Context) error {
	fresh := make(map[resource.Kind]map[resource.Key]*resource.Object, len(m.kinds))
	for _, kind := range m.kinds {
		res, err := m.store.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", kind, err)
		}
		byKey := make(map[resource.Key]*resource.Object, len(res.Items))
		for _, o := range res.Items {
			byKey[o.Meta.Key()] = o
		}
		fresh[kind] = byKey
	}
	m.mu.Lock()
	m.working = fresh
	m.loaded = true
	m.rev++
	m.view = nil
	rev := m.rev
	m.mu.Unlock()
	m.notify.Set(rev)
	return nil
}

// apply brings the mirror up to date with a batch of events; an error means
// the mirror must be reloaded.
func (m *Mirror) apply(ctx context.Context, batch []store.Event) error {
	type change struct {
		kind resource.Kind
		key  resource.Key
		obj  *resource.Object // nil: remove
	}
	type kindKey struct {
		kind resource.Kind
		key  resource.Key
	}
	var changes []change
	// deleted: keys deleted earlier in the batch; what the mirror holds of
	// them is gone, whatever its version (a key created again starts its
	// versions again).
	deleted := map[kindKey]bool{}
	for _, ev := range batch {
		switch {
		case ev.Type == store.Resync:
			return errFellBehind
		case !m.mirrored(ev.Kind):
			continue
		case ev.Type == store.Deleted:
			changes = append(changes, change{kind: ev.Kind, key: ev.Key})
			deleted[kindKey{ev.Kind, ev.Key}] = true
			continue
		}
		m.mu.Lock()
		have := m.working[ev.Kind][ev.Key]
		m.mu.Unlock()
		if have != nil && !deleted[kindKey{ev.Kind, ev.Key}] && have.Meta.Version >= ev.Version {
			continue
		}
		obj, err := m.store.Get(ctx, ev.Kind, ev.Key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Deleted since; its Deleted event follows.
			changes = append(changes, change{kind: ev.Kind, key: ev.Key})
		case err != nil:
			return fmt.Errorf("get %s %s: %w", ev.Kind, ev.Key, err)
		default:
			changes = append(changes, change{kind: ev.Kind, key: ev.Key, obj: obj})
		}
	}
	if len(changes) == 0 {
		return nil
	}
	m.mu.Lock()
	for _, c := range changes {
		byKey := m.working[c.kind]
		if byKey == nil {
			byKey = map[resource.Key]*resource.Object{}
			m.working[c.kind] = byKey
		}
		if c.obj == nil {
			delete(byKey, c.key)
		} else if have := byKey[c.key]; have == nil || have.Meta.Version < c.obj.Meta.Version {
			byKey[c.key] = c.obj
		}
	}
	m.rev++
	m.view = nil
	rev := m.rev
	m.mu.Unlock()
	m.notify.Set(rev)
	return nil
}

// Views gives the current view of a mirror and signals its changes.
type Views interface {
	View() (*View, <-chan struct{})
	Changed() <-chan struct{}
}

// Follow calls f with the current view (once there is one), then again
// after every change of views or signal on wake, debounced by quiet, until
// ctx is done. It is the loop of every reconciler.
func Follow(ctx context.Context, views Views, wake <-chan struct{}, quiet time.Duration, f func(*View)) {
	for {
		view, changed := views.View()
		if view != nil {
			f(view)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-wake:
		}
		if !Debounce(ctx, views.Changed, wake, quiet) {
			return
		}
	}
}

// Debounce waits, after a change, until changes() has been quiet for quiet
// (or 4×quiet passed since the call), so that a burst of changes costs one
// regeneration. A receive on kick counts as a change. It returns false when
// ctx ends first.
func Debounce(ctx context.Context, changes func() <-chan struct{}, kick <-chan struct{}, quiet time.Duration) bool {
	settled := time.NewTimer(quiet)
	defer settled.Stop()
	deadline := time.NewTimer(4 * quiet)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-settled.C:
			return true
		case <-deadline.C:
			return true
		case <-changes():
			settled.Reset(quiet)
		case <-kick:
			settled.Reset(quiet)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
