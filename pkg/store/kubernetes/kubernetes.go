// Package kubernetes is the resource store on the Kubernetes API
// (KUMA_STORE_TYPE=kubernetes): Meshes, TrafficPermissions, Dataplanes,
// DataplaneInsights and ControlPlaneInstances are kuma.io/v1alpha1 custom
// resources, Secrets are Kubernetes Secrets of type system.kuma.io/secret in
// the control plane's namespace, labelled kuma.io/mesh, and GlobalSecrets
// Kubernetes Secrets of type system.kuma.io/global-secret there, without a
// mesh. Reads come from
// controller-runtime's cache; its informers are the change feed (no
// polling). A write returns once the store's own informer has seen it, so
// its event is published (and the cache holds it) before the call returns.
//
// Versions are resourceVersions, read as integers: etcd-backed API servers
// give etcd's revision, which grows with every write (not a count of one
// object's writes). Names: a Dataplane (or insight) `<name>.<namespace>` is
// the custom resource <name> in <namespace>; a name without a dot lives in
// the system namespace (v1alpha1.Names). Names are unique per kind across
// meshes, as Kubernetes keys objects by name. Kubernetes has no
// transactions: see docs/2026-12-06-kubernetes-store.md for how the
// contract's atomicity is approximated.
package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// DefaultSystemNamespace is the control plane's namespace.
const DefaultSystemNamespace = "kuma-system"

// settleTimeout bounds how long a committed write waits for the store's
// informer to deliver it (normally milliseconds); past it the write returns
// anyway, and its event follows later.
const settleTimeout = 30 * time.Second

var setLoggers sync.Once

// ErrClosed is returned by every operation of a closed Store.
var ErrClosed = errors.New("kubernetes store: closed")

// Options configure a Store.
type Options struct {
	// SystemNamespace holds the Secrets and the Dataplanes named without a
	// namespace (default kuma-system).
	SystemNamespace string
	Log             *slog.Logger
	// Now stamps modification times (default time.Now).
	Now func() time.Time
}

