package sqlrow

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

func TestWrap(t *testing.T) {
	b := Backend("postgres")
	key := resource.Key{Mesh: "default", Name: "web-1"}
	// The store's sentinels name the resource already.
	nf := store.NotFound(resource.KindDataplane, key)
	require.Same(t, nf, b.Wrap(context.Background(), "get", resource.KindDataplane, key, nf))

	err := b.Wrap(context.Background(), "get", resource.KindDataplane, key, errors.New("connection reset"))
	require.EqualError(t, err, `postgres: get Dataplane "default/web-1": connection reset`)
	require.EqualError(t, b.Wrap(context.Background(), "list", resource.KindMesh, resource.Key{}, errors.New("boom")), "postgres: list Mesh: boom")

	// A failure because ctx ended matches ctx.Err().
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = b.Wrap(ctx, "get", resource.KindDataplane, key, errors.New("query interrupted"))
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "query interrupted")
}

func TestDecode(t *testing.T) {
	d, err := Backend("sqlite").Describe("get", resource.KindMesh)
	require.NoError(t, err)
	obj, err := Decode(d, "", "default", 3, []byte(`{}`), 1e9, 2e9)
	require.NoError(t, err)
	require.Equal(t, int64(3), obj.Meta.Version)
	require.Equal(t, FromNanos(1e9), obj.Meta.CreationTime)
	require.Equal(t, "UTC", obj.Meta.ModificationTime.Location().String())

	_, err = Decode(d, "", "default", 3, []byte(`{"mtls":`), 1e9, 2e9)
	require.ErrorContains(t, err, `decode stored spec of Mesh "default"`)
	_, err = Backend("sqlite").Describe("get", "Nope")
	require.ErrorContains(t, err, "sqlite: get:")
}
