package mads

import (
	"encoding/json"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
)

// flat is an assignment in comparable form.
type flat struct {
	Mesh, Service, Name, Scheme, Address, Path string
	Labels                                     map[string]string
}

func flatten(t *testing.T, as []Assignment) []flat {
	var out []flat
	for _, a := range as {
		require.Len(t, a.Targets, 1)
		tg := a.Targets[0]
		require.Equal(t, ResourceName(a.Mesh, tg.Name), a.Name)
		require.Empty(t, a.Labels, "labels are carried by the target")
		out = append(out, flat{a.Mesh, a.Service, tg.Name, tg.Scheme, tg.Address, tg.MetricsPath, tg.Labels})
	}
	return out
}

func u32(v uint32) *uint32 { return &v }

func metricsMesh(name string, conf *resource.PrometheusConf) *resource.Object {
	m := &resource.MeshSpec{Metrics: &resource.Metrics{
		EnabledBackend: "prometheus-1",
		Backends:       []resource.MetricsBackend{{Name: "prometheus-1", Type: "prometheus", Conf: conf}},
	}}
	o := resource.New("", name, m)
	resource.ApplyDefaults(o)
	return o
}

func dp(mesh, name string, net resource.Networking, metrics *resource.MetricsBackend) *resource.Object {
	return resource.New(mesh, name, &resource.DataplaneSpec{Networking: &net, Metrics: metrics})
}

// k8sDataplane is a Pod's Dataplane as the Kubernetes store reads it.
func k8sDataplane(pod, namespace string, in resource.Inbound) *resource.Object {
	o := dp("default", pod+"."+namespace, resource.Networking{Address: "10.0.0.1", Inbound: []resource.Inbound{in}}, nil)
	o.Meta.NameExtensions = map[string]string{resource.K8sNameExtension: pod, resource.K8sNamespaceExtension: namespace}
	return o
}

func inbound(tags ...string) resource.Inbound {
	in := resource.Inbound{Port: 8080, Tags: map[string]string{}}
	for i := 0; i < len(tags); i += 2 {
		in.Tags[tags[i]] = tags[i+1]
	}
	return in
}