// Store is a store.Store on the Kubernetes API.
type Store struct {
	feed   store.Feed
	names  v1alpha1.Names
	client client.Client // direct: writes and reads that must not lag
	cache  cache.Cache
	log    *slog.Logger
	now    func() time.Time
	kinds  map[resource.Kind]*kindState
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// kindState follows what one kind's informer delivered: the highest
// resourceVersion (a write waits until it reaches its own) and the
// deletions writers wait for.
type kindState struct {
	mu       sync.Mutex
	maxRV    int64
	advanced chan struct{} // closed and replaced whenever maxRV grows
	deletes  map[types.UID]chan struct{}
}

// Scheme returns the scheme of the objects the store reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// New connects to the API server, starts the informers of every kind and
// returns once they have listed what is stored (or ctx ends).
func New(ctx context.Context, cfg *rest.Config, opts Options) (*Store, error) {
	if opts.SystemNamespace == "" {
		opts.SystemNamespace = DefaultSystemNamespace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// client-go and controller-runtime log through process-wide loggers:
	// the first store's.
	setLoggers.Do(func() {
		klog.SetSlogLogger(opts.Log.With("component", "client-go"))
		ctrllog.SetLogger(logr.FromSlogHandler(opts.Log.With("component", "controller-runtime").Handler()))
	})
	scheme, err := Scheme()
	if err != nil {
		return nil, fmt.Errorf("kubernetes store: scheme: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("kubernetes store: client for %s: %w", cfg.Host, err)
	}
	ca, err := cache.New(cfg, cache.Options{
		Scheme: scheme,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				// Secrets and GlobalSecrets, told apart by their type.
				Namespaces: map[string]cache.Config{opts.SystemNamespace: {}},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("kubernetes store: cache: %w", err)
	}
	s := &Store{
		names: v1alpha1.Names{SystemNamespace: opts.SystemNamespace}, client: c, cache: ca,
		log: opts.Log, now: opts.Now, kinds: map[resource.Kind]*kindState{}, done: make(chan struct{}),
	}
	var synced []toolscache.InformerSynced
	for _, d := range resource.Descriptors() {
		if supported(d.Kind) != nil {
			continue
		}
		s.kinds[d.Kind] = &kindState{advanced: make(chan struct{}), deletes: map[types.UID]chan struct{}{}}
		inf, err := ca.GetInformer(ctx, newObject(d.Kind), cache.BlockUntilSynced(false))
		if err != nil {
			if meta.IsNoMatchError(err) {
				return nil, fmt.Errorf("kubernetes store: the API server does not serve %s: install the CRDs (kumactl install crds | kubectl apply -f -): %w", d.Kind, err)
			}
			return nil, fmt.Errorf("kubernetes store: informer of %s: %w", d.Kind, err)
		}
		reg, err := inf.AddEventHandler(s.handler(d.Kind))
		if err != nil {
			return nil, fmt.Errorf("kubernetes store: informer of %s: %w", d.Kind, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		if err := ca.Start(runCtx); err != nil {
			s.log.Error("kubernetes store: informers stopped", "err", err)
		}
	}()
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		close(stop)
	}()
	if !toolscache.WaitForCacheSync(stop, synced...) {
		s.Close()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kubernetes store: informers did not list %s in time: %w", cfg.Host, err)
		}
		return nil, fmt.Errorf("kubernetes store: informers of %s stopped before listing", cfg.Host)
	}
	// The direct client learns the API's kinds on first use: now, rather
	// than in the first write.
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.log.Info("kubernetes store ready", "server", cfg.Host, "system_namespace", opts.SystemNamespace)
	return s, nil
}

// Names maps the store's names of namespaced kinds to Kubernetes names.
func (s *Store) Names() v1alpha1.Names { return s.names }

// handler turns one kind's informer notifications into store events.
func (s *Store) handler(kind resource.Kind) toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.observe(kind, nil, o) },
		UpdateFunc: func(old, o any) { s.observe(kind, old, o) },
		DeleteFunc: func(o any) { s.observeDelete(kind, o) },
	}
}

func (s *Store) observe(kind resource.Kind, old, o any) {
	obj, ok := o.(client.Object)
	if !ok {
		return
	}
	rv, _ := v1alpha1.ParseVersion(obj.GetResourceVersion())
	key, isResource := s.keyOf(kind, obj)
	var events []store.Event
	if prev, ok := old.(client.Object); ok {
		if prev.GetResourceVersion() == obj.GetResourceVersion() {
			return // a resync: nothing changed
		}
		prevKey, wasResource := s.keyOf(kind, prev)
		switch {
		case wasResource && (!isResource || prevKey != key):
			// Another mesh (or label) is another key: the old one is gone.
			events = append(events, store.Event{Type: store.Deleted, Kind: kind, Key: prevKey})
			if isResource {
				events = append(events, store.Event{Type: store.Created, Kind: kind, Key: key, Version: rv})
			}
		case isResource && wasResource:
			events = append(events, store.Event{Type: store.Updated, Kind: kind, Key: key, Version: rv})
		case isResource:
			events = append(events, store.Event{Type: store.Created, Kind: kind, Key: key, Version: rv})
		}
	} else if isResource {
		events = append(events, store.Event{Type: store.Created, Kind: kind, Key: key, Version: rv})
	}
	s.feed.Publish(events...)
	s.advance(kind, rv, "")
}

func (s *Store) observeDelete(kind resource.Kind, o any) {
	if tomb, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = tomb.Obj
	}
	obj, ok := o.(client.Object)
	if !ok {
		return
	}
	if key, ok := s.keyOf(kind, obj); ok {
		s.feed.Publish(store.Event{Type: store.Deleted, Kind: kind, Key: key})
	}
	rv, _ := v1alpha1.ParseVersion(obj.GetResourceVersion())
	s.advance(kind, rv, obj.GetUID())
}

