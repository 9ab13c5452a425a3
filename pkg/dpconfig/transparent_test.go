package dpconfig

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// A Kubernetes-like mesh: echo's two Pods carry their Service's ClusterIP
// as the vip of their inbound; web is transparently proxied.
func transparentMesh() (web, plain *resource.Object, others []*resource.Object) {
	web = dp("default", "web-1", resource.Networking{
		Address: "10.0.0.5",
		Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "web", resource.ProtocolTag, "http"), VIPs: []string{"10.96.0.5:80"}}},
		Outbound: []resource.Outbound{
			{Address: "10.96.0.20", Port: 80, Tags: tags(resource.ServiceTag, "backend")},
			{Port: 10001, Tags: tags(resource.ServiceTag, "echo")},
			// The explicit outbound wins over the vip of the same address.
			{Address: "10.96.0.17", Port: 80, Tags: tags(resource.ServiceTag, "backend")},
		},
		TransparentProxying: &resource.TransparentProxying{RedirectPortInbound: 15006, RedirectPortOutbound: 15001},
	})
	plain = dp("default", "plain", resource.Networking{
		Address: "10.0.0.9",
		Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "plain")}},
	})
	others = []*resource.Object{
		dp("default", "echo-2", resource.Networking{Address: "10.0.0.7", Inbound: []resource.Inbound{{Port: 9000, Tags: tags(resource.ServiceTag, "echo"), VIPs: []string{"10.96.0.17:80", "10.96.0.17:81"}}}}),
		dp("default", "echo-1", resource.Networking{Address: "10.0.0.6", Inbound: []resource.Inbound{{Port: 9000, Tags: tags(resource.ServiceTag, "echo"), VIPs: []string{"10.96.0.17:80"}}}}),
		dp("default", "backend-1", resource.Networking{Address: "10.0.0.8", Inbound: []resource.Inbound{{Port: 7000, Tags: tags(resource.ServiceTag, "backend")}}}),
		// Two services claim one address: the first by name has it.
		dp("default", "zzz", resource.Networking{Address: "10.0.0.10", Inbound: []resource.Inbound{{Port: 1, Tags: tags(resource.ServiceTag, "zzz"), VIPs: []string{"10.96.0.99:80"}}}}),
		dp("default", "aaa", resource.Networking{Address: "10.0.0.11", Inbound: []resource.Inbound{{Port: 1, Tags: tags(resource.ServiceTag, "aaa"), VIPs: []string{"10.96.0.99:80"}}}}),
		// Another mesh's addresses are not this mesh's.
		dp("other", "x", resource.Networking{Address: "10.0.0.12", Inbound: []resource.Inbound{{Port: 1, Tags: tags(resource.ServiceTag, "x"), VIPs: []string{"10.96.1.1:80"}}}}),
	}
	return web, plain, others
}

