package podcontroller

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/resource"
)

const testNS = "kuma-example"

func namespace(labels, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS, Labels: labels, Annotations: annotations}}
}

func enabledNS() *corev1.Namespace {
	return namespace(map[string]string{SidecarInjection: "enabled"}, nil)
}

// testPod is a running Pod of app=echo with an IP and one container
// declaring port 8080 (named "http") and 9090/UDP (named "dns").
func testPod(mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-1", Namespace: testNS, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app",
			Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080},
				{Name: "dns", ContainerPort: 9090, Protocol: corev1.ProtocolUDP},
			},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.10.2"},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func withAnnotations(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			p.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func withLabels(kv ...string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		for i := 0; i < len(kv); i += 2 {
			p.Labels[kv[i]] = kv[i+1]
		}
	}
}

// testService selects app=echo with one port 80 → 8080.
func testService(name string, mods ...func(*corev1.Service)) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mods {
		m(&s)
	}
	return s
}

func ports(ps ...corev1.ServicePort) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.Ports = ps }
}

func svcAnnotations(kv ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Annotations = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func echoTags(extra ...string) map[string]string {
	t := map[string]string{
		"app":                "echo",
		resource.ServiceTag:  "echo_kuma-example_svc_80",
		NamespaceTag:         testNS,
		ServiceNameTag:       "echo",
		ServicePortTag:       "80",
		resource.ProtocolTag: "tcp",
	}
	for i := 0; i < len(extra); i += 2 {
		t[extra[i]] = extra[i+1]
	}
	return t
}

func TestConvertGuidePod(t *testing.T) {
	pod := testPod(withAnnotations(MetricsPort, "1234", MetricsPath, "/non-standard-path"))
	r := Convert(pod, []corev1.Service{testService("echo")}, enabledNS())
	require.Empty(t, r.Problems)
	require.NotNil(t, r.Dataplane)
	dp := r.Dataplane
	assert.Equal(t, resource.KindDataplane, dp.Meta.Kind)
	assert.Equal(t, "default", dp.Meta.Mesh)
	assert.Equal(t, "echo-1.kuma-example", dp.Meta.Name)
	spec := dp.Dataplane()
	assert.Equal(t, "127.0.10.2", spec.Networking.Address)
	assert.Equal(t, []resource.Inbound{{Port: 8080, Tags: echoTags()}}, spec.Networking.Inbound)
	require.NotNil(t, spec.Metrics)
	assert.Equal(t, resource.MetricsTypePrometheus, spec.Metrics.Type)
	require.NotNil(t, spec.Metrics.Conf.Port)
	assert.Equal(t, uint32(1234), *spec.Metrics.Conf.Port)
	assert.Equal(t, "/non-standard-path", spec.Metrics.Conf.Path)
	require.NoError(t, resource.Validate(dp))

	// The override reaches the effective endpoint the proxy serves and MADS advertises.
	meshSpec := &resource.MeshSpec{Metrics: &resource.Metrics{EnabledBackend: "prometheus-1",
		Backends: []resource.MetricsBackend{{Name: "prometheus-1", Type: "prometheus"}}}}
	resource.ApplyDefaults(resource.New("", "default", meshSpec))
	eff := resource.EffectiveMetricsConfig(meshSpec, spec)
	require.NotNil(t, eff)
	assert.Equal(t, uint32(1234), eff.Port)
	assert.Equal(t, "/non-standard-path", eff.Path)
}

func TestConvertWhichPodsAreInTheMesh(t *testing.T) {
	svcs := []corev1.Service{testService("echo")}
	now := metav1.Now()
	cases := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		skip string // "" = a Dataplane
	}{
		{"namespace enabled", testPod(), enabledNS(), ""},
		{"namespace true", testPod(), namespace(map[string]string{SidecarInjection: "true"}, nil), ""},
		{"namespace yes", testPod(), namespace(map[string]string{SidecarInjection: "yes"}, nil), ""},
		{"namespace without the label", testPod(), namespace(nil, nil), SkipNotInMesh},
		{"namespace disabled", testPod(), namespace(map[string]string{SidecarInjection: "disabled"}, nil), SkipNotInMesh},
		{"namespace false", testPod(), namespace(map[string]string{SidecarInjection: "false"}, nil), SkipNotInMesh},
		{"namespace no", testPod(), namespace(map[string]string{SidecarInjection: "no"}, nil), SkipNotInMesh},
		{"namespace annotation is not the label", testPod(), namespace(nil, map[string]string{SidecarInjection: "enabled"}), SkipNotInMesh},
		{"unknown namespace, pod annotation", testPod(withAnnotations(SidecarInjection, "enabled")), nil, ""},
		{"unknown namespace, nothing", testPod(), nil, SkipNotInMesh},
		{"pod annotation enabled", testPod(withAnnotations(SidecarInjection, "enabled")), namespace(nil, nil), ""},
		{"pod label enabled", testPod(withLabels(SidecarInjection, "enabled")), namespace(nil, nil), ""},
		{"pod injected", testPod(withAnnotations(SidecarInjected, "true")), namespace(nil, nil), ""},
		{"pod injected false follows the namespace", testPod(withAnnotations(SidecarInjected, "false")), enabledNS(), ""},
		{"pod annotation opts out", testPod(withAnnotations(SidecarInjection, "disabled")), enabledNS(), SkipNotInMesh},
		{"pod label opts out", testPod(withLabels(SidecarInjection, "disabled")), enabledNS(), SkipNotInMesh},
		{"pod label wins over annotation", testPod(withLabels(SidecarInjection, "enabled"), withAnnotations(SidecarInjection, "disabled")), namespace(nil, nil), ""},
		{"no IP", testPod(func(p *corev1.Pod) { p.Status.PodIP = "" }), enabledNS(), SkipNoIP},
		{"pending with an IP", testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), enabledNS(), ""},
		{"succeeded", testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), enabledNS(), SkipCompleted},
		{"failed", testPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), enabledNS(), SkipCompleted},
		{"terminating", testPod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), enabledNS(), SkipTerminating},
		{"no Service", testPod(withLabels("app", "other")), enabledNS(), SkipNoService},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Convert(c.pod, svcs, c.ns)
			require.Empty(t, r.Problems)
			assert.Equal(t, c.skip, r.Skip)
			assert.Equal(t, c.skip == "", r.Dataplane != nil)
		})
	}
}