// advance records what an informer delivered and wakes the writers waiting for it.
func (s *Store) advance(kind resource.Kind, rv int64, deleted types.UID) {
	ks := s.kinds[kind]
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if rv > ks.maxRV {
		ks.maxRV = rv
		close(ks.advanced)
		ks.advanced = make(chan struct{})
	}
	if ch, ok := ks.deletes[deleted]; ok && deleted != "" {
		close(ch)
		delete(ks.deletes, deleted)
	}
}

// settle waits until the kind's informer has delivered resourceVersion rv
// (a write's own), so that its event is published and the cache holds it.
// The write is committed whatever happens here: a wait cut short is
// logged, not an error.
func (s *Store) settle(ctx context.Context, kind resource.Kind, rv int64) {
	ks := s.kinds[kind]
	timeout := time.NewTimer(settleTimeout)
	defer timeout.Stop()
	for {
		ks.mu.Lock()
		reached, ch := ks.maxRV >= rv, ks.advanced
		ks.mu.Unlock()
		if reached {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-timeout.C:
			s.log.Warn("kubernetes store: a write was not seen by the informer in time", "type", kind, "resource_version", rv)
			return
		}
	}
}

// expectDelete registers a wait for the deletion of the object uid, before
// deleting it; the returned function waits, cancel forgets the wait.
func (s *Store) expectDelete(kind resource.Kind, uid types.UID) (wait func(ctx context.Context), cancel func()) {
	ks := s.kinds[kind]
	ch := make(chan struct{})
	ks.mu.Lock()
	ks.deletes[uid] = ch
	ks.mu.Unlock()
	cancel = func() {
		ks.mu.Lock()
		if ks.deletes[uid] == ch {
			delete(ks.deletes, uid)
		}
		ks.mu.Unlock()
	}
	wait = func(ctx context.Context) {
		timeout := time.NewTimer(settleTimeout)
		defer timeout.Stop()
		select {
		case <-ch:
		case <-ctx.Done():
			cancel()
		case <-s.done:
			cancel()
		case <-timeout.C:
			cancel()
			s.log.Warn("kubernetes store: a deletion was not seen by the informer in time", "type", kind, "uid", uid)
		}
	}
	return wait, cancel
}

// check is the start of every operation.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// errorFor maps an error of the API server to the store's.
func errorFor(op string, kind resource.Kind, key resource.Key, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case apierrors.IsAlreadyExists(err):
		return store.AlreadyExists(kind, key)
	case apierrors.IsConflict(err):
		return store.Conflict(kind, key)
	case apierrors.IsNotFound(err) && op == "create":
		// Creating: the namespace is what is missing.
		return fmt.Errorf("kubernetes store: create %s %q: %w", kind, key, err)
	case apierrors.IsNotFound(err):
		return store.NotFound(kind, key)
	case apierrors.IsInvalid(err):
		return invalid(err)
	}
	return fmt.Errorf("kubernetes store: %s %s %q: %w", op, kind, key, err)
}

// invalid turns the API server's refusal of an object (422) into a
// *resource.ValidationError with its causes.
func invalid(err error) error {
	var status apierrors.APIStatus
	ve := &resource.ValidationError{}
	if errors.As(err, &status) && status.Status().Details != nil {
		for _, c := range status.Status().Details.Causes {
			ve.Causes = append(ve.Causes, resource.Cause{Field: c.Field, Message: c.Message})
		}
	}
	if len(ve.Causes) == 0 {
		ve.Causes = []resource.Cause{{Message: err.Error()}}
	}
	return ve
}

// lookup reads the object of a key from the cache or, when the cache does
// not have it (yet: another writer's object), from the API server.
func (s *Store) lookup(ctx context.Context, kind resource.Kind, key resource.Key) (client.Object, error) {
	obj, err := s.read(ctx, s.cache, kind, key)
	if errors.Is(err, store.ErrNotFound) {
		return s.fresh(ctx, kind, key)
	}
	return obj, err
}

// fresh reads the object of a key from the API server.
func (s *Store) fresh(ctx context.Context, kind resource.Kind, key resource.Key) (client.Object, error) {
	return s.read(ctx, s.client, kind, key)
}

