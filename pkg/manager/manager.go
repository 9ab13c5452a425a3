// Package manager is the write path of the control plane: it validates
// resources, fills in their stored defaults and keeps the mesh invariants
// (a resource lives in an existing mesh; every new mesh gets its
// allow-all-<mesh> TrafficPermission; the default mesh exists on first start)
// on top of any store.Store.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Manager validates and writes resources.
type Manager struct {
	store store.Store
	log   *slog.Logger
}

// New returns a manager writing to s.
func New(s store.Store, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: s, log: log}
}

// Result tells what Apply did.
type Result struct {
	Created bool
	Object  *resource.Object
}

// CreateOnly as Apply's ifVersion makes the write succeed only when the
// resource does not exist yet (store.ErrAlreadyExists otherwise).
const CreateOnly int64 = -1

// Apply validates obj, fills in its defaults and creates or updates it.
// With ifVersion > 0 the write only succeeds when the stored version is
// ifVersion (store.ErrConflict otherwise, also when there is none); with
// CreateOnly only when there is none (store.ErrAlreadyExists otherwise);
// with 0 it is an unconditional upsert, which other writers cannot make
// fail. A new Mesh is created together with its allow-all-<mesh>
// TrafficPermission, in one store transaction. Invalid input, a read-only
// kind or a missing mesh returns a *resource.ValidationError and stores
// nothing.
func (m *Manager) Apply(ctx context.Context, obj *resource.Object, ifVersion int64) (*Result, error) {
	o, withNew, err := prepare(obj)
	if err != nil {
		return nil, err
	}
	var created bool
	switch {
	case ifVersion > 0:
		o.Meta.Version = ifVersion
		err = m.store.Update(ctx, o)
		if errors.Is(err, store.ErrNotFound) {
			err = store.Conflict(o.Meta.Kind, o.Meta.Key())
		}
	case ifVersion == CreateOnly:
		err = m.store.Create(ctx, append([]*resource.Object{o}, withNew...)...)
		created = true
	default:
		created, err = m.store.Upsert(ctx, o, withNew...)
	}
	if errors.Is(err, store.ErrMeshNotFound) {
		return nil, &resource.ValidationError{Causes: []resource.Cause{{Field: "mesh", Message: fmt.Sprintf("mesh %q does not exist", obj.Meta.Mesh)}}}
	}
	if err != nil {
		return nil, err
	}
	if created {
		m.log.Info("resource created", "type", o.Meta.Kind, "mesh", o.Meta.Mesh, "name", o.Meta.Name)
		return &Result{Created: true, Object: o}, nil
	}
	m.log.Info("resource updated", "type", o.Meta.Kind, "mesh", o.Meta.Mesh, "name", o.Meta.Name, "version", o.Meta.Version)
	return &Result{Object: o}, nil
}

// prepare validates obj and returns the object to store, with its
// defaults, and what is created with it (a new Mesh's allow-all
// TrafficPermission).
func prepare(obj *resource.Object) (o *resource.Object, withNew []*resource.Object, err error) {
	if err := resource.Validate(obj); err != nil {
		return nil, nil, err
	}
	if d, _ := resource.Describe(obj.Meta.Kind); d.ReadOnly {
		return nil, nil, &resource.ValidationError{Causes: []resource.Cause{{Field: "type", Message: fmt.Sprintf("%s is written by the control plane only", obj.Meta.Kind)}}}
	}
	resource.ApplyDefaults(obj)
	o = &resource.Object{Meta: resource.Meta{Kind: obj.Meta.Kind, Mesh: obj.Meta.Mesh, Name: obj.Meta.Name}, Spec: obj.Spec}
	if o.Meta.Kind == resource.KindMesh {
		withNew = append(withNew, allowAll(o.Meta.Name))
	}
	return o, withNew, nil
}

// Create validates objs, fills in their defaults and creates them (a new
// Mesh with its allow-all-<mesh> TrafficPermission) in one store
// transaction: all of them, or, on any error, none (store.ErrAlreadyExists
// when one exists). Invalid input, a read-only kind or a missing mesh
// returns a *resource.ValidationError.
func (m *Manager) Create(ctx context.Context, objs ...*resource.Object) error {
	var all []*resource.Object
	for _, obj := range objs {
		o, withNew, err := prepare(obj)
		if err != nil {
			return err
		}
		all = append(append(all, o), withNew...)
	}
	err := m.store.Create(ctx, all...)
	if errors.Is(err, store.ErrMeshNotFound) {
		return &resource.ValidationError{Causes: []resource.Cause{{Field: "mesh", Message: err.Error()}}}
	}
	if err != nil {
		return err
	}
	for _, o := range all {
		m.log.Info("resource created", "type", o.Meta.Kind, "mesh", o.Meta.Mesh, "name", o.Meta.Name)
	}
	return nil
}

// AllowAllName is the name of the TrafficPermission every new mesh gets.
func AllowAllName(mesh string) string { return "allow-all-" + mesh }

func allowAll(mesh string) *resource.Object {
	return resource.New(mesh, AllowAllName(mesh), &resource.TrafficPermissionSpec{
		Sources:      []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
		Destinations: []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
	})
}

// Delete removes a resource; deleting a Mesh removes everything in it,
// deleting a Dataplane its insight. With ifVersion > 0 it only deletes that
// version, checked by the store in the deleting transaction
// (store.ErrConflict otherwise).
func (m *Manager) Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error {
	if ifVersion < 0 {
		ifVersion = 0
	}
	if err := m.store.Delete(ctx, kind, key, ifVersion); err != nil {
		return err
	}
	m.log.Info("resource deleted", "type", kind, "mesh", key.Mesh, "name", key.Name)
	return nil
}

// EnsureDefaultMesh creates the `default` mesh (and its allow-all
// permission) when the store holds no mesh at all: on a first start.
func (m *Manager) EnsureDefaultMesh(ctx context.Context) error {
	n, err := m.store.Count(ctx, resource.KindMesh)
	if err != nil {
		return fmt.Errorf("count meshes: %w", err)
	}
	if n > 0 {
		return nil
	}
	// Create-only: a control plane starting beside this one may have just
	// created it, and then there is nothing to do.
	_, err = m.Apply(ctx, resource.New("", resource.DefaultMesh, &resource.MeshSpec{}), CreateOnly)
	if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("create default mesh: %w", err)
	}
	return nil
}
