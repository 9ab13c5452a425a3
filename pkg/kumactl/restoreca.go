package kumactl

import (
	"context"
	"fmt"
	"time"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/resource"
)

// caPairWait bounds how long apply waits for the control plane to create a
// mesh's builtin CA before replacing it with the one of the input.
const caPairWait = time.Minute

// caBackend names one builtin CA of one mesh.
type caBackend struct{ mesh, backend string }

// caMaterial knows which Secrets of an input are the CA material of the
// builtin backends its Meshes list. The control plane creates a CA for
// every such backend as soon as the Mesh is stored; writing the input's
// key and certificate over a pair that is still being created could leave
// a key and a certificate of two different CAs, which the control plane
// would replace by a third. So apply waits until the control plane's own
// pair is complete, then replaces it, key and certificate in turn (the
// control plane never replaces a complete pair, even one that does not
// match: see pkg/ca).
type caMaterial struct {
	secrets map[resource.Key]caBackend
	ready   map[caBackend]bool
}

func newCAMaterial(docs []document) *caMaterial {
	m := &caMaterial{secrets: map[resource.Key]caBackend{}, ready: map[caBackend]bool{}}
	for _, d := range docs {
		mesh := d.obj.Mesh()
		if mesh == nil {
			continue
		}
		for _, b := range ca.Builtins(mesh) {
			cb := caBackend{mesh: d.obj.Meta.Name, backend: b.Name}
			m.secrets[resource.Key{Mesh: cb.mesh, Name: ca.CertSecretName(cb.mesh, b.Name)}] = cb
			m.secrets[resource.Key{Mesh: cb.mesh, Name: ca.KeySecretName(cb.mesh, b.Name)}] = cb
		}
	}
	return m
}

// secretGetter is what awaitOwnPair needs of the API client.
type secretGetter interface {
	Get(ctx context.Context, kind resource.Kind, mesh, name string) (*resource.Object, error)
}

// awaitOwnPair returns at once unless obj is CA material of the input; for
// the first such Secret of a backend, it returns when the control plane
// holds both Secrets of that backend.
func (m *caMaterial) awaitOwnPair(ctx context.Context, client secretGetter, obj *resource.Object) error {
	if obj.Meta.Kind != resource.KindSecret {
		return nil
	}
	cb, ok := m.secrets[obj.Meta.Key()]
	if !ok || m.ready[cb] {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, caPairWait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		missing, err := m.missing(ctx, client, cb)
		if err != nil {
			return err
		}
		if missing == "" {
			m.ready[cb] = true
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the control plane did not create the CA %q of mesh %q within %s (Secret %q is missing), so its material cannot be replaced yet: is the mesh's builtin CA working on the control plane?", cb.backend, cb.mesh, caPairWait, missing)
		case <-tick.C:
		}
	}
}

// missing names a Secret of the backend the control plane does not hold
// yet, or is "" when it holds both.
func (m *caMaterial) missing(ctx context.Context, client secretGetter, cb caBackend) (string, error) {
	for _, name := range []string{ca.KeySecretName(cb.mesh, cb.backend), ca.CertSecretName(cb.mesh, cb.backend)} {
		_, err := client.Get(ctx, resource.KindSecret, cb.mesh, name)
		if apiclient.IsNotFound(err) {
			return name, nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", nil
}