// read reads the Kubernetes object of a key with r (the cache or the API
// server); it may be another mesh's object of the same name.
func (s *Store) read(ctx context.Context, r client.Reader, kind resource.Kind, key resource.Key) (client.Object, error) {
	nn, err := s.objectKey(kind, key)
	if err != nil {
		return nil, store.NotFound(kind, key)
	}
	obj := newObject(kind)
	if err := r.Get(ctx, nn, obj); err != nil {
		return nil, errorFor("get", kind, key, err)
	}
	return obj, nil
}

// ownKey tells whether the stored object o has the key asked for: a name
// used by another mesh is not this mesh's resource.
func (s *Store) ownKey(kind resource.Kind, o client.Object, key resource.Key) bool {
	k, ok := s.keyOf(kind, o)
	return ok && k == key
}

// takenElsewhere is the error for a name another mesh's resource has.
func (s *Store) takenElsewhere(kind resource.Kind, key resource.Key, o client.Object) error {
	other, _ := s.keyOf(kind, o)
	return fmt.Errorf("%w: the name is used in mesh %q (in Kubernetes, names are unique per kind across meshes)", store.AlreadyExists(kind, key), other.Mesh)
}

func version(o client.Object) int64 {
	v, _ := v1alpha1.ParseVersion(o.GetResourceVersion())
	return v
}

// setMeta gives obj the stored meta of o.
func (s *Store) setMeta(obj *resource.Object, o client.Object) error {
	m, err := v1alpha1.Meta(o)
	if err != nil {
		return err
	}
	m.Kind, m.Mesh, m.Name = obj.Meta.Kind, obj.Meta.Mesh, obj.Meta.Name
	obj.Meta = m
	return nil
}

