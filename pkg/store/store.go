// Package store defines the resource store contract shared by every backend
// (memory, SQLite, later PostgreSQL): CRUD with optimistic concurrency, paged
// listing by mesh, cascading mesh deletion and a change-event feed.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Store keeps resources. Implementations must satisfy the contract suite in
// package storetest.
//
//   - Create stores a new resource; its Meta.Version must be 0. It sets
//     Version to 1 and CreationTime = ModificationTime = now on the object it
//     was given. A mesh-scoped resource whose mesh does not exist is refused
//     with ErrMeshNotFound; an existing key with ErrAlreadyExists.
//   - Update replaces a resource whose stored version equals Meta.Version;
//     otherwise ErrConflict (ErrNotFound when it does not exist). On success it
//     increments Version and sets ModificationTime on the given object.
//   - Delete removes a resource (ErrNotFound when absent). Deleting a Mesh
//     deletes every resource of that mesh in the same transaction.
//   - Get returns a copy; List returns items sorted by mesh, then name.
//   - Watch delivers an Event for every committed change, in commit order.
type Store interface {
	Create(ctx context.Context, obj *resource.Object) error
	Update(ctx context.Context, obj *resource.Object) error
	Delete(ctx context.Context, kind resource.Kind, key resource.Key) error
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
	List(ctx context.Context, kind resource.Kind, opts ListOptions) (*ListResult, error)
	// Count returns the number of resources of a kind (all meshes).
	Count(ctx context.Context, kind resource.Kind) (int, error)
	// Watch subscribes to change events until ctx is done; the channel is then closed.
	Watch(ctx context.Context) <-chan Event
	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	Close() error
}

// ListOptions select and page a listing.
type ListOptions struct {
	// Mesh limits the listing to one mesh; empty lists every mesh.
	Mesh string
	// Limit is the page size; 0 means everything.
	Limit int
	// Offset skips that many items of the sorted listing.
	Offset int
}

// ListResult is one page of a listing.
type ListResult struct {
	Items []*resource.Object
	// Total is the number of items matching the listing, over all pages.
	Total int
	// NextOffset is the offset of the next page, or -1 on the last page.
	NextOffset int
}

// Sentinel errors; test with errors.Is.
var (
	ErrNotFound      = errors.New("resource not found")
	ErrAlreadyExists = errors.New("resource already exists")
	ErrConflict      = errors.New("resource was changed concurrently (stale version)")
	ErrMeshNotFound  = errors.New("mesh not found")
)

// NotFound wraps ErrNotFound with the resource's identity.
func NotFound(kind resource.Kind, key resource.Key) error {
	return fmt.Errorf("%s %q: %w", kind, key.String(), ErrNotFound)
}

// AlreadyExists wraps ErrAlreadyExists with the resource's identity.
func AlreadyExists(kind resource.Kind, key resource.Key) error {
	return fmt.Errorf("%s %q: %w", kind, key.String(), ErrAlreadyExists)
}

// Conflict wraps ErrConflict with the resource's identity.
func Conflict(kind resource.Kind, key resource.Key) error {
	return fmt.Errorf("%s %q: %w", kind, key.String(), ErrConflict)
}

// MeshNotFound wraps ErrMeshNotFound with the mesh name.
func MeshNotFound(mesh string) error {
	return fmt.Errorf("mesh %q: %w", mesh, ErrMeshNotFound)
}

// EventType says what happened to a resource.
type EventType int

// Event types. Resync means events were dropped because the subscriber fell
// behind: it must re-read whatever it derives from the store.
const (
	Created EventType = iota + 1
	Updated
	Deleted
	Resync
)

func (t EventType) String() string {
	switch t {
	case Created:
		return "created"
	case Updated:
		return "updated"
	case Deleted:
		return "deleted"
	case Resync:
		return "resync"
	}
	return "unknown"
}

// Event is one committed change.
type Event struct {
	Type EventType
	Kind resource.Kind
	Key  resource.Key
	// Version is the resource's version after the change (0 for deletions and Resync).
	Version int64
}

// CheckObject checks what a backend's Create and Update are given: a spec of
// the object's kind, a name, and a mesh exactly for mesh-scoped kinds.
func CheckObject(obj *resource.Object) error {
	if obj == nil || obj.Spec == nil {
		return errors.New("object and its spec must not be nil")
	}
	d, err := resource.Describe(obj.Meta.Kind)
	if err != nil {
		return err
	}
	if obj.Spec.Kind() != obj.Meta.Kind {
		return fmt.Errorf("%s %q: spec is a %s", obj.Meta.Kind, obj.Meta.Key(), obj.Spec.Kind())
	}
	if obj.Meta.Name == "" {
		return fmt.Errorf("%s: name must not be empty", obj.Meta.Kind)
	}
	if d.Scoped && obj.Meta.Mesh == "" {
		return fmt.Errorf("%s %q: mesh must not be empty", obj.Meta.Kind, obj.Meta.Name)
	}
	if !d.Scoped && obj.Meta.Mesh != "" {
		return fmt.Errorf("%s %q: a %s belongs to no mesh", obj.Meta.Kind, obj.Meta.Name, obj.Meta.Kind)
	}
	return nil
}