func TestConvertNoServiceWarns(t *testing.T) {
	r := Convert(testPod(), nil, enabledNS())
	assert.Equal(t, SkipNoService, r.Skip)
	require.Len(t, r.Warnings, 1)
	assert.Equal(t, ReasonNoService, r.Warnings[0].Reason)
}

func TestConvertInbounds(t *testing.T) {
	cases := []struct {
		name     string
		pod      *corev1.Pod
		services []corev1.Service
		want     []resource.Inbound // nil = no Dataplane (no Service)
	}{
		{"target port by number", testPod(), []corev1.Service{testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"target port by number no container declares", testPod(),
			[]corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(7000)}))},
			[]resource.Inbound{{Port: 7000, Tags: echoTags()}}},
		{"target port unset is the port", testPod(),
			[]corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 80}))},
			[]resource.Inbound{{Port: 80, Tags: echoTags()}}},
		{"target port by name", testPod(),
			[]corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("http")}))},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"target port by name in a second container", testPod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "admin",
				Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}}})
		}), []corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 81, TargetPort: intstr.FromString("admin")}))},
			[]resource.Inbound{{Port: 8081, Tags: echoTags(resource.ServiceTag, "echo_kuma-example_svc_81", ServicePortTag, "81")}}},
		{"target port name no container declares", testPod(),
			[]corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 80, TargetPort: intstr.FromString("grpc")}))},
			nil},
		{"target port name of another protocol", testPod(),
			[]corev1.Service{testService("echo", ports(corev1.ServicePort{Port: 53, TargetPort: intstr.FromString("dns")}))},
			nil},
		{"UDP port left out", testPod(),
			[]corev1.Service{testService("echo", ports(
				corev1.ServicePort{Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromString("dns")},
				corev1.ServicePort{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}))},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"several ports, Services by name", testPod(), []corev1.Service{
			testService("web", ports(corev1.ServicePort{Port: 8000, TargetPort: intstr.FromInt32(8000)})),
			testService("echo", ports(
				corev1.ServicePort{Port: 80, TargetPort: intstr.FromInt32(8080)},
				corev1.ServicePort{Port: 81, TargetPort: intstr.FromInt32(8081)})),
		}, []resource.Inbound{
			{Port: 8080, Tags: echoTags()},
			{Port: 8081, Tags: echoTags(resource.ServiceTag, "echo_kuma-example_svc_81", ServicePortTag, "81")},
			{Port: 8000, Tags: echoTags(resource.ServiceTag, "web_kuma-example_svc_8000", ServiceNameTag, "web", ServicePortTag, "8000")},
		}},
		{"without selector ignored", testPod(), []corev1.Service{
			testService("manual", func(s *corev1.Service) { s.Spec.Selector = nil }), testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"selecting other pods ignored", testPod(), []corev1.Service{
			testService("other", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "other"} }), testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"selector on a label the pod lacks", testPod(), []corev1.Service{
			testService("other", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "echo", "tier": ""} })},
			nil},
		{"selector with two labels", testPod(withLabels("tier", "back")), []corev1.Service{
			testService("echo", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "echo", "tier": "back"} })},
			[]resource.Inbound{{Port: 8080, Tags: echoTags("tier", "back")}}},
		{"another namespace ignored", testPod(), []corev1.Service{
			testService("elsewhere", func(s *corev1.Service) { s.Namespace = "other" }), testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"ExternalName ignored", testPod(), []corev1.Service{
			testService("ext", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }), testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"kuma.io/ignore", testPod(), []corev1.Service{
			testService("ignored", svcAnnotations(Ignore, "true")), testService("echo", svcAnnotations(Ignore, "false"))},
			[]resource.Inbound{{Port: 8080, Tags: echoTags()}}},
		{"headless adds the instance", testPod(), []corev1.Service{
			testService("echo", func(s *corev1.Service) { s.Spec.ClusterIP = corev1.ClusterIPNone })},
			[]resource.Inbound{{Port: 8080, Tags: echoTags(InstanceTag, "echo-1")}}},
		{"pod labels copied, empty and kuma.io ones not", testPod(withLabels(
			"version", "v2", "app.kubernetes.io/name", "echo", "empty", "", Mesh, "default",
			resource.ServiceTag, "forged", "k8s.kuma.io/namespace", "forged")),
			[]corev1.Service{testService("echo")},
			[]resource.Inbound{{Port: 8080, Tags: echoTags("version", "v2", "app.kubernetes.io/name", "echo")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Convert(c.pod, c.services, enabledNS())
			require.Empty(t, r.Problems)
			if c.want == nil {
				assert.Equal(t, SkipNoService, r.Skip)
				assert.Nil(t, r.Dataplane)
				return
			}
			require.NotNil(t, r.Dataplane, "skip: %s", r.Skip)
			assert.Equal(t, c.want, r.Dataplane.Dataplane().Networking.Inbound)
			assert.Empty(t, r.Warnings)
		})
	}
}

