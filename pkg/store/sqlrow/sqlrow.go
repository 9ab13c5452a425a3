// Package sqlrow is what the SQL backends of the store (SQLite, PostgreSQL)
// share about a resource's row: the spec as JSON, the times as Unix
// nanoseconds, and how their errors name the backend, the operation and the
// resource.
package sqlrow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Backend names a SQL backend ("sqlite", "postgres") in its errors.
type Backend string

// Wrap gives a database error its context. The store's sentinel errors
// already name the resource and are returned as they are; an error caused by
// a done ctx is made to match ctx.Err() with errors.Is.
func (b Backend) Wrap(ctx context.Context, op string, kind resource.Kind, key resource.Key, err error) error {
	for _, sentinel := range []error{store.ErrNotFound, store.ErrAlreadyExists, store.ErrConflict, store.ErrMeshNotFound} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w (%v)", cerr, err)
	}
	if key == (resource.Key{}) {
		return fmt.Errorf("%s: %s %s: %w", b, op, kind, err)
	}
	return fmt.Errorf("%s: %s %s %q: %w", b, op, kind, key.String(), err)
}

// Describe returns the descriptor of kind, or an error naming op.
func (b Backend) Describe(op string, kind resource.Kind) (resource.Descriptor, error) {
	d, err := resource.Describe(kind)
	if err != nil {
		return d, fmt.Errorf("%s: %s: %w", b, op, err)
	}
	return d, nil
}

// MarshalSpecs encodes the specs of objs (before a write takes its locks).
func (b Backend) MarshalSpecs(ctx context.Context, op string, objs []*resource.Object) ([][]byte, error) {
	specs := make([][]byte, len(objs))
	for i, o := range objs {
		spec, err := json.Marshal(o.Spec)
		if err != nil {
			return nil, b.Wrap(ctx, op, o.Meta.Kind, o.Meta.Key(), err)
		}
		specs[i] = spec
	}
	return specs, nil
}

// FromNanos is a stored time (Unix nanoseconds) in UTC.
func FromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// Decode builds an object from a row.
func Decode(d resource.Descriptor, mesh, name string, version int64, spec []byte, created, modified int64) (*resource.Object, error) {
	obj := &resource.Object{
		Meta: resource.Meta{
			Kind: d.Kind, Mesh: mesh, Name: name, Version: version,
			CreationTime: FromNanos(created), ModificationTime: FromNanos(modified),
		},
		Spec: d.NewSpec(),
	}
	if err := json.Unmarshal(spec, obj.Spec); err != nil {
		return nil, fmt.Errorf("decode stored spec of %s %q: %w", d.Kind, obj.Meta.Key().String(), err)
	}
	return obj, nil
}
