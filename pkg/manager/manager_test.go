package manager_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

func dp(name string, port uint32) *resource.Object {
	return resource.New("default", name, &resource.DataplaneSpec{Networking: &resource.Networking{
		Address: "127.0.0.2",
		Inbound: []resource.Inbound{{Port: port, Tags: map[string]string{resource.ServiceTag: "backend"}}},
	}})
}

func TestEnsureDefaultMeshOnlyOnFirstStart(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	m := manager.New(st, nil)
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	require.NoError(t, m.EnsureDefaultMesh(ctx), "idempotent")
	_, err := st.Get(ctx, resource.KindTrafficPermission, resource.Key{Mesh: "default", Name: "allow-all-default"})
	require.NoError(t, err)

	// A store that already has a mesh is not a first start: no default mesh is added.
	st2 := memory.New()
	m2 := manager.New(st2, nil)
	_, err = m2.Apply(ctx, resource.New("", "prod", &resource.MeshSpec{}), 0)
	require.NoError(t, err)
	require.NoError(t, m2.EnsureDefaultMesh(ctx))
	_, err = st2.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestApplyCreatesThenUpdatesWithDefaults(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	m := manager.New(st, nil)
	mesh := resource.New("", "default", &resource.MeshSpec{Metrics: &resource.Metrics{
		EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus"}},
	}})
	res, err := m.Apply(ctx, mesh, 0)
	require.NoError(t, err)
	require.True(t, res.Created)
	require.Equal(t, uint32(5670), *res.Object.Mesh().Metrics.Backends[0].Conf.Port)

	res, err = m.Apply(ctx, resource.New("", "default", &resource.MeshSpec{}), 0)
	require.NoError(t, err)
	require.False(t, res.Created)
	require.Equal(t, int64(2), res.Object.Meta.Version)
	stored, err := st.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.NoError(t, err)
	require.Nil(t, stored.Mesh().Metrics)
}

func TestApplyRefusesInvalidAndMissingMesh(t *testing.T) {
	ctx := context.Background()
	m := manager.New(memory.New(), nil)
	_, err := m.Apply(ctx, dp("d", 0), 0)
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "networking.inbound[0].port", ve.Causes[0].Field)

	_, err = m.Apply(ctx, dp("d", 80), 0)
	require.ErrorAs(t, err, &ve)
	require.Equal(t, []resource.Cause{{Field: "mesh", Message: `mesh "default" does not exist`}}, ve.Causes)
}

func TestConcurrentUnconditionalAppliesAllSucceed(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	m := manager.New(st, nil)
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Apply(ctx, dp("same", uint32(1000+i)), 0)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got, err := st.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "same"})
	require.NoError(t, err)
	require.Equal(t, int64(20), got.Meta.Version, "every apply wrote once")
}

// faultyStore fails the writes that would store a TrafficPermission, and
// runs beforeDelete before a delete reaches the store.
type faultyStore struct {
	store.Store
	beforeDelete func()
}

var errInjected = errors.New("injected failure")

func hasPermission(objs []*resource.Object) bool {
	for _, o := range objs {
		if o.Meta.Kind == resource.KindTrafficPermission {
			return true
		}
	}
	return false
}

func (f *faultyStore) Create(ctx context.Context, objs ...*resource.Object) error {
	if hasPermission(objs) {
		return errInjected
	}
	return f.Store.Create(ctx, objs...)
}

func (f *faultyStore) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if hasPermission(append([]*resource.Object{obj}, withNew...)) {
		return false, errInjected
	}
	return f.Store.Upsert(ctx, obj, withNew...)
}

func (f *faultyStore) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if f.beforeDelete != nil {
		f.beforeDelete()
	}
	return f.Store.Delete(ctx, kind, key, version)
}

func TestMeshAndAllowAllAreOneWrite(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	m := manager.New(&faultyStore{Store: st}, nil)
	for _, ifVersion := range []int64{0, manager.CreateOnly} {
		_, err := m.Apply(ctx, resource.New("", "prod", &resource.MeshSpec{}), ifVersion)
		require.ErrorIs(t, err, errInjected)
		_, err = st.Get(ctx, resource.KindMesh, resource.Key{Name: "prod"})
		require.ErrorIs(t, err, store.ErrNotFound, "no mesh without its allow-all (ifVersion %d)", ifVersion)
	}
	require.ErrorIs(t, m.EnsureDefaultMesh(ctx), errInjected)
	n, err := st.Count(ctx, resource.KindMesh)
	require.NoError(t, err)
	require.Zero(t, n)

	// Without the fault both are there, with the same creation time.
	m = manager.New(st, nil)
	res, err := m.Apply(ctx, resource.New("", "prod", &resource.MeshSpec{}), 0)
	require.NoError(t, err)
	require.True(t, res.Created)
	tp, err := st.Get(ctx, resource.KindTrafficPermission, resource.Key{Mesh: "prod", Name: "allow-all-prod"})
	require.NoError(t, err)
	require.Equal(t, res.Object.Meta.CreationTime, tp.Meta.CreationTime)
	// Updating the mesh does not bring back a deleted allow-all.
	require.NoError(t, m.Delete(ctx, resource.KindTrafficPermission, tp.Meta.Key(), 0))
	res, err = m.Apply(ctx, resource.New("", "prod", &resource.MeshSpec{}), 0)
	require.NoError(t, err)
	require.False(t, res.Created)
	_, err = st.Get(ctx, resource.KindTrafficPermission, tp.Meta.Key())
	require.ErrorIs(t, err, store.ErrNotFound)
}

