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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/latest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// View is an immutable picture of the mirrored resources at one revision.
// Objects in a view must not be modified.
//
// Each kind is one slice sorted by mesh, then name: listing is free, a
// lookup a binary search, and a new view after k changes costs a merge of
// the k changes into the previous slices (a copy of the pointers, no
// sorting and no hashing of the n unchanged objects); unchanged kinds share
// their slice with the previous view.
type View struct {
	rev     uint64
	objects map[resource.Kind][]*resource.Object
}

// NewView builds a view from objects (for tests and benchmarks of the
// functions that take views); of two objects with the same kind and key,
// the last one counts.
func NewView(objs ...*resource.Object) *View {
	byKind := map[resource.Kind]map[resource.Key]*resource.Object{}
	for _, o := range objs {
		if byKind[o.Meta.Kind] == nil {
			byKind[o.Meta.Kind] = map[resource.Key]*resource.Object{}
		}
		byKind[o.Meta.Kind][o.Meta.Key()] = o
	}
	v := &View{objects: make(map[resource.Kind][]*resource.Object, len(byKind))}
	for k, m := range byKind {
		v.objects[k] = sorted(slices.Collect(maps.Values(m)))
	}
	return v
}

// Compare orders objects by mesh, then name: the order of List.
func Compare(a, b *resource.Object) int { return compareKeys(a.Meta.Key(), b.Meta.Key()) }

// compareKey orders an object against a key, as Compare.
func compareKey(o *resource.Object, k resource.Key) int { return compareKeys(o.Meta.Key(), k) }

func compareKeys(a, b resource.Key) int {
	if c := strings.Compare(a.Mesh, b.Mesh); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// sorted sorts objects (of one kind, distinct keys) in place and returns them.
func sorted(objs []*resource.Object) []*resource.Object {
	slices.SortFunc(objs, Compare)
	return objs
}

// find returns the index of key in objs (sorted), or where it would go.
func find(objs []*resource.Object, key resource.Key) (int, bool) {
	return slices.BinarySearchFunc(objs, key, compareKey)
}

// Revision increases with every change the mirror applied.
func (v *View) Revision() uint64 { return v.rev }

// Get returns one object, or nil.
func (v *View) Get(kind resource.Kind, key resource.Key) *resource.Object {
	objs := v.objects[kind]
	if i, ok := find(objs, key); ok {
		return objs[i]
	}
	return nil
}

// Len is the number of objects of a kind.
func (v *View) Len(kind resource.Kind) int { return len(v.objects[kind]) }

// List returns the objects of a kind sorted by mesh, then name; with a
// non-empty mesh only those of that mesh. The slice is shared: do not modify it.
func (v *View) List(kind resource.Kind, mesh string) []*resource.Object {
	all := v.objects[kind]
	if mesh == "" {
		return all
	}
	lo, _ := slices.BinarySearchFunc(all, mesh, func(o *resource.Object, m string) int { return strings.Compare(o.Meta.Mesh, m) })
	hi := lo + sort.Search(len(all)-lo, func(i int) bool { return all[lo+i].Meta.Mesh != mesh })
	return all[lo:hi:hi]
}

// merge returns objs (sorted, not modified) with changes applied: a nil
// object removes its key. It costs a copy of objs and a binary search per
// change.
func merge(objs []*resource.Object, changes map[resource.Key]*resource.Object) []*resource.Object {
	keys := slices.Collect(maps.Keys(changes))
	slices.SortFunc(keys, compareKeys)
	out := make([]*resource.Object, 0, len(objs)+len(keys))
	i := 0
	for _, k := range keys {
		j, found := find(objs[i:], k)
		out = append(out, objs[i:i+j]...)
		if o := changes[k]; o != nil {
			out = append(out, o)
		}
		i += j
		if found {
			i++
		}
	}
	return append(out, objs[i:]...)
}

// Mirror replicates resources of some kinds from a store.
type Mirror struct {
	store store.Store
	kinds []resource.Kind
	log   *slog.Logger

	mu sync.Mutex
	// base holds each kind's objects, sorted, as of the last view built;
	// pending the changes applied since (a nil object: removed).
	base    map[resource.Kind][]*resource.Object
	pending map[resource.Kind]map[resource.Key]*resource.Object
	rev     uint64
	view    *View // nil when changes were applied since it was built
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
		for k, changes := range m.pending {
			m.base[k] = merge(m.base[k], changes)
		}
		clear(m.pending)
		m.view = &View{rev: m.rev, objects: maps.Clone(m.base)}
	}
	return m.view, ch
}

// current is the mirrored object of kind and key, or nil; m.mu held.
func (m *Mirror) current(kind resource.Kind, key resource.Key) *resource.Object {
	if o, ok := m.pending[kind][key]; ok {
		return o
	}
	objs := m.base[kind]
	if i, ok := find(objs, key); ok {
		return objs[i]
	}
	return nil
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
	fresh := make(map[resource.Kind][]*resource.Object, len(m.kinds))
	for _, kind := range m.kinds {
		res, err := m.store.List(ctx, kind, store.ListOptions{})
		if err != nil {
			return fmt.Errorf("list %s: %w", kind, err)
		}
		fresh[kind] = sorted(slices.Clone(res.Items))
	}
	m.mu.Lock()
	m.base = fresh
	m.pending = map[resource.Kind]map[resource.Key]*resource.Object{}
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
	var changes []change
	// inBatch is what the batch's earlier events made of a key: a key
	// deleted then created again (its version starting over) is fetched.
	type kindKey struct {
		kind resource.Kind
		key  resource.Key
	}
	inBatch := map[kindKey]*resource.Object{}
	for _, ev := range batch {
		switch {
		case ev.Type == store.Resync:
			return errFellBehind
		case !m.mirrored(ev.Kind):
			continue
		case ev.Type == store.Deleted:
			changes = append(changes, change{kind: ev.Kind, key: ev.Key})
			inBatch[kindKey{ev.Kind, ev.Key}] = nil
			continue
		}
		have, seen := inBatch[kindKey{ev.Kind, ev.Key}]
		if !seen {
			m.mu.Lock()
			have = m.current(ev.Kind, ev.Key)
			m.mu.Unlock()
		}
		if have != nil && have.Meta.Version >= ev.Version {
			continue
		}
		obj, err := m.store.Get(ctx, ev.Kind, ev.Key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Deleted since; its Deleted event follows.
			changes = append(changes, change{kind: ev.Kind, key: ev.Key})
			inBatch[kindKey{ev.Kind, ev.Key}] = nil
		case err != nil:
			return fmt.Errorf("get %s %s: %w", ev.Kind, ev.Key, err)
		default:
			changes = append(changes, change{kind: ev.Kind, key: ev.Key, obj: obj})
			inBatch[kindKey{ev.Kind, ev.Key}] = obj
		}
	}
	if len(changes) == 0 {
		return nil
	}
	m.mu.Lock()
	for _, c := range changes {
		have := m.current(c.kind, c.key)
		if c.obj != nil && have != nil && have.Meta.Version >= c.obj.Meta.Version {
			continue
		}
		if c.obj == nil && have == nil {
			continue
		}
		if m.pending[c.kind] == nil {
			m.pending[c.kind] = map[resource.Key]*resource.Object{}
		}
		m.pending[c.kind][c.key] = c.obj
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
