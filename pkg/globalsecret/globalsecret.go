// Package globalsecret keeps the control plane's own secrets (GlobalSecret
// resources: token signing keys, the admin token, serving CAs) in the store
// that every replica shares: each is created once, by whichever replica
// comes first, and read by all.
package globalsecret

import (
	"context"
	"errors"
	"fmt"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Store is what the package needs of the store.
type Store interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
	Create(ctx context.Context, objs ...*resource.Object) error
}

// Read returns the bytes of the GlobalSecret name; nil (and no error) when
// there is none.
func Read(ctx context.Context, st Store, name string) ([]byte, error) {
	o, err := st.Get(ctx, resource.KindGlobalSecret, resource.Key{Name: name})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read GlobalSecret %s: %w", name, err)
	}
	data, err := o.GlobalSecret().Bytes()
	if err != nil {
		return nil, fmt.Errorf("GlobalSecret %s is corrupt: %w", name, err)
	}
	return data, nil
}

// Ensure returns the bytes of the GlobalSecret name. When there is none it
// calls create for them (and for other resources to create in the same
// transaction) and creates it; when another replica created it meanwhile,
// it returns that one's bytes. created tells whether this call created it.
func Ensure(ctx context.Context, st Store, name string, create func() (data []byte, with []*resource.Object, err error)) (data []byte, created bool, err error) {
	if data, err = Read(ctx, st, name); err != nil || data != nil {
		return data, false, err
	}
	data, with, err := create()
	if err != nil {
		return nil, false, err
	}
	err = st.Create(ctx, append([]*resource.Object{resource.NewGlobalSecret(name, data)}, with...)...)
	if errors.Is(err, store.ErrAlreadyExists) {
		// Another replica was first: its secret is the secret.
		if data, err = Read(ctx, st, name); err == nil && data == nil {
			err = fmt.Errorf("GlobalSecret %s: created by another control plane, then deleted", name)
		}
		return data, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("create GlobalSecret %s: %w", name, err)
	}
	return data, true, nil
}
