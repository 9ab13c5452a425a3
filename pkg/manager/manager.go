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

// maxUpsertAttempts bounds the retries of an unconditional upsert racing
// with other writers.
const maxUpsertAttempts = 5

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
// ifVersion (store.ErrConflict otherwise); with CreateOnly only when there
// is none; with 0 it is an unconditional upsert. Invalid input returns a
// *resource.ValidationError and stores nothing.
func (m *Manager) Apply(ctx context.Context, obj *resource.Object, ifVersion int64) (*Result, error) {
	if err := resource.Validate(obj); err != nil {
		return nil, err
	}
	resource.ApplyDefaults(obj)
	for attempt := 1; ; attempt++ {
		res, err := m.applyOnce(ctx, obj, ifVersion)
		retry := ifVersion == 0 && attempt < maxUpsertAttempts &&
			(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound))
		if !retry {
			return res, err
		}
	}
}

func (m *Manager) applyOnce(ctx context.Context, obj *resource.Object, ifVersion int64) (*Result, error) {
	key := obj.Meta.Key()
	existing, err := m.store.Get(ctx, obj.Meta.Kind, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if ifVersion > 0 {
			return nil, store.Conflict(obj.Meta.Kind, key)
		}
		o := &resource.Object{Meta: resource.Meta{Kind: obj.Meta.Kind, Mesh: obj.Meta.Mesh, Name: obj.Meta.Name}, Spec: obj.Spec}
		if err := m.store.Create(ctx, o); err != nil {
			if errors.Is(err, store.ErrMeshNotFound) {
				return nil, &resource.ValidationError{Causes: []resource.Cause{{Field: "mesh", Message: fmt.Sprintf("mesh %q does not exist", obj.Meta.Mesh)}}}
			}
			return nil, err
		}
		if o.Meta.Kind == resource.KindMesh {
			if err := m.createAllowAll(ctx, o.Meta.Name); err != nil {
				return nil, err
			}
		}
		m.log.Info("resource created", "type", o.Meta.Kind, "mesh", o.Meta.Mesh, "name", o.Meta.Name)
		return &Result{Created: true, Object: o}, nil
	case err != nil:
		return nil, err
	case ifVersion == CreateOnly:
		return nil, store.AlreadyExists(obj.Meta.Kind, key)
	}
	version := existing.Meta.Version
	if ifVersion > 0 {
		version = ifVersion
	}
	o := &resource.Object{Meta: existing.Meta, Spec: obj.Spec}
	o.Meta.Version = version
	if err := m.store.Update(ctx, o); err != nil {
		return nil, err
	}
	m.log.Info("resource updated", "type", o.Meta.Kind, "mesh", o.Meta.Mesh, "name", o.Meta.Name, "version", o.Meta.Version)
	return &Result{Object: o}, nil
}

// AllowAllName is the name of the TrafficPermission every new mesh gets.
func AllowAllName(mesh string) string { return "allow-all-" + mesh }

func (m *Manager) createAllowAll(ctx context.Context, mesh string) error {
	tp := resource.New(mesh, AllowAllName(mesh), &resource.TrafficPermissionSpec{
		Sources:      []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
		Destinations: []resource.Selector{{Match: map[string]string{resource.ServiceTag: "*"}}},
	})
	err := m.store.Create(ctx, tp)
	if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("create %s: %w", AllowAllName(mesh), err)
	}
	return nil
}

// Delete removes a resource; deleting a Mesh removes everything in it.
// With ifVersion > 0 it only deletes that version.
func (m *Manager) Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error {
	if ifVersion > 0 {
		existing, err := m.store.Get(ctx, kind, key)
		if err != nil {
			return err
		}
		if existing.Meta.Version != ifVersion {
			return store.Conflict(kind, key)
		}
	}
	if err := m.store.Delete(ctx, kind, key); err != nil {
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
	_, err = m.Apply(ctx, resource.New("", resource.DefaultMesh, &resource.MeshSpec{}), 0)
	if err != nil {
		return fmt.Errorf("create default mesh: %w", err)
	}
	return nil
}
