package webhook

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// APIMeshes is a MeshReader that asks the API server itself (Reader must
// not be an informer's cache, e.g. a manager's APIReader or a plain
// client): a Mesh created a moment before, by the same `kubectl apply`,
// must be found, and a cache may not have seen it yet.
type APIMeshes struct {
	Reader client.Reader
}

// Get implements MeshReader; it reads Meshes only.
func (m APIMeshes) Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error) {
	if kind != resource.KindMesh {
		return nil, fmt.Errorf("webhook: APIMeshes reads Meshes, not %s", kind)
	}
	var mesh v1alpha1.Mesh
	err := m.Reader.Get(ctx, client.ObjectKey{Name: key.Name}, &mesh)
	if apierrors.IsNotFound(err) {
		return nil, store.NotFound(kind, key)
	}
	if err != nil {
		return nil, fmt.Errorf("get Mesh %q: %w", key.Name, err)
	}
	return v1alpha1.Names{}.ToObject(&mesh)
}