func TestConvertPortConflictWarns(t *testing.T) {
	r := Convert(testPod(), []corev1.Service{testService("zeta"), testService("alpha")}, enabledNS())
	require.NotNil(t, r.Dataplane)
	in := r.Dataplane.Dataplane().Networking.Inbound
	require.Len(t, in, 1)
	assert.Equal(t, "alpha_kuma-example_svc_80", in[0].Tags[resource.ServiceTag])
	require.Len(t, r.Warnings, 1)
	assert.Equal(t, ReasonPortConflict, r.Warnings[0].Reason)
	assert.Contains(t, r.Warnings[0].Error(), `port 80 of Service "zeta" targets container port 8080, which port 80 of Service "alpha" already has`)
}

func TestConvertProtocol(t *testing.T) {
	app := func(p string) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Spec.Ports[0].AppProtocol = &p }
	}
	cases := []struct {
		name string
		svc  corev1.Service
		want string
	}{
		{"default tcp", testService("echo"), "tcp"},
		{"appProtocol http", testService("echo", app("http")), "http"},
		{"appProtocol any case", testService("echo", app("HTTP2")), "http2"},
		{"appProtocol grpc", testService("echo", app("grpc")), "grpc"},
		{"annotation", testService("echo", svcAnnotations("80.service.kuma.io/protocol", "http")), "http"},
		{"annotation any case", testService("echo", svcAnnotations("80.service.kuma.io/protocol", "GRPC")), "grpc"},
		{"appProtocol wins over annotation", testService("echo", app("http2"), svcAnnotations("80.service.kuma.io/protocol", "http")), "http2"},
		{"unknown appProtocol falls to annotation", testService("echo", app("kubernetes.io/h2c"), svcAnnotations("80.service.kuma.io/protocol", "http")), "http"},
		{"unknown appProtocol falls to tcp", testService("echo", app("https")), "tcp"},
		{"annotation of another port", testService("echo", svcAnnotations("81.service.kuma.io/protocol", "http")), "tcp"},
		{"empty annotation", testService("echo", svcAnnotations("80.service.kuma.io/protocol", "")), "tcp"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Convert(testPod(), []corev1.Service{c.svc}, enabledNS())
			require.Empty(t, r.Problems)
			require.NotNil(t, r.Dataplane)
			assert.Equal(t, c.want, r.Dataplane.Dataplane().Networking.Inbound[0].Tags[resource.ProtocolTag])
		})
	}
}