// meshOwner returns the owner reference of a mesh (nil when absent).
func meshOwner(m client.Object) []metav1.OwnerReference {
	if m == nil {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Mesh", Name: m.GetName(), UID: m.GetUID()}}
}

// Create implements store.Store. The checks (meshes exist, keys are free)
// run before anything is written; the objects are then created one by
// one, each waited for, and deleted again if a later one fails.
func (s *Store) Create(ctx context.Context, objs ...*resource.Object) error {
	_, err := s.create(ctx, objs)
	return err
}

// create is Create, also telling which object failed (-1: none or unknown).
func (s *Store) create(ctx context.Context, objs []*resource.Object) (int, error) {
	failed, err := s.createObjects(ctx, objs)
	if err == nil {
		failed = -1
	}
	return failed, err
}

func (s *Store) createObjects(ctx context.Context, objs []*resource.Object) (int, error) {
	if err := s.check(ctx); err != nil {
		return -1, err
	}
	if len(objs) == 0 {
		return -1, errors.New("kubernetes store: create: nothing to create")
	}
	if err := store.CheckNew("kubernetes store: create", objs); err != nil {
		return -1, err
	}
	kubeObjs := make([]client.Object, len(objs))
	for i, o := range objs {
		if err := supported(o.Meta.Kind); err != nil {
			return i, err
		}
		ko, err := s.fromResource(o)
		if err != nil {
			return i, fmt.Errorf("kubernetes store: create: %w", err)
		}
		kubeObjs[i] = ko
	}
	meshes := store.MeshesOf(objs)
	stored := map[string]client.Object{} // meshes that exist already
	for i, o := range objs {
		d, _ := resource.Describe(o.Meta.Kind)
		if d.Scoped {
			if j, ok := meshes[o.Meta.Mesh]; !ok || j > i {
				m, err := s.lookup(ctx, resource.KindMesh, resource.Key{Name: o.Meta.Mesh})
				if errors.Is(err, store.ErrNotFound) {
					return i, store.MeshNotFound(o.Meta.Mesh)
				}
				if err != nil {
					return i, err
				}
				stored[o.Meta.Mesh] = m
			}
		}
		if len(objs) > 1 {
			// All or nothing: find what would fail before writing.
			cur, err := s.lookup(ctx, o.Meta.Kind, o.Meta.Key())
			switch {
			case err == nil && s.ownKey(o.Meta.Kind, cur, o.Meta.Key()):
				return i, store.AlreadyExists(o.Meta.Kind, o.Meta.Key())
			case err == nil:
				return i, s.takenElsewhere(o.Meta.Kind, o.Meta.Key(), cur)
			case !errors.Is(err, store.ErrNotFound):
				return i, err
			}
		}
	}
	var created []client.Object
	for i, o := range objs {
		ko := kubeObjs[i]
		owner := stored[o.Meta.Mesh]
		if owner == nil {
			for j := range i {
				if objs[j].Meta.Kind == resource.KindMesh && objs[j].Meta.Name == o.Meta.Mesh {
					owner = kubeObjs[j]
				}
			}
		}
		switch {
		case o.Meta.Kind == resource.KindDataplaneInsight:
			// An insight goes with its Dataplane (when garbage collection
			// runs, also if the Dataplane is deleted by others).
			if dp, err := s.lookup(ctx, resource.KindDataplane, o.Meta.Key()); err == nil && s.ownKey(resource.KindDataplane, dp, o.Meta.Key()) {
				ko.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Dataplane", Name: dp.GetName(), UID: dp.GetUID()}})
			}
		case o.Meta.Mesh != "":
			ko.SetOwnerReferences(meshOwner(owner))
		}
		if err := s.client.Create(ctx, ko); err != nil {
			err = errorFor("create", o.Meta.Kind, o.Meta.Key(), err)
			if errors.Is(err, store.ErrAlreadyExists) {
				if cur, gerr := s.fresh(ctx, o.Meta.Kind, o.Meta.Key()); gerr == nil && !s.ownKey(o.Meta.Kind, cur, o.Meta.Key()) {
					err = s.takenElsewhere(o.Meta.Kind, o.Meta.Key(), cur)
				}
			}
			s.rollback(objs[:len(created)], created)
			return i, err
		}
		s.settle(ctx, o.Meta.Kind, version(ko))
		created = append(created, ko)
	}
	for i, o := range objs {
		if err := s.setMeta(o, created[i]); err != nil {
			return i, err
		}
	}
	return -1, nil
}

// rollback deletes what a failed Create made, newest first.
func (s *Store) rollback(objs []*resource.Object, created []client.Object) {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for i := len(created) - 1; i >= 0; i-- {
		if err := s.deleteObject(ctx, objs[i].Meta.Kind, created[i], 0); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("kubernetes store: undoing a failed create", "type", objs[i].Meta.Kind, "name", objs[i].Meta.Key().String(), "err", err)
		}
	}
}

// Update implements store.Store: a replace conditional on the stored
// resourceVersion, which the API server checks.
func (s *Store) Update(ctx context.Context, obj *resource.Object) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := store.CheckObject(obj); err != nil {
		return fmt.Errorf("kubernetes store: update: %w", err)
	}
	kind, key := obj.Meta.Kind, obj.Meta.Key()
	if err := supported(kind); err != nil {
		return err
	}
	cur, err := s.lookup(ctx, kind, key)
	if err == nil && version(cur) != obj.Meta.Version {
		cur, err = s.fresh(ctx, kind, key) // the cache may lag behind
	}
	switch {
	case err != nil:
		return err
	case !s.ownKey(kind, cur, key):
		return store.NotFound(kind, key)
	case obj.Meta.Version <= 0 || version(cur) != obj.Meta.Version:
		return store.Conflict(kind, key)
	}
	next, err := s.withContent(cur, obj, s.now().UTC())
	if err != nil {
		return fmt.Errorf("kubernetes store: update: %w", err)
	}
	if err := s.client.Update(ctx, next); err != nil {
		return errorFor("update", kind, key, err)
	}
	s.settle(ctx, kind, version(next))
	return s.setMeta(obj, next)
}

