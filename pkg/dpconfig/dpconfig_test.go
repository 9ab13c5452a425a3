package dpconfig

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

func mesh(name string, metrics bool) *resource.Object {
	spec := &resource.MeshSpec{}
	if metrics {
		spec.Metrics = &resource.Metrics{EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus"}}}
	}
	o := resource.New("", name, spec)
	resource.ApplyDefaults(o)
	return o
}

func dp(meshName, name string, nw resource.Networking) *resource.Object {
	return resource.New(meshName, name, &resource.DataplaneSpec{Networking: &nw})
}

func tags(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestGenerate(t *testing.T) {
	frontend := dp("default", "frontend-1", resource.Networking{
		Address: "127.0.0.2",
		Inbound: []resource.Inbound{{Port: 8080, ServicePort: 18080, Tags: tags(resource.ServiceTag, "frontend", resource.ProtocolTag, "http")}},
		Outbound: []resource.Outbound{
			{Port: 10001, Tags: tags(resource.ServiceTag, "backend")},
			{Port: 10002, Address: "127.0.0.9", Tags: tags(resource.ServiceTag, "db.svc:5432")},
			{Port: 10003, Tags: tags(resource.ServiceTag, "nowhere")},
		},
	})
	backends := []*resource.Object{
		dp("default", "backend-2", resource.Networking{Address: "127.0.0.4", Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "backend", resource.ProtocolTag, "http")}}}),
		dp("default", "backend-1", resource.Networking{Address: "127.0.0.3", Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "backend", resource.ProtocolTag, "HTTP")}}}),
		dp("default", "db", resource.Networking{Address: "127.0.0.5", Inbound: []resource.Inbound{
			{Port: 5432, Address: "127.0.0.6", Tags: tags(resource.ServiceTag, "db.svc:5432", resource.ProtocolTag, "http")},
			{Port: 5433, Tags: tags(resource.ServiceTag, "db.svc:5432")},
		}}),
		dp("other", "backend-x", resource.Networking{Address: "127.0.0.7", Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "backend")}}}),
	}
	ix := NewIndex(Inputs{Meshes: []*resource.Object{mesh("default", true), mesh("other", false)}, Dataplanes: append(backends, frontend)})
	got, err := Generate(ix, frontend)
	require.NoError(t, err)
	want := &meshv1.ProxyConfig{
		Mesh: "default", Name: "frontend-1",
		Inbounds: []*meshv1.Inbound{{
			Address: "127.0.0.2", Port: 8080, ServiceAddress: "127.0.0.1", ServicePort: 18080,
			Tags: tags(resource.ServiceTag, "frontend", resource.ProtocolTag, "http"), Protocol: "http",
			ClusterName: "localhost_18080", Name: "inbound:127.0.0.2:8080",
		}},
		Outbounds: []*meshv1.Outbound{
			{Address: "127.0.0.1", Port: 10001, Service: "backend", Protocol: "http", ClusterName: "backend", Name: "outbound:127.0.0.1:10001",
				Endpoints: []*meshv1.Endpoint{
					{Address: "127.0.0.3", Port: 8080, Dataplane: "default/backend-1"},
					{Address: "127.0.0.4", Port: 8080, Dataplane: "default/backend-2"},
				}},
			// Inbounds disagree on the protocol: tcp. The inbound's own address wins.
			{Address: "127.0.0.9", Port: 10002, Service: "db.svc:5432", Protocol: "tcp", ClusterName: "db_svc_5432", Name: "outbound:127.0.0.9:10002",
				Endpoints: []*meshv1.Endpoint{
					{Address: "127.0.0.5", Port: 5433, Dataplane: "default/db"},
					{Address: "127.0.0.6", Port: 5432, Dataplane: "default/db"},
				}},
			{Address: "127.0.0.1", Port: 10003, Service: "nowhere", Protocol: "tcp", ClusterName: "nowhere", Name: "outbound:127.0.0.1:10003"},
		},
		Metrics: &meshv1.Metrics{
			Address: "127.0.0.2", Port: 5670, Path: "/metrics", Tags: tags(resource.ServiceTag, "dataplane-metrics"),
			TlsMode: resource.TLSModeActiveMTLSBackend, Addresses: []string{"127.0.0.2"},
		},
	}
	require.True(t, proto.Equal(want, got), "got:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(want))

	other, err := Generate(ix, backends[3])
	require.NoError(t, err)
	require.Nil(t, other.GetMetrics(), "metrics off in the mesh: no endpoint")

	_, err = Generate(ix, dp("ghost", "x", resource.Networking{Address: "127.0.0.1"}))
	require.ErrorContains(t, err, `mesh "ghost" does not exist`)
}

func TestGenerateMetricsOverrideAndAggregate(t *testing.T) {
	port := uint32(1234)
	off := false
	d := resource.New("default", "example", &resource.DataplaneSpec{
		Networking: &resource.Networking{Address: "127.0.0.2"},
		Metrics: &resource.MetricsBackend{Type: "prometheus", Conf: &resource.PrometheusConf{
			Port: &port, Path: "/non-standard-path",
			Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 9000}, {Name: "off", Port: 9001, Enabled: &off}},
		}},
	})
	resource.ApplyDefaults(d)
	got, err := Generate(NewIndex(Inputs{Meshes: []*resource.Object{mesh("default", true)}, Dataplanes: []*resource.Object{d}}), d)
	require.NoError(t, err)
	require.Equal(t, uint32(1234), got.GetMetrics().GetPort())
	require.Equal(t, "/non-standard-path", got.GetMetrics().GetPath())
	require.Len(t, got.GetMetrics().GetAggregate(), 1)
	require.Equal(t, "app", got.GetMetrics().GetAggregate()[0].GetName())
	require.Equal(t, "/metrics", got.GetMetrics().GetAggregate()[0].GetPath())
}

func TestClusterName(t *testing.T) {
	for in, want := range map[string]string{"backend": "backend", "db.svc:5432": "db_svc_5432", "a-b_c": "a-b_c", "ü": "_"} {
		require.Equal(t, want, ClusterName(in), in)
	}
}

func TestServiceVersionsFollowEndpoints(t *testing.T) {
	client := dp("default", "client", resource.Networking{Address: "127.0.0.2",
		Outbound: []resource.Outbound{{Port: 10001, Tags: tags(resource.ServiceTag, "backend")}}})
	backend := func(addr string) *resource.Object {
		return dp("default", "backend-1", resource.Networking{Address: addr, Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "backend")}}})
	}
	unrelated := dp("default", "other", resource.Networking{Address: "127.0.0.9", Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "other")}}})
	meshes := []*resource.Object{mesh("default", false)}
	v1 := NewIndex(Inputs{Meshes: meshes, Dataplanes: []*resource.Object{client, backend("127.0.0.3")}}).ServiceVersions(client)
	require.Equal(t, v1, NewIndex(Inputs{Meshes: meshes, Dataplanes: []*resource.Object{client, backend("127.0.0.3"), unrelated}}).ServiceVersions(client),
		"a dataplane of another service does not change the client's config")
	require.NotEqual(t, v1, NewIndex(Inputs{Meshes: meshes, Dataplanes: []*resource.Object{client, backend("127.0.0.4")}}).ServiceVersions(client))
	require.NotEqual(t, v1, NewIndex(Inputs{Meshes: meshes, Dataplanes: []*resource.Object{client}}).ServiceVersions(client))
}