func TestConvertMesh(t *testing.T) {
	cases := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want string
	}{
		{"default", testPod(), enabledNS(), "default"},
		{"pod annotation", testPod(withAnnotations(Mesh, "payments")), enabledNS(), "payments"},
		{"pod label", testPod(withLabels(Mesh, "payments")), enabledNS(), "payments"},
		{"pod label wins over annotation", testPod(withLabels(Mesh, "label"), withAnnotations(Mesh, "annotation")), enabledNS(), "label"},
		{"namespace label", testPod(), namespace(map[string]string{SidecarInjection: "enabled", Mesh: "ns"}, nil), "ns"},
		{"namespace annotation", testPod(), namespace(map[string]string{SidecarInjection: "enabled"}, map[string]string{Mesh: "ns"}), "ns"},
		{"pod wins over namespace", testPod(withAnnotations(Mesh, "pod")), namespace(map[string]string{SidecarInjection: "enabled", Mesh: "ns"}, nil), "pod"},
		{"empty value ignored", testPod(withAnnotations(Mesh, "")), namespace(map[string]string{SidecarInjection: "enabled", Mesh: "ns"}, nil), "ns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Convert(c.pod, []corev1.Service{testService("echo")}, c.ns)
			require.Empty(t, r.Problems)
			require.NotNil(t, r.Dataplane)
			assert.Equal(t, c.want, r.Dataplane.Meta.Mesh)
		})
	}
}