// Upsert implements store.Store: create, or replace at the version just
// read; a write that loses a race is tried again.
func (s *Store) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	if err := store.CheckObject(obj); err != nil {
		return false, fmt.Errorf("kubernetes store: upsert: %w", err)
	}
	kind, key := obj.Meta.Kind, obj.Meta.Key()
	if err := supported(kind); err != nil {
		return false, err
	}
	if err := store.CheckNew("kubernetes store: upsert", append([]*resource.Object{{Meta: resource.Meta{Kind: kind, Mesh: key.Mesh, Name: key.Name}, Spec: obj.Spec}}, withNew...)); err != nil {
		return false, err
	}
	for {
		if err := s.check(ctx); err != nil {
			return false, err
		}
		if key.Mesh != "" {
			if _, err := s.lookup(ctx, resource.KindMesh, resource.Key{Name: key.Mesh}); errors.Is(err, store.ErrNotFound) {
				return false, store.MeshNotFound(key.Mesh)
			} else if err != nil {
				return false, err
			}
		}
		cur, err := s.lookup(ctx, kind, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			fresh := &resource.Object{Meta: resource.Meta{Kind: kind, Mesh: key.Mesh, Name: key.Name}, Spec: obj.Spec}
			failed, err := s.create(ctx, append([]*resource.Object{fresh}, withNew...))
			if failed == 0 && errors.Is(err, store.ErrAlreadyExists) {
				continue // created by another writer meanwhile: replace it
			}
			if err != nil {
				return false, err
			}
			obj.Meta = fresh.Meta
			return true, nil
		case err != nil:
			return false, err
		case !s.ownKey(kind, cur, key):
			return false, s.takenElsewhere(kind, key, cur)
		}
		next, err := s.withContent(cur, obj, s.now().UTC())
		if err != nil {
			return false, fmt.Errorf("kubernetes store: upsert: %w", err)
		}
		err = s.client.Update(ctx, next)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // changed or deleted meanwhile
		}
		if err != nil {
			return false, errorFor("upsert", kind, key, err)
		}
		s.settle(ctx, kind, version(next))
		return false, s.setMeta(obj, next)
	}
}

// Delete implements store.Store. The version is checked first; deleting a
// Mesh then deletes every resource of the mesh (what this store's cache
// holds), deleting a Dataplane its insight, one by one, each waited for;
// the object itself goes last, conditional on its UID (and version).
func (s *Store) Delete(ctx context.Context, kind resource.Kind, key resource.Key, ver int64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := supported(kind); err != nil {
		return err
	}
	for {
		cur, err := s.lookup(ctx, kind, key)
		if err == nil && ver > 0 && version(cur) != ver {
			cur, err = s.fresh(ctx, kind, key)
		}
		switch {
		case err != nil:
			return err
		case !s.ownKey(kind, cur, key):
			return store.NotFound(kind, key)
		case ver > 0 && version(cur) != ver:
			return store.Conflict(kind, key)
		}
		if kind == resource.KindMesh {
			if err := s.deleteMeshContents(ctx, key.Name); err != nil {
				return err
			}
		}
		for _, owned := range store.Owned(kind) {
			if err := s.deleteIfThere(ctx, owned, key); err != nil {
				return err
			}
		}
		err = s.deleteObject(ctx, kind, cur, ver)
		if errors.Is(err, store.ErrConflict) && ver == 0 {
			continue // replaced by another object of the same name meanwhile
		}
		return err
	}
}

