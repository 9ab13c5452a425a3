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
// package storetest. Every write is one transaction: it happens whole or not
// at all, and its events are published after it commits, in commit order.
//
// Get returns a copy; List returns items sorted by mesh, then name; Watch
// delivers an Event for every committed change, in commit order.
type Store interface {
	// Create stores new resources in one transaction: all of them, or, on
	// any error, none. Each must have Meta.Version 0; on success each given
	// object gets Version 1 and CreationTime = ModificationTime = the
	// commit's time. A mesh-scoped resource needs its mesh, stored already
	// or created earlier in the same call (ErrMeshNotFound otherwise); a key
	// that exists, or is given twice, is ErrAlreadyExists. One Created event
	// per object, in the given order.
	Create(ctx context.Context, objs ...*resource.Object) error
	// Update replaces a resource whose stored version equals Meta.Version;
	// otherwise ErrConflict (ErrNotFound when it does not exist). On success
	// it increments Version and sets ModificationTime on the given object,
	// and copies the stored CreationTime to it.
	Update(ctx context.Context, obj *resource.Object) error
	// Upsert stores obj whatever is stored under its key and whatever its
	// Meta.Version says: it creates it (Version 1) or replaces the stored
	// spec (Version+1, CreationTime kept), setting the stored meta on obj.
	// It never fails because other writers create, change or delete the
	// same key at the same time (no ErrConflict, ErrAlreadyExists or
	// ErrNotFound). A mesh-scoped obj whose mesh does not exist is
	// ErrMeshNotFound. When it creates obj it also creates withNew in the
	// same transaction, as Create(obj, withNew...) would (and fails whole
	// as Create would); when obj existed, withNew is left alone. created
	// tells which happened.
	Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (created bool, err error)
	// Delete removes a resource (ErrNotFound when absent). With version > 0
	// it deletes only the stored version `version`, checked in the same
	// transaction (ErrConflict otherwise); with 0 whatever is stored.
	// Deleting a Mesh deletes every resource of that mesh, and deleting an
	// owner (see resource.Descriptor.Owner) deletes the resources of the
	// same key it owns, in the same transaction; their Deleted events come
	// before the deleted resource's own.
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error
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

// Page returns the bounds [start, end) of the page o selects among total
// sorted items, and the offset of the next page (-1 on the last page).
func (o ListOptions) Page(total int) (start, end, next int) {
	start, end, next = min(o.Offset, total), total, -1
	if o.Limit > 0 && total-start > o.Limit {
		end, next = start+o.Limit, o.Offset+o.Limit
	}
	return start, end, next
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

// CheckObject checks what a backend's Create, Update and Upsert are given: a spec of
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

// CheckNew checks the objects a backend's Create is given (and the ones its
// Upsert may create): each passes CheckObject, has version 0, and no key is
// given twice. op names the operation in errors.
func CheckNew(op string, objs []*resource.Object) error {
	seen := make(map[kindKey]bool, len(objs))
	for _, obj := range objs {
		if err := CheckObject(obj); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		key := obj.Meta.Key()
		if obj.Meta.Version != 0 {
			return fmt.Errorf("%s %s %q: version must be 0, not %d", op, obj.Meta.Kind, key.String(), obj.Meta.Version)
		}
		kk := kindKey{obj.Meta.Kind, key}
		if seen[kk] {
			return AlreadyExists(obj.Meta.Kind, key)
		}
		seen[kk] = true
	}
	return nil
}

type kindKey struct {
	kind resource.Kind
	key  resource.Key
}

// MeshesOf returns the names of the meshes among objs, for checking that
// the mesh-scoped ones among them have their mesh: a mesh created earlier
// in the same call counts.
func MeshesOf(objs []*resource.Object) map[string]int {
	out := map[string]int{}
	for i, o := range objs {
		if o.Meta.Kind == resource.KindMesh {
			if _, ok := out[o.Meta.Name]; !ok {
				out[o.Meta.Name] = i
			}
		}
	}
	return out
}

// Owned returns the kinds a resource of kind owns (their Descriptor.Owner is
// kind): deleting it deletes theirs of the same key.
func Owned(kind resource.Kind) []resource.Kind {
	var out []resource.Kind
	for _, d := range resource.Descriptors() {
		if d.Owner == kind {
			out = append(out, d.Kind)
		}
	}
	return out
}