func TestAssignments(t *testing.T) {
	plainMesh := resource.New("", "plain", &resource.MeshSpec{})
	disabled := resource.New("", "disabled", &resource.MeshSpec{Metrics: &resource.Metrics{
		Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus"}},
	}})
	cases := []struct {
		name       string
		meshes     []*resource.Object
		dataplanes []*resource.Object
		want       []flat
	}{{
		name:       "mesh without metrics has no targets",
		meshes:     []*resource.Object{plainMesh, disabled},
		dataplanes: []*resource.Object{dp("plain", "a", resource.Networking{Address: "10.0.0.1", Inbound: []resource.Inbound{inbound(resource.ServiceTag, "web")}}, nil), dp("disabled", "b", resource.Networking{Address: "10.0.0.2"}, nil)},
	}, {
		name:   "mesh defaults; tags with several values; services sorted",
		meshes: []*resource.Object{metricsMesh("default", nil)},
		dataplanes: []*resource.Object{dp("default", "web-1", resource.Networking{
			Address: "192.168.0.1",
			Inbound: []resource.Inbound{
				inbound(resource.ServiceTag, "web", "version", "v2", "team", "a"),
				inbound(resource.ServiceTag, "admin", "version", "v1", "team", "a"),
			},
		}, nil)},
		want: []flat{{
			Mesh: "default", Service: "admin", Name: "web-1", Scheme: "http", Address: "192.168.0.1:5670", Path: "/metrics",
			Labels: map[string]string{
				"kuma_io_service": "admin", "kuma_io_services": ",admin,web,",
				"version": "v1", "versions": ",v1,v2,",
				"team": "a", "teams": ",a,",
			},
		}},
	}, {
		name:   "advertisedAddress wins; per-dataplane port and path override; IPv6",
		meshes: []*resource.Object{metricsMesh("default", &resource.PrometheusConf{Port: u32(9999), Path: "/mesh"})},
		dataplanes: []*resource.Object{
			dp("default", "nat", resource.Networking{Address: "10.0.0.1", AdvertisedAddress: "203.0.113.7", Inbound: []resource.Inbound{inbound(resource.ServiceTag, "web")}}, nil),
			dp("default", "example", resource.Networking{Address: "10.0.0.2", Inbound: []resource.Inbound{inbound(resource.ServiceTag, "backend")}},
				&resource.MetricsBackend{Type: "prometheus", Conf: &resource.PrometheusConf{Port: u32(1234), Path: "/non-standard-path"}}),
			dp("default", "v6", resource.Networking{Address: "fd00::1", Inbound: []resource.Inbound{inbound(resource.ServiceTag, "web")}}, nil),
		},
		want: []flat{
			{Mesh: "default", Service: "backend", Name: "example", Scheme: "http", Address: "10.0.0.2:1234", Path: "/non-standard-path",
				Labels: map[string]string{"kuma_io_service": "backend", "kuma_io_services": ",backend,"}},
			{Mesh: "default", Service: "web", Name: "nat", Scheme: "http", Address: "203.0.113.7:9999", Path: "/mesh",
				Labels: map[string]string{"kuma_io_service": "web", "kuma_io_services": ",web,"}},
			{Mesh: "default", Service: "web", Name: "v6", Scheme: "http", Address: "[fd00::1]:9999", Path: "/mesh",
				Labels: map[string]string{"kuma_io_service": "web", "kuma_io_services": ",web,"}},
		},
	}, {
		name:   "sorted by mesh then name; unknown mesh skipped; no inbounds",
		meshes: []*resource.Object{metricsMesh("b", nil), metricsMesh("a", nil)},
		dataplanes: []*resource.Object{
			dp("b", "z", resource.Networking{Address: "10.0.0.3"}, nil),
			dp("a", "y", resource.Networking{Address: "10.0.0.2"}, nil),
			dp("a", "x", resource.Networking{Address: "10.0.0.1"}, nil),
			dp("ghost", "w", resource.Networking{Address: "10.0.0.9"}, nil),
		},
		want: []flat{
			{Mesh: "a", Name: "x", Scheme: "http", Address: "10.0.0.1:5670", Path: "/metrics", Labels: map[string]string{}},
			{Mesh: "a", Name: "y", Scheme: "http", Address: "10.0.0.2:5670", Path: "/metrics", Labels: map[string]string{}},
			{Mesh: "b", Name: "z", Scheme: "http", Address: "10.0.0.3:5670", Path: "/metrics", Labels: map[string]string{}},
		},
	}, {
		name:   "tag keys are sanitized",
		meshes: []*resource.Object{metricsMesh("default", nil)},
		dataplanes: []*resource.Object{dp("default", "d", resource.Networking{Address: "10.0.0.1", Inbound: []resource.Inbound{
			inbound("k8s.io/zone-name", "eu", "ünï", "x"),
		}}, nil)},
		want: []flat{{Mesh: "default", Name: "d", Scheme: "http", Address: "10.0.0.1:5670", Path: "/metrics", Labels: map[string]string{
			"k8s_io_zone_name": "eu", "k8s_io_zone_names": ",eu,", "_n_": "x", "_n_s": ",x,",
		}}},
	}, {
		name:   "a Kubernetes dataplane carries its Pod's name and namespace",
		meshes: []*resource.Object{metricsMesh("default", nil)},
		dataplanes: []*resource.Object{k8sDataplane("backend-5c89f4d995-85znn", "my-namespace", inbound(
			resource.ServiceTag, "backend_my-namespace_svc_8080", "k8s.kuma.io/namespace", "my-namespace", "app", "backend"))},
		want: []flat{{Mesh: "default", Service: "backend_my-namespace_svc_8080", Name: "backend-5c89f4d995-85znn.my-namespace", Scheme: "http",
			Address: "10.0.0.1:5670", Path: "/metrics", Labels: map[string]string{
				"kuma_io_service": "backend_my-namespace_svc_8080", "kuma_io_services": ",backend_my-namespace_svc_8080,",
				"app": "backend", "apps": ",backend,",
				// The tag's plural stays; the extensions add no plural.
				"k8s_kuma_io_namespace": "my-namespace", "k8s_kuma_io_namespaces": ",my-namespace,",
				"k8s_kuma_io_name": "backend-5c89f4d995-85znn",
			}}},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, flatten(t, Assignments(tc.meshes, tc.dataplanes)))
		})
	}
}

func TestSnapshotVersionIsStable(t *testing.T) {
	meshes := []*resource.Object{metricsMesh("default", nil)}
	dps := func(addr string) []*resource.Object {
		return []*resource.Object{
			dp("default", "a", resource.Networking{Address: addr, Inbound: []resource.Inbound{inbound(resource.ServiceTag, "web", "v", "1", "w", "2")}}, nil),
			dp("default", "b", resource.Networking{Address: "10.0.0.2"}, nil),
		}
	}
	s1, err := Snapshot(Assignments(meshes, dps("10.0.0.1")))
	require.NoError(t, err)
	for range 20 { // map iteration order varies; the version must not
		s2, err := Snapshot(Assignments(meshes, dps("10.0.0.1")))
		require.NoError(t, err)
		require.Equal(t, s1.Version(), s2.Version())
	}
	s3, err := Snapshot(Assignments(meshes, dps("10.0.0.9")))
	require.NoError(t, err)
	require.NotEqual(t, s1.Version(), s3.Version())
	a1, _ := s1.Get("default/a")
	a3, _ := s3.Get("default/a")
	b1, _ := s1.Get("default/b")
	b3, _ := s3.Get("default/b")
	require.NotEqual(t, a1.Version, a3.Version)
	require.Equal(t, b1.Version, b3.Version, "an unchanged assignment keeps its version (delta clients get only changes)")
}