func TestGenerateTransparent(t *testing.T) {
	web, plain, others := transparentMesh()
	ix := NewIndex(Inputs{Meshes: []*resource.Object{mesh("default", false), mesh("other", false)}, Dataplanes: append(others, web, plain)})
	got, err := Generate(ix, web)
	require.NoError(t, err)

	require.True(t, proto.Equal(&meshv1.TransparentProxy{Address: "0.0.0.0", RedirectPortInbound: 15006, RedirectPortOutbound: 15001, OutboundPassthrough: true}, got.TransparentProxy), "%v", got.TransparentProxy)
	require.Len(t, got.Inbounds, 1)
	require.True(t, got.Inbounds[0].Transparent, "a transparent proxy's inbounds have no socket: the redirect delivers them")
	require.Equal(t, "inbound:10.0.0.5:8080", got.Inbounds[0].Name)

	echoEndpoints := []*meshv1.Endpoint{{Address: "10.0.0.6", Port: 9000, Dataplane: "default/echo-1"}, {Address: "10.0.0.7", Port: 9000, Dataplane: "default/echo-2"}}
	backendEndpoints := []*meshv1.Endpoint{{Address: "10.0.0.8", Port: 7000, Dataplane: "default/backend-1"}}
	webEndpoints := []*meshv1.Endpoint{{Address: "10.0.0.5", Port: 8080, Dataplane: "default/web-1"}}
	want := []*meshv1.Outbound{
		{Address: "10.96.0.20", Port: 80, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:10.96.0.20:80", Endpoints: backendEndpoints, Transparent: true},
		// A loopback outbound keeps its listener: loopback traffic is never redirected.
		{Address: "127.0.0.1", Port: 10001, Service: "echo", Protocol: "tcp", ClusterName: "echo", Name: "outbound:127.0.0.1:10001", Endpoints: echoEndpoints},
		{Address: "10.96.0.17", Port: 80, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:10.96.0.17:80", Endpoints: backendEndpoints, Transparent: true},
		// The mesh's virtual addresses, by address, each once.
		{Address: "10.96.0.5", Port: 80, Service: "web", Protocol: "http", ClusterName: "web", Name: "outbound:10.96.0.5:80", Endpoints: webEndpoints, Transparent: true},
		{Address: "10.96.0.17", Port: 81, Service: "echo", Protocol: "tcp", ClusterName: "echo", Name: "outbound:10.96.0.17:81", Endpoints: echoEndpoints, Transparent: true},
		{Address: "10.96.0.99", Port: 80, Service: "aaa", Protocol: "tcp", ClusterName: "aaa", Name: "outbound:10.96.0.99:80",
			Endpoints: []*meshv1.Endpoint{{Address: "10.0.0.11", Port: 1, Dataplane: "default/aaa"}}, Transparent: true},
	}
	require.Len(t, got.Outbounds, len(want))
	for i := range want {
		require.True(t, proto.Equal(want[i], got.Outbounds[i]), "outbound %d:\nwant %v\ngot  %v", i, want[i], got.Outbounds[i])
	}

	p, err := Generate(ix, plain)
	require.NoError(t, err)
	require.Nil(t, p.TransparentProxy)
	require.Empty(t, p.Outbounds, "a dataplane without transparent proxying gets no outbound from virtual addresses")
	require.False(t, p.Inbounds[0].Transparent)
}

func TestGenerateTransparentWithoutPassthrough(t *testing.T) {
	web, _, others := transparentMesh()
	m := mesh("default", false)
	m.Mesh().Networking = &resource.MeshNetworking{Outbound: &resource.MeshOutbound{Passthrough: new(bool)}}
	ix := NewIndex(Inputs{Meshes: []*resource.Object{m}, Dataplanes: append(others, web)})
	got, err := Generate(ix, web)
	require.NoError(t, err)
	require.False(t, got.TransparentProxy.OutboundPassthrough)
}

// TestServiceVersionsFollowVirtualAddresses: a transparent proxy's config
// changes with its mesh's virtual addresses and their services' endpoints,
// so the fingerprint does; another proxy's does not.
func TestServiceVersionsFollowVirtualAddresses(t *testing.T) {
	web, plain, others := transparentMesh()
	versions := func(dps ...*resource.Object) (string, string) {
		ix := NewIndex(Inputs{Meshes: []*resource.Object{mesh("default", false)}, Dataplanes: append(dps, web, plain)})
		return ix.ServiceVersions(web), ix.ServiceVersions(plain)
	}
	w0, p0 := versions(others...)
	w1, p1 := versions(others...)
	require.Equal(t, w0, w1, "same content, same fingerprint")
	require.Equal(t, p0, p1)

	more := append([]*resource.Object{dp("default", "aaa-2", resource.Networking{Address: "10.0.0.13", Inbound: []resource.Inbound{{Port: 1, Tags: tags(resource.ServiceTag, "aaa")}}})}, others...)
	w2, p2 := versions(more...)
	require.NotEqual(t, w0, w2, "a new endpoint of a service web reaches only at its virtual address")
	require.Equal(t, p0, p2)

	moved := append([]*resource.Object{dp("default", "new", resource.Networking{Address: "10.0.0.14", Inbound: []resource.Inbound{{Port: 1, Tags: tags(resource.ServiceTag, "new"), VIPs: []string{"10.96.0.200:80"}}}})}, others...)
	w3, p3 := versions(moved...)
	require.NotEqual(t, w0, w3, "a new virtual address")
	require.Equal(t, p0, p3)
}

// TestGenerateTransparentScrapeTargets: in a mesh with mTLS and metrics, a
// transparently proxied dataplane gets one outbound per other dataplane's
// metrics endpoint served over mTLS and per other dataplane's inbound at
// its own address (a cluster to that address alone, verified as the
// target's service), so that a scraper beside it reaches them over mTLS
// with its own identity; not for its own, not for a metrics endpoint that
// skips mTLS, not in a mesh without mTLS, not for a dataplane without
// transparent proxying. A new target changes the scraper's fingerprint.
func TestGenerateTransparentScrapeTargets(t *testing.T) {
	withMTLS := func(on bool) *resource.Object {
		spec := &resource.MeshSpec{Metrics: &resource.Metrics{EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus"}}}}
		if on {
			spec.MTLS = &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}}
		}
		m := resource.New("", "default", spec)
		resource.ApplyDefaults(m)
		return m
	}
	metricsPort := uint32(1234)
	tproxy := &resource.TransparentProxying{RedirectPortInbound: 15006, RedirectPortOutbound: 15001}
	prom := dp("default", "prometheus-1", resource.Networking{Address: "10.0.0.2", TransparentProxying: tproxy,
		Inbound: []resource.Inbound{{Port: 9090, Tags: tags(resource.ServiceTag, "prometheus-server")}}})
	echo := dp("default", "echo-1", resource.Networking{Address: "10.0.0.6",
		Inbound: []resource.Inbound{{Port: 8000, Tags: tags(resource.ServiceTag, "echo")}}})
	echo.Dataplane().Metrics = &resource.MetricsBackend{Type: "prometheus", Conf: &resource.PrometheusConf{Port: &metricsPort}}
	skip := true
	plain := dp("default", "plain-1", resource.Networking{Address: "10.0.0.7",
		Inbound: []resource.Inbound{{Port: 8000, Tags: tags(resource.ServiceTag, "plain")}}})
	plain.Dataplane().Metrics = &resource.MetricsBackend{Type: "prometheus", Conf: &resource.PrometheusConf{SkipMTLS: &skip}}
	secrets := []*resource.Object{
		resource.NewSecret("default", "default.ca-builtin-cert-ca-1", []byte("-----CA1-----\n")),
		resource.NewSecret("default", "default.ca-builtin-key-ca-1", []byte("key1")),
	}

	ix := NewIndex(Inputs{Meshes: []*resource.Object{withMTLS(true)}, Dataplanes: []*resource.Object{prom, echo, plain}, Secrets: secrets})
	got, err := Generate(ix, prom)
	require.NoError(t, err)
	direct := func(addr string, port uint32, svc, cluster, dp string) *meshv1.Outbound {
		return &meshv1.Outbound{Address: addr, Port: port, Service: svc, Protocol: "tcp", ClusterName: cluster,
			Name: "outbound:" + addr + ":" + strconv.Itoa(int(port)), Endpoints: []*meshv1.Endpoint{{Address: addr, Port: port, Dataplane: dp}}, Transparent: true}
	}
	want := []*meshv1.Outbound{
		// echo's metrics endpoint, served over mTLS, verified as echo.
		direct("10.0.0.6", 1234, "echo", "metrics_default_echo-1", "default/echo-1"),
		// The inbounds at their own addresses (a scrape of the workload).
		direct("10.0.0.6", 8000, "echo", "direct_default_echo-1_8000", "default/echo-1"),
		// plain's metrics skip mTLS: a plain passthrough reaches them.
		direct("10.0.0.7", 8000, "plain", "direct_default_plain-1_8000", "default/plain-1"),
	}
	require.Len(t, got.Outbounds, len(want), "%v", got.Outbounds)
	for i := range want {
		require.True(t, proto.Equal(want[i], got.Outbounds[i]), "want %v\ngot  %v", want[i], got.Outbounds[i])
	}
	e, err := Generate(ix, echo)
	require.NoError(t, err)
	require.Empty(t, e.Outbounds, "a dataplane without transparent proxying gets none")

	// A new target changes the scraper's fingerprint.
	echo2 := dp("default", "echo-2", resource.Networking{Address: "10.0.0.8", Inbound: []resource.Inbound{{Port: 8000, Tags: tags(resource.ServiceTag, "echo")}}})
	ix2 := NewIndex(Inputs{Meshes: []*resource.Object{withMTLS(true)}, Dataplanes: []*resource.Object{prom, echo, plain, echo2}, Secrets: secrets})
	require.NotEqual(t, ix.ServiceVersions(prom), ix2.ServiceVersions(prom))
	got2, err := Generate(ix2, prom)
	require.NoError(t, err)
	require.Len(t, got2.Outbounds, 5)
	require.Equal(t, "outbound:10.0.0.8:5670", got2.Outbounds[3].Name)
	require.Equal(t, "metrics_default_echo-2", got2.Outbounds[3].ClusterName)

	// An address two dataplanes claim is one outbound, the first's by name
	// (echo-1's 10.0.0.6:8000, not twin's); loopback ones none.
	twin := dp("default", "twin", resource.Networking{Address: "10.0.0.6", Inbound: []resource.Inbound{{Port: 8000, Tags: tags(resource.ServiceTag, "twin")}}})
	local := dp("default", "local", resource.Networking{Address: "127.0.0.9", Inbound: []resource.Inbound{{Port: 8000, Tags: tags(resource.ServiceTag, "local")}}})
	got3, err := Generate(NewIndex(Inputs{Meshes: []*resource.Object{withMTLS(true)}, Dataplanes: []*resource.Object{prom, echo, plain, twin, local}, Secrets: secrets}), prom)
	require.NoError(t, err)
	want3 := []*meshv1.Outbound{want[0], direct("10.0.0.6", 5670, "twin", "metrics_default_twin", "default/twin"), want[1], want[2]}
	require.Len(t, got3.Outbounds, len(want3), "%v", got3.Outbounds)
	for i := range want3 {
		require.True(t, proto.Equal(want3[i], got3.Outbounds[i]), "want %v\ngot  %v", want3[i], got3.Outbounds[i])
	}

	// Without mTLS the scraper's plain connection passes through.
	noMTLS, err := Generate(NewIndex(Inputs{Meshes: []*resource.Object{withMTLS(false)}, Dataplanes: []*resource.Object{prom, echo, plain}}), prom)
	require.NoError(t, err)
	require.Empty(t, noMTLS.Outbounds)
}