func TestConditionalDeleteNeverDeletesANewerVersion(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	fs := &faultyStore{Store: st}
	m := manager.New(fs, nil)
	require.NoError(t, manager.New(st, nil).EnsureDefaultMesh(ctx))
	res, err := m.Apply(ctx, dp("d", 80), 0)
	require.NoError(t, err)
	// Another writer updates the dataplane after the caller read version 1,
	// just before its delete reaches the store.
	fs.beforeDelete = func() {
		_, err := manager.New(st, nil).Apply(ctx, dp("d", 81), 0)
		require.NoError(t, err)
	}
	err = m.Delete(ctx, resource.KindDataplane, res.Object.Meta.Key(), res.Object.Meta.Version)
	require.ErrorIs(t, err, store.ErrConflict)
	got, err := st.Get(ctx, resource.KindDataplane, res.Object.Meta.Key())
	require.NoError(t, err, "the newer version is kept")
	require.EqualValues(t, 81, got.Dataplane().Networking.Inbound[0].Port)
}

func TestReadOnlyKindsAreRefused(t *testing.T) {
	ctx := context.Background()
	m := manager.New(memory.New(), nil)
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	_, err := m.Apply(ctx, resource.New("default", "d", &resource.DataplaneInsightSpec{}), 0)
	var ve *resource.ValidationError
	require.ErrorAs(t, err, &ve)
	require.Equal(t, "type", ve.Causes[0].Field)
}

func TestConditionalApplyAndDelete(t *testing.T) {
	ctx := context.Background()
	m := manager.New(memory.New(), nil)
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	_, err := m.Apply(ctx, dp("d", 80), 3)
	require.True(t, errors.Is(err, store.ErrConflict), "a conditional write to a missing resource conflicts")
	_, err = m.Apply(ctx, dp("d", 80), 0)
	require.NoError(t, err)
	_, err = m.Apply(ctx, dp("d", 81), 2)
	require.ErrorIs(t, err, store.ErrConflict)
	require.ErrorIs(t, m.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "d"}, 2), store.ErrConflict)
	require.NoError(t, m.Delete(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "d"}, 1))
}

func TestCreateOnly(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	m := manager.New(st, nil)
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	res, err := m.Apply(ctx, dp("d", 80), manager.CreateOnly)
	require.NoError(t, err)
	require.True(t, res.Created)
	_, err = m.Apply(ctx, dp("d", 81), manager.CreateOnly)
	require.ErrorIs(t, err, store.ErrAlreadyExists)
	got, err := st.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "d"})
	require.NoError(t, err)
	require.EqualValues(t, 80, got.Dataplane().Networking.Inbound[0].Port, "the existing resource is untouched")
}

// Create writes all of its objects in one transaction, or none of them.
func TestCreateAllOrNothing(t *testing.T) {
	st := memory.New()
	m := manager.New(st, nil)
	ctx := t.Context()
	require.NoError(t, m.EnsureDefaultMesh(ctx))
	a, b := resource.NewSecret("default", "a", []byte("A")), resource.NewSecret("default", "b", []byte("B"))
	require.NoError(t, m.Create(ctx, a, b))
	n, err := st.Count(ctx, resource.KindSecret)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// One exists: neither is written.
	err = m.Create(ctx, resource.NewSecret("default", "c", []byte("C")), resource.NewSecret("default", "a", []byte("A2")))
	require.ErrorIs(t, err, store.ErrAlreadyExists)
	_, err = st.Get(ctx, resource.KindSecret, resource.Key{Mesh: "default", Name: "c"})
	require.ErrorIs(t, err, store.ErrNotFound)

	// Invalid input, a read-only kind, a missing mesh: validation errors, nothing written.
	var verr *resource.ValidationError
	require.ErrorAs(t, m.Create(ctx, resource.New("default", "d", &resource.SecretSpec{Data: "%%"})), &verr)
	require.ErrorAs(t, m.Create(ctx, resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{})), &verr)
	require.ErrorAs(t, m.Create(ctx, resource.NewSecret("nope", "e", []byte("E"))), &verr)
	require.Equal(t, "mesh", verr.Causes[0].Field)

	// A new Mesh comes with its allow-all permission, as through Apply.
	require.NoError(t, m.Create(ctx, resource.New("", "other", &resource.MeshSpec{})))
	_, err = st.Get(ctx, resource.KindTrafficPermission, resource.Key{Mesh: "other", Name: manager.AllowAllName("other")})
	require.NoError(t, err)
}