func TestGeneratorEqualsThePureFunctions(t *testing.T) {
	meshes, dps := benchInput(50)
	meshes = append(meshes, resource.New("", "plain", &resource.MeshSpec{}))
	dps = append(dps, dp("plain", "off", resource.Networking{Address: "10.9.9.9"}, nil))
	var g generator
	check := func(meshes, dps []*resource.Object) {
		t.Helper()
		p, err := g.generate(meshes, dps)
		require.NoError(t, err)
		want, err := Snapshot(Assignments(meshes, dps))
		require.NoError(t, err)
		require.Equal(t, want.Version(), p.snap.Version())
		resp := &discoveryv3.DiscoveryResponse{}
		require.NoError(t, protojson.Unmarshal(p.fetchResponse().bytes(), resp))
		require.Equal(t, want.Version(), resp.GetVersionInfo())
		require.Equal(t, TypeURL, resp.GetTypeUrl())
		require.Len(t, resp.GetResources(), want.Len())
		for i, r := range want.Resources() {
			require.True(t, proto.Equal(r.Body, resp.GetResources()[i]), "resource %s", r.Name)
		}
		var groups []TargetGroup
		require.NoError(t, json.Unmarshal(p.httpSD().bytes(), &groups))
		require.Equal(t, HTTPSDGroups(Assignments(meshes, dps)), groups)
	}
	check(meshes, dps)
	// One dataplane changes (a new object), one goes, the mesh changes: still equal.
	changed := *dps[3]
	spec := *changed.Dataplane()
	spec.Networking = &resource.Networking{Address: "10.200.0.1"}
	changed.Spec = &spec
	dps[3] = &changed
	dps = append(dps[:7], dps[8:]...)
	check(meshes, dps)
	meshes[0] = metricsMesh("default", &resource.PrometheusConf{Port: u32(9100)})
	check(meshes, dps)
	check(meshes, nil)
}

func TestJSONStringsAreEscaped(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "new\nline\ttab\r", "\x00\x1f", "ünï ✓", "bad\xffutf8", "</script>"} {
		var got string
		require.NoError(t, json.Unmarshal(appendString(nil, s), &got), "%q", s)
		want := strings.ToValidUTF8(s, "\ufffd")
		require.Equal(t, want, got)
	}
	m := map[string]string{"b": "2", "a": "1\"", "": ""}
	var got map[string]string
	require.NoError(t, json.Unmarshal(appendStringMap(nil, m), &got))
	require.Equal(t, m, got)
}

func TestSchemeFollowsTheEndpointsTLS(t *testing.T) {
	mtls := &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}}
	skip, noSkip := true, false
	cases := []struct {
		name string
		mtls *resource.MTLS
		conf *resource.PrometheusConf
		want string
	}{
		{"no mTLS: http", nil, nil, "http"},
		{"mTLS, metrics behind it: https", mtls, &resource.PrometheusConf{SkipMTLS: &noSkip}, "https"},
		{"mTLS, skipMTLS: http", mtls, &resource.PrometheusConf{SkipMTLS: &skip}, "http"},
		{"mTLS, tls disabled: http", mtls, &resource.PrometheusConf{TLS: &resource.PrometheusTLS{Mode: resource.TLSModeDisabled}}, "http"},
		{"providedTLS: https even without mTLS", nil, &resource.PrometheusConf{TLS: &resource.PrometheusTLS{Mode: resource.TLSModeProvidedTLS}}, "https"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := resource.New("", "default", &resource.MeshSpec{MTLS: tc.mtls, Metrics: &resource.Metrics{
				EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus", Conf: tc.conf}},
			}})
			resource.ApplyDefaults(m)
			as := Assignments([]*resource.Object{m}, []*resource.Object{dp("default", "d", resource.Networking{Address: "10.0.0.1"}, nil)})
			require.Len(t, as, 1)
			require.Equal(t, tc.want, as[0].Targets[0].Scheme)
		})
	}
}
