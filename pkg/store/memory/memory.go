// Package memory is the in-memory resource store: a store.Store kept in
// process memory, for tests, development and single-process deployments that
// do not need persistence.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// ErrClosed is returned by every operation of a closed Store.
var ErrClosed = errors.New("memory: store is closed")

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that stamps creation and modification times
// (default time.Now). Times are stored in UTC.
func WithClock(now func() time.Time) Option {
	return func(s *Store) {
		if now != nil {
			s.now = now
		}
	}
}

// Store is an in-memory store.Store. It is safe for concurrent use. Objects
// are deep-copied on the way in and out, so callers never share memory with
// the store.
type Store struct {
	feed store.Feed
	now  func() time.Time

	mu     sync.RWMutex
	tables map[resource.Kind]*table
	closed bool
}

var _ store.Store = (*Store)(nil)

// table holds the resources of one kind.
type table struct {
	byKey map[resource.Key]*record
	// sorted holds the same records ordered by (mesh, name).
	sorted []*record
}

// record is a stored resource. It is only mutated under the write lock and
// its spec is never handed out (only copies are).
type record struct {
	meta resource.Meta
	spec resource.Spec
}

func (r *record) object() *resource.Object {
	return &resource.Object{Meta: r.meta, Spec: copySpec(r.spec)}
}

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{now: time.Now, tables: map[resource.Kind]*table{}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range resource.Descriptors() {
		s.tables[d.Kind] = &table{byKey: map[resource.Key]*record{}}
	}
	return s
}

// compareKey orders keys by mesh, then name.
func compareKey(a, b resource.Key) int {
	switch {
	case a.Mesh < b.Mesh:
		return -1
	case a.Mesh > b.Mesh:
		return 1
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}

// search returns the index of the first record whose key is >= key.
func (t *table) search(key resource.Key) int {
	return sort.Search(len(t.sorted), func(i int) bool {
		return compareKey(t.sorted[i].meta.Key(), key) >= 0
	})
}

// meshRange returns the bounds of the records of one mesh in t.sorted.
func (t *table) meshRange(mesh string) (lo, hi int) {
	lo = sort.Search(len(t.sorted), func(i int) bool { return t.sorted[i].meta.Mesh >= mesh })
	hi = lo + sort.Search(len(t.sorted)-lo, func(i int) bool { return t.sorted[lo+i].meta.Mesh > mesh })
	return lo, hi
}

func (t *table) insert(r *record) {
	t.byKey[r.meta.Key()] = r
	i := t.search(r.meta.Key())
	t.sorted = append(t.sorted, nil)
	copy(t.sorted[i+1:], t.sorted[i:])
	t.sorted[i] = r
}

func (t *table) remove(key resource.Key) {
	delete(t.byKey, key)
	i := t.search(key)
	t.sorted = append(t.sorted[:i], t.sorted[i+1:]...)
}

// checkObject validates what Update and Upsert are given.
func checkObject(op string, obj *resource.Object) error {
	if err := store.CheckObject(obj); err != nil {
		return fmt.Errorf("memory: %s: %w", op, err)
	}
	return nil
}

// lookup returns the table of a kind; the caller holds s.mu.
func (s *Store) lookup(op string, kind resource.Kind) (*table, error) {
	t, ok := s.tables[kind]
	if !ok {
		_, err := resource.Describe(kind)
		return nil, fmt.Errorf("memory: %s: %w", op, err)
	}
	return t, nil
}

func (s *Store) stamp() time.Time { return s.now().UTC() }

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, objs ...*resource.Object) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(objs) == 0 {
		return errors.New("memory: create: no resource given")
	}
	if err := store.CheckNew("memory: create", objs); err != nil {
		return err
	}
	specs := copySpecs(objs)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.checkCreate(objs); err != nil {
		return err
	}
	s.feed.Publish(s.insert(objs, specs, s.stamp())...)
	return nil
}

func copySpecs(objs []*resource.Object) []resource.Spec {
	specs := make([]resource.Spec, len(objs))
	for i, o := range objs {
		specs[i] = copySpec(o.Spec)
	}
	return specs
}

// checkCreate checks that objs can be created: no key exists, and each
// mesh-scoped one has its mesh, stored or earlier in objs. The caller
// holds s.mu.
func (s *Store) checkCreate(objs []*resource.Object) error {
	meshes := store.MeshesOf(objs)
	for i, o := range objs {
		key := o.Meta.Key()
		if _, ok := s.tables[o.Meta.Kind].byKey[key]; ok {
			return store.AlreadyExists(o.Meta.Kind, key)
		}
		if key.Mesh == "" {
			continue
		}
		if j, ok := meshes[key.Mesh]; ok && j < i {
			continue
		}
		if _, ok := s.tables[resource.KindMesh].byKey[resource.Key{Name: key.Mesh}]; !ok {
			return store.MeshNotFound(key.Mesh)
		}
	}
	return nil
}

