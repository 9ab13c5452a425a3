package memory_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T, opts ...memory.Option) *memory.Store {
	s := memory.New(opts...)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestContract(t *testing.T) {
	storetest.RunContract(t, func(t *testing.T) store.Store { return newStore(t) })
}

func TestClock(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 123, time.FixedZone("X", 3600))
	now := t0
	s := newStore(t, memory.WithClock(func() time.Time { return now }))
	ctx := t.Context()
	m := storetest.Mesh("default")
	require.NoError(t, s.Create(ctx, m))
	require.Equal(t, t0.UTC(), m.Meta.CreationTime)
	require.Equal(t, t0.UTC(), m.Meta.ModificationTime)

	now = t0.Add(time.Hour)
	require.NoError(t, s.Update(ctx, m))
	got, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.NoError(t, err)
	require.Equal(t, t0.UTC(), got.Meta.CreationTime)
	require.Equal(t, now.UTC(), got.Meta.ModificationTime)
	require.Equal(t, got.Meta, m.Meta)
}

func TestClosed(t *testing.T) {
	s := memory.New()
	ctx := t.Context()
	require.NoError(t, s.Create(ctx, storetest.Mesh("default")))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Ping(ctx), memory.ErrClosed)
	require.ErrorIs(t, s.Create(ctx, storetest.Mesh("other")), memory.ErrClosed)
	_, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.ErrorIs(t, err, memory.ErrClosed)
	_, err = s.List(ctx, resource.KindMesh, store.ListOptions{})
	require.ErrorIs(t, err, memory.ErrClosed)
}

func TestRejectsInvalidInput(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Create(ctx, storetest.Mesh("default")))
	noMesh := storetest.Dataplane("", "dp", 1)
	require.Error(t, s.Create(ctx, noMesh))
	meshInMesh := storetest.Mesh("m")
	meshInMesh.Meta.Mesh = "default"
	require.Error(t, s.Create(ctx, meshInMesh))
	wrongKind := storetest.Dataplane("default", "dp", 1)
	wrongKind.Meta.Kind = resource.KindTrafficPermission
	require.Error(t, s.Create(ctx, wrongKind))
	require.Error(t, s.Create(ctx, &resource.Object{Meta: resource.Meta{Kind: resource.KindMesh, Name: "x"}}))
	_, err := s.Get(ctx, "Nope", resource.Key{Name: "x"})
	require.Error(t, err)
	require.NotErrorIs(t, err, store.ErrNotFound)
	_, err = s.List(ctx, resource.KindMesh, store.ListOptions{Limit: -1})
	require.Error(t, err)
}

func TestDeepCopy(t *testing.T) {
	port := uint32(5670)
	yes := true
	regex := "http2_act.*"
	spec := &resource.MeshSpec{
		MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{
			Name: "ca-1", Type: "builtin",
			DpCert: &resource.DpCert{Rotation: &resource.DpCertRotation{Expiration: "1d"}},
			Conf:   &resource.BuiltinCAConf{CACert: &resource.BuiltinCACert{RSAbits: 2048, Expiration: "10y"}},
		}}},
		Metrics: &resource.Metrics{EnabledBackend: "prom", Backends: []resource.MetricsBackend{{
			Name: "prom", Type: "prometheus",
			Conf: &resource.PrometheusConf{
				Port: &port, Path: "/metrics", Tags: map[string]string{"a": "b"}, SkipMTLS: &yes,
				Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 8000, Enabled: &yes}},
				Envoy:     &resource.PrometheusEnvoy{FilterRegex: &regex, UsedOnly: &yes},
				TLS:       &resource.PrometheusTLS{Mode: resource.TLSModeProvidedTLS},
			},
		}}},
	}
	s := newStore(t)
	ctx := t.Context()
	m := resource.New("", "default", spec)
	require.NoError(t, s.Create(ctx, m))
	got, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.NoError(t, err)
	require.Equal(t, spec, got.Spec)

	// Every pointer, slice and map of the copy is its own.
	c := got.Mesh()
	*c.Metrics.Backends[0].Conf.Port = 1
	*c.Metrics.Backends[0].Conf.SkipMTLS = false
	*c.Metrics.Backends[0].Conf.Envoy.FilterRegex = "x"
	c.Metrics.Backends[0].Conf.Tags["a"] = "c"
	c.Metrics.Backends[0].Conf.Aggregate[0].Name = "other"
	c.MTLS.Backends[0].Conf.CACert.RSAbits = 1
	c.MTLS.Backends[0].DpCert.Rotation.Expiration = "2d"
	again, err := s.Get(ctx, resource.KindMesh, resource.Key{Name: "default"})
	require.NoError(t, err)
	require.Equal(t, spec, again.Spec)
	require.Equal(t, uint32(5670), port)

	// Empty (non-nil) slices and maps stay empty rather than becoming nil.
	dp := resource.New("default", "dp", &resource.DataplaneSpec{Networking: &resource.Networking{
		Inbound: []resource.Inbound{{Port: 1, Tags: map[string]string{}}}, Outbound: []resource.Outbound{},
	}})
	require.NoError(t, s.Create(ctx, dp))
	gotDP, err := s.Get(ctx, resource.KindDataplane, resource.Key{Mesh: "default", Name: "dp"})
	require.NoError(t, err)
	require.Equal(t, dp.Spec, gotDP.Spec)
	require.NotNil(t, gotDP.Dataplane().Networking.Outbound)
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, func(b *testing.B, seed []*resource.Object) store.Store {
		s := memory.New()
		b.Cleanup(func() { _ = s.Close() })
		storetest.Seed(b, s, seed)
		return s
	})
}