// deleteIfThere deletes the resource of a key, if it exists.
func (s *Store) deleteIfThere(ctx context.Context, kind resource.Kind, key resource.Key) error {
	err := s.Delete(ctx, kind, key, 0)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// deleteMeshContents deletes every mesh-scoped resource of mesh.
func (s *Store) deleteMeshContents(ctx context.Context, mesh string) error {
	for _, d := range resource.Descriptors() {
		if !d.Scoped || supported(d.Kind) != nil {
			continue
		}
		list := newList(d.Kind)
		if err := s.cache.List(ctx, list); err != nil {
			return fmt.Errorf("kubernetes store: list %s of mesh %s: %w", d.Kind, mesh, err)
		}
		for _, o := range items(list) {
			if key, ok := s.keyOf(d.Kind, o); ok && key.Mesh == mesh {
				if err := s.deleteIfThere(ctx, d.Kind, key); err != nil {
					return fmt.Errorf("kubernetes store: delete mesh %s: %w", mesh, err)
				}
			}
		}
	}
	return nil
}

// deleteObject deletes o if it still is the object of that UID (and
// version, when ver > 0) and waits for the informer to see it go.
func (s *Store) deleteObject(ctx context.Context, kind resource.Kind, o client.Object, ver int64) error {
	uid := o.GetUID()
	pre := metav1.Preconditions{UID: &uid}
	if ver > 0 {
		rv := v1alpha1.FormatVersion(ver)
		pre.ResourceVersion = &rv
	}
	key, _ := s.keyOf(kind, o)
	wait, cancel := s.expectDelete(kind, uid)
	if err := s.client.Delete(ctx, o, client.Preconditions(pre)); err != nil {
		cancel()
		return errorFor("delete", kind, key, err)
	}
	wait(ctx)
	return nil
}

// Get implements store.Store, from the cache.
func (s *Store) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := supported(kind); err != nil {
		return nil, err
	}
	o, err := s.read(ctx, s.cache, kind, key)
	if err != nil {
		return nil, err
	}
	if !s.ownKey(kind, o, key) {
		return nil, store.NotFound(kind, key)
	}
	return s.toResource(kind, o)
}

// List implements store.Store, from the cache. An object that does not
// convert (which the schemas and the admission webhook keep out) is left
// out and logged.
func (s *Store) List(ctx context.Context, kind resource.Kind, opts store.ListOptions) (*store.ListResult, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := supported(kind); err != nil {
		return nil, err
	}
	if opts.Limit < 0 || opts.Offset < 0 {
		return nil, fmt.Errorf("kubernetes store: list %s: limit and offset must not be negative", kind)
	}
	list := newList(kind)
	if err := s.cache.List(ctx, list); err != nil {
		return nil, fmt.Errorf("kubernetes store: list %s: %w", kind, err)
	}
	var all []*resource.Object
	for _, o := range items(list) {
		key, ok := s.keyOf(kind, o)
		if !ok || opts.Mesh != "" && key.Mesh != opts.Mesh {
			continue
		}
		obj, err := s.toResource(kind, o)
		if err != nil {
			s.log.Warn("kubernetes store: skipping an object that does not convert", "type", kind, "err", err)
			continue
		}
		all = append(all, obj)
	}
	slices.SortFunc(all, func(a, b *resource.Object) int {
		if c := strings.Compare(a.Meta.Mesh, b.Meta.Mesh); c != 0 {
			return c
		}
		return strings.Compare(a.Meta.Name, b.Meta.Name)
	})
	start, end, next := opts.Page(len(all))
	res := &store.ListResult{Total: len(all), NextOffset: next}
	page := all[start:end]
	res.Items = page
	return res, nil
}

// Count implements store.Store, from the cache.
func (s *Store) Count(ctx context.Context, kind resource.Kind) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if err := supported(kind); err != nil {
		return 0, err
	}
	list := newList(kind)
	if err := s.cache.List(ctx, list); err != nil {
		return 0, fmt.Errorf("kubernetes store: count %s: %w", kind, err)
	}
	n := 0
	for _, o := range items(list) {
		if _, ok := s.keyOf(kind, o); ok {
			n++
		}
	}
	return n, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context) <-chan store.Event { return s.feed.Watch(ctx) }

// Ping implements store.Store: the API server answers and serves the CRDs.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.client.List(ctx, &v1alpha1.MeshList{}, client.Limit(1)); err != nil {
		return fmt.Errorf("kubernetes store: ping: %w", err)
	}
	return nil
}

// Close stops the informers.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	<-s.done
	return nil
}