// insert stores objs (checked by checkCreate) with their copied specs,
// sets their meta and returns their events. The caller holds s.mu.
func (s *Store) insert(objs []*resource.Object, specs []resource.Spec, now time.Time) []store.Event {
	events := make([]store.Event, len(objs))
	for i, o := range objs {
		r := &record{meta: o.Meta, spec: specs[i]}
		r.meta.NameExtensions = nil // this store has none
		r.meta.Version = 1
		r.meta.CreationTime = now
		r.meta.ModificationTime = now
		s.tables[o.Meta.Kind].insert(r)
		o.Meta = r.meta
		events[i] = store.Event{Type: store.Created, Kind: r.meta.Kind, Key: r.meta.Key(), Version: 1}
	}
	return events
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, obj *resource.Object) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := checkObject("update", obj); err != nil {
		return err
	}
	spec := copySpec(obj.Spec)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	t := s.tables[obj.Meta.Kind]
	key := obj.Meta.Key()
	r, ok := t.byKey[key]
	if !ok {
		return store.NotFound(obj.Meta.Kind, key)
	}
	if r.meta.Version != obj.Meta.Version {
		return store.Conflict(obj.Meta.Kind, key)
	}
	s.feed.Publish(s.replace(r, obj, spec))
	return nil
}

// replace gives r a new spec and version and obj the stored meta. The
// caller holds s.mu.
func (s *Store) replace(r *record, obj *resource.Object, spec resource.Spec) store.Event {
	r.spec = spec
	r.meta.Version++
	r.meta.ModificationTime = s.stamp()
	obj.Meta = r.meta
	return store.Event{Type: store.Updated, Kind: r.meta.Kind, Key: r.meta.Key(), Version: r.meta.Version}
}

// Upsert implements store.Store.
func (s *Store) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := checkObject("upsert", obj); err != nil {
		return false, err
	}
	created := append([]*resource.Object{obj}, withNew...)
	version := obj.Meta.Version
	obj.Meta.Version = 0 // checked as a new object with the others
	err := store.CheckNew("memory: upsert", created)
	obj.Meta.Version = version
	if err != nil {
		return false, err
	}
	specs := copySpecs(created)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, ErrClosed
	}
	if r, ok := s.tables[obj.Meta.Kind].byKey[obj.Meta.Key()]; ok {
		s.feed.Publish(s.replace(r, obj, specs[0]))
		return false, nil
	}
	if err := s.checkCreate(created); err != nil {
		return false, err
	}
	s.feed.Publish(s.insert(created, specs, s.stamp())...)
	return true, nil
}

// Delete implements store.Store. Deleting a Mesh first deletes every
// resource of that mesh, publishing a Deleted event for each (ordered by
// kind, then name), then the Mesh's own; deleting an owner first deletes
// what it owns.
func (s *Store) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	t, err := s.lookup("delete", kind)
	if err != nil {
		return err
	}
	r, ok := t.byKey[key]
	if !ok {
		return store.NotFound(kind, key)
	}
	if version > 0 && r.meta.Version != version {
		return store.Conflict(kind, key)
	}
	var events []store.Event
	if kind == resource.KindMesh {
		kinds := make([]resource.Kind, 0, len(s.tables))
		for k := range s.tables {
			if k != resource.KindMesh {
				kinds = append(kinds, k)
			}
		}
		sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
		for _, k := range kinds {
			child := s.tables[k]
			lo, hi := child.meshRange(key.Name)
			for _, r := range child.sorted[lo:hi] {
				delete(child.byKey, r.meta.Key())
				events = append(events, store.Event{Type: store.Deleted, Kind: k, Key: r.meta.Key()})
			}
			child.sorted = append(child.sorted[:lo], child.sorted[hi:]...)
		}
	}
	for _, k := range store.Owned(kind) {
		if owned := s.tables[k]; owned.byKey[key] != nil {
			owned.remove(key)
			events = append(events, store.Event{Type: store.Deleted, Kind: k, Key: key})
		}
	}
	t.remove(key)
	events = append(events, store.Event{Type: store.Deleted, Kind: kind, Key: key})
	s.feed.Publish(events...)
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	t, err := s.lookup("get", kind)
	if err != nil {
		return nil, err
	}
	r, ok := t.byKey[key]
	if !ok {
		return nil, store.NotFound(kind, key)
	}
	return r.object(), nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Limit < 0 || opts.Offset < 0 {
		return nil, fmt.Errorf("memory: list %s: limit and offset must not be negative", kind)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	t, err := s.lookup("list", kind)
	if err != nil {
		return nil, err
	}
	all := t.sorted
	if opts.Mesh != "" {
		lo, hi := t.meshRange(opts.Mesh)
		all = all[lo:hi]
	}
	start, end, next := opts.Page(len(all))
	res := &store.ListResult{Total: len(all), NextOffset: next}
	page := all[start:end]
	res.Items = make([]*resource.Object, len(page))
	for i, r := range page {
		res.Items[i] = r.object()
	}
	return res, nil
}

// Count implements store.Store.
func (s *Store) Count(ctx context.Context, kind resource.Kind) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	t, err := s.lookup("count", kind)
	if err != nil {
		return 0, err
	}
	return len(t.byKey), nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan store.Event { return s.feed.Watch(ctx) }

// Ping implements store.Store: it fails once the store is closed.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Close drops every resource; later operations fail with ErrClosed. Watch
// channels are still closed only when their contexts are done.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.tables = nil
	return nil
}