func TestConvertMetricsAnnotations(t *testing.T) {
	u := func(v uint32) *uint32 { return &v }
	b := func(v bool) *bool { return &v }
	agg := func(name string) string { return AggregatePrefix + name }
	cases := []struct {
		name        string
		annotations []string
		want        *resource.PrometheusConf // nil = no metrics override
	}{
		{"none", nil, nil},
		{"other annotations only", []string{"prometheus.io/scrape", "true"}, nil},
		{"port", []string{MetricsPort, "1234"}, &resource.PrometheusConf{Port: u(1234)}},
		{"path", []string{MetricsPath, "/non-standard-path"}, &resource.PrometheusConf{Path: "/non-standard-path"}},
		{"port range ends", []string{MetricsPort, "65535"}, &resource.PrometheusConf{Port: u(65535)}},
		{"aggregate", []string{agg("app-port"), "3000", agg("app-path"), "/stats", agg("app-address"), "127.0.0.9"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/stats", Address: "127.0.0.9"}}}},
		{"aggregate path defaults", []string{agg("app-port"), "3000"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/metrics"}}}},
		{"aggregate names with dashes, sorted", []string{agg("z-app-port"), "2", agg("my-app-port"), "1"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{
				{Name: "my-app", Port: 1, Path: "/metrics"}, {Name: "z-app", Port: 2, Path: "/metrics"}}}},
		{"aggregate enabled", []string{agg("app-port"), "3000", agg("app-enabled"), "true"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/metrics", Enabled: b(true)}}}},
		{"aggregate enabled yes", []string{agg("app-port"), "3000", agg("app-enabled"), "yes"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/metrics", Enabled: b(true)}}}},
		{"aggregate enabled enabled", []string{agg("app-port"), "3000", agg("app-enabled"), "enabled"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/metrics", Enabled: b(true)}}}},
		{"aggregate disabled needs no port", []string{agg("app-enabled"), "false"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Path: "/metrics", Enabled: b(false)}}}},
		{"aggregate no", []string{agg("app-enabled"), "no"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Path: "/metrics", Enabled: b(false)}}}},
		{"aggregate disabled keeps its port", []string{agg("app-enabled"), "disabled", agg("app-port"), "3000"},
			&resource.PrometheusConf{Aggregate: []resource.PrometheusAggregate{{Name: "app", Port: 3000, Path: "/metrics", Enabled: b(false)}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Convert(testPod(withAnnotations(c.annotations...)), []corev1.Service{testService("echo")}, enabledNS())
			require.Empty(t, r.Problems)
			require.NotNil(t, r.Dataplane)
			m := r.Dataplane.Dataplane().Metrics
			if c.want == nil {
				assert.Nil(t, m)
				return
			}
			require.NotNil(t, m)
			assert.Equal(t, resource.MetricsTypePrometheus, m.Type)
			assert.Equal(t, c.want, m.Conf)
		})
	}
}

// Every annotation that cannot be parsed is a problem naming it, and no
// Dataplane comes out.
func TestConvertProblems(t *testing.T) {
	agg := func(name string) string { return AggregatePrefix + name }
	long := strings.Repeat("a", 250)
	cases := []struct {
		name     string
		pod      *corev1.Pod
		services []corev1.Service
		ns       *corev1.Namespace
		want     []string // Problem.Error() of each, in order
	}{
		{"port not a number", testPod(withAnnotations(MetricsPort, "http")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/port": "http" is not a port number (1-65535)`}},
		{"port 0", testPod(withAnnotations(MetricsPort, "0")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/port": "0" is not a port number (1-65535)`}},
		{"port too big", testPod(withAnnotations(MetricsPort, "65536")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/port": "65536" is not a port number (1-65535)`}},
		{"port negative", testPod(withAnnotations(MetricsPort, "-1")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/port": "-1" is not a port number (1-65535)`}},
		{"port with spaces", testPod(withAnnotations(MetricsPort, " 1234")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/port": " 1234" is not a port number (1-65535)`}},
		{"path without slash", testPod(withAnnotations(MetricsPath, "metrics")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/path": "metrics" must start with '/'`}},
		{"path empty", testPod(withAnnotations(MetricsPath, "")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/path": "" must start with '/'`}},
		{"unknown metrics annotation", testPod(withAnnotations("prometheus.metrics.kuma.io/prot", "1234")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/prot": unknown annotation; known: prometheus.metrics.kuma.io/port, prometheus.metrics.kuma.io/path, prometheus.metrics.kuma.io/aggregate-<name>-port|path|enabled|address`}},
		{"unknown aggregate field", testPod(withAnnotations(agg("app-host"), "x")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-host": unknown annotation; an aggregated application is set by prometheus.metrics.kuma.io/aggregate-<name>-port|path|enabled|address`}},
		{"aggregate without name", testPod(withAnnotations(agg("-port"), "1")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate--port": the application name between "prometheus.metrics.kuma.io/aggregate-" and "-port" is empty`}},
		{"aggregate port missing", testPod(withAnnotations(agg("app-path"), "/m")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-port": missing: the port of application "app" is required unless prometheus.metrics.kuma.io/aggregate-app-enabled is false`}},
		{"aggregate port missing though enabled", testPod(withAnnotations(agg("app-enabled"), "yes")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-port": missing: the port of application "app" is required unless prometheus.metrics.kuma.io/aggregate-app-enabled is false`}},
		{"aggregate port bad", testPod(withAnnotations(agg("app-port"), "x")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-port": "x" is not a port number (1-65535)`}},
		{"aggregate port bad though disabled", testPod(withAnnotations(agg("app-port"), "99999", agg("app-enabled"), "false")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-port": "99999" is not a port number (1-65535)`}},
		{"aggregate enabled bad", testPod(withAnnotations(agg("app-port"), "3000", agg("app-enabled"), "on")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-enabled": "on" is not one of enabled, true, yes, disabled, false or no`}},
		{"aggregate path bad", testPod(withAnnotations(agg("app-port"), "3000", agg("app-path"), "stats")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-path": "stats" must start with '/'`}},
		{"aggregate address bad", testPod(withAnnotations(agg("app-port"), "3000", agg("app-address"), "localhost")), nil, nil,
			[]string{`annotation "prometheus.metrics.kuma.io/aggregate-app-address": "localhost" is not an IP address`}},
		{"all reported", testPod(withAnnotations(MetricsPort, "x", MetricsPath, "y", agg("b-port"), "z")), nil, nil,
			[]string{
				`annotation "prometheus.metrics.kuma.io/path": "y" must start with '/'`,
				`annotation "prometheus.metrics.kuma.io/port": "x" is not a port number (1-65535)`,
				`annotation "prometheus.metrics.kuma.io/aggregate-b-port": "z" is not a port number (1-65535)`,
			}},
		{"mesh name", testPod(withAnnotations(Mesh, "Not_A_Mesh")), nil, nil,
			[]string{`annotation "kuma.io/mesh": "Not_A_Mesh" is not a mesh name: must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		{"mesh name of the namespace", testPod(), nil, namespace(map[string]string{SidecarInjection: "enabled", Mesh: "-x"}, nil),
			[]string{`label "kuma.io/mesh" of Namespace "kuma-example": "-x" is not a mesh name: must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit`}},
		{"injection of the pod", testPod(withAnnotations(SidecarInjection, "sometimes")), nil, enabledNS(),
			[]string{`annotation "kuma.io/sidecar-injection": "sometimes" is not one of enabled, true, yes, disabled, false or no`}},
		{"injection label of the pod", testPod(withLabels(SidecarInjection, "on")), nil, enabledNS(),
			[]string{`label "kuma.io/sidecar-injection": "on" is not one of enabled, true, yes, disabled, false or no`}},
		{"injected", testPod(withAnnotations(SidecarInjected, "1")), nil, enabledNS(),
			[]string{`annotation "kuma.io/sidecar-injected": "1" is not one of enabled, true, yes, disabled, false or no`}},
		{"injection of the namespace", testPod(), nil, namespace(map[string]string{SidecarInjection: "maybe"}, nil),
			[]string{`label "kuma.io/sidecar-injection" of Namespace "kuma-example": "maybe" is not one of enabled, true, yes, disabled, false or no`}},
		{"service protocol", testPod(), []corev1.Service{testService("echo", svcAnnotations("80.service.kuma.io/protocol", "kafka"))}, nil,
			[]string{`annotation "80.service.kuma.io/protocol" of Service "echo": unknown protocol "kafka"; available protocols: tcp, http, http2, grpc`}},
		{"service ignore", testPod(), []corev1.Service{testService("echo", svcAnnotations(Ignore, "perhaps"))}, nil,
			[]string{`annotation "kuma.io/ignore" of Service "echo": "perhaps" is not one of enabled, true, yes, disabled, false or no`}},
		{"dataplane name too long", testPod(func(p *corev1.Pod) { p.Name = long }), nil, nil,
			[]string{`the Dataplane made from this Pod is not valid: invalid resource: name: must be at most 253 letters, digits, '-', '.' and '_', starting and ending with a letter or digit`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			services := c.services
			if services == nil {
				services = []corev1.Service{testService("echo")}
			}
			ns := c.ns
			if ns == nil {
				ns = enabledNS()
			}
			r := Convert(c.pod, services, ns)
			assert.Nil(t, r.Dataplane)
			assert.Empty(t, r.Skip)
			got := make([]string, len(r.Problems))
			for i, p := range r.Problems {
				got[i] = p.Error()
			}
			assert.Equal(t, c.want, got)
		})
	}
}

// A Pod that is not in the mesh has no Dataplane whatever its annotations say.
func TestConvertBadAnnotationOutsideTheMesh(t *testing.T) {
	r := Convert(testPod(withAnnotations(MetricsPort, "x")), []corev1.Service{testService("echo")}, namespace(nil, nil))
	assert.Empty(t, r.Problems)
	assert.Equal(t, SkipNotInMesh, r.Skip)
}

func TestConvertDoesNotChangeItsInput(t *testing.T) {
	pod := testPod(withAnnotations(MetricsPort, "1234"), withLabels("version", "v1"))
	svcs := []corev1.Service{testService("b"), testService("a", ports(corev1.ServicePort{Port: 81, TargetPort: intstr.FromInt32(8081)}))}
	ns := enabledNS()
	podCopy, svcsCopy, nsCopy := pod.DeepCopy(), []corev1.Service{*svcs[0].DeepCopy(), *svcs[1].DeepCopy()}, ns.DeepCopy()
	first := Convert(pod, svcs, ns)
	second := Convert(pod, svcs, ns)
	assert.Equal(t, podCopy, pod)
	assert.Equal(t, svcsCopy, svcs)
	assert.Equal(t, nsCopy, ns)
	assert.Equal(t, first, second)
}

func TestProblemError(t *testing.T) {
	assert.Equal(t, "no Service", Problem{Message: "no Service"}.Error())
	assert.Equal(t, `Service "x": broken`, Problem{Object: `Service "x"`, Message: "broken"}.Error())
	assert.Equal(t, `label "k" of Namespace "n": bad`, Problem{Object: `Namespace "n"`, Key: "k", Label: true, Message: "bad"}.Error())
}

// What a Pod's proxy is told to do with its Dataplane (no transparent proxy
// yet): accept on <pod IP>:<container port>, forward to the application at
// 127.0.0.1:<container port>, serve metrics on <pod IP>:1234/non-standard-path.
func TestConvertProxyConfig(t *testing.T) {
	pod := testPod(withAnnotations(MetricsPort, "1234", MetricsPath, "/non-standard-path"))
	r := Convert(pod, []corev1.Service{testService("echo")}, enabledNS())
	require.NotNil(t, r.Dataplane)
	mesh := resource.New("", "default", &resource.MeshSpec{Metrics: &resource.Metrics{EnabledBackend: "prometheus-1",
		Backends: []resource.MetricsBackend{{Name: "prometheus-1", Type: "prometheus"}}}})
	resource.ApplyDefaults(mesh)
	cfg, err := dpconfig.Generate(dpconfig.NewIndex(dpconfig.Inputs{
		Meshes: []*resource.Object{mesh}, Dataplanes: []*resource.Object{r.Dataplane},
	}), r.Dataplane)
	require.NoError(t, err)
	require.Len(t, cfg.Inbounds, 1)
	in := cfg.Inbounds[0]
	assert.Equal(t, "127.0.10.2", in.Address)
	assert.Equal(t, uint32(8080), in.Port)
	assert.Equal(t, "127.0.0.1", in.ServiceAddress)
	assert.Equal(t, uint32(8080), in.ServicePort)
	assert.Equal(t, "tcp", in.Protocol)
	require.NotNil(t, cfg.Metrics)
	assert.Equal(t, "127.0.10.2", cfg.Metrics.Address)
	assert.Equal(t, uint32(1234), cfg.Metrics.Port)
	assert.Equal(t, "/non-standard-path", cfg.Metrics.Path)
}

// TestConvertTransparentProxying: a Pod annotated
// kuma.io/transparent-proxying: enabled (as the injector does) gets
// networking.transparentProxying, with the redirect ports of its
// annotations, and each inbound its Service's ClusterIP(s) and port as vips
// (none for a headless Service); without the annotation neither.
func TestConvertTransparentProxying(t *testing.T) {
	withClusterIP := func(ips ...string) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = ips[0], ips }
	}
	spec := func(t *testing.T, pod *corev1.Pod, services ...corev1.Service) *resource.DataplaneSpec {
		t.Helper()
		r := Convert(pod, services, enabledNS())
		require.Empty(t, r.Problems)
		require.NotNil(t, r.Dataplane)
		return r.Dataplane.Dataplane()
	}

	plain := spec(t, testPod(), testService("echo", withClusterIP("10.96.0.10")))
	assert.Nil(t, plain.Networking.TransparentProxying)
	assert.Empty(t, plain.Networking.Inbound[0].VIPs)

	tp := spec(t, testPod(withAnnotations(TransparentProxying, "enabled")),
		testService("echo", withClusterIP("10.96.0.10")),
		testService("echo-dual", withClusterIP("10.96.0.11", "fd00::11"), func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Port: 9000, TargetPort: intstr.FromInt32(9000)}}
		}),
		testService("echo-headless", withClusterIP(corev1.ClusterIPNone), func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Port: 7000, TargetPort: intstr.FromInt32(7000)}}
		}))
	require.NotNil(t, tp.Networking.TransparentProxying)
	assert.Equal(t, uint32(15006), tp.Networking.TransparentProxying.InboundPort())
	assert.Equal(t, uint32(15001), tp.Networking.TransparentProxying.OutboundPort())
	vips := map[uint32][]string{}
	for _, in := range tp.Networking.Inbound {
		vips[in.Port] = in.VIPs
	}
	assert.Equal(t, map[uint32][]string{8080: {"10.96.0.10:80"}, 9000: {"10.96.0.11:9000", "[fd00::11]:9000"}, 7000: nil}, vips)

	ports := spec(t, testPod(withAnnotations(TransparentProxying, "true", TransparentProxyingInboundPort, "16006", TransparentProxyingOutboundPort, "16001")),
		testService("echo", withClusterIP("10.96.0.10")))
	assert.Equal(t, &resource.TransparentProxying{RedirectPortInbound: 16006, RedirectPortOutbound: 16001}, ports.Networking.TransparentProxying)

	off := spec(t, testPod(withAnnotations(TransparentProxying, "disabled")), testService("echo", withClusterIP("10.96.0.10")))
	assert.Nil(t, off.Networking.TransparentProxying)

	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{testPod(withAnnotations(TransparentProxying, "on")),
			`annotation "kuma.io/transparent-proxying": "on" is not one of enabled, true, yes, disabled, false or no`},
		{testPod(withAnnotations(TransparentProxying, "enabled", TransparentProxyingInboundPort, "0")),
			`annotation "kuma.io/transparent-proxying-inbound-port": "0" is not a port number (1-65535)`},
		{testPod(withAnnotations(TransparentProxying, "enabled", TransparentProxyingOutboundPort, "x")),
			`annotation "kuma.io/transparent-proxying-outbound-port": "x" is not a port number (1-65535)`},
	} {
		r := Convert(tc.pod, []corev1.Service{testService("echo")}, enabledNS())
		require.Nil(t, r.Dataplane)
		require.Len(t, r.Problems, 1)
		assert.Equal(t, tc.want, r.Problems[0].Error())
	}
	// An inbound on a redirect port is refused with the reason.
	r := Convert(testPod(withAnnotations(TransparentProxying, "enabled", TransparentProxyingInboundPort, "8080")), []corev1.Service{testService("echo")}, enabledNS())
	require.Nil(t, r.Dataplane)
	require.Len(t, r.Problems, 1)
	assert.Contains(t, r.Problems[0].Error(), "port 8080 is a redirect port of transparentProxying")
}
