package injector_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kumametrics/mesh/pkg/k8s/injector"
	"github.com/kumametrics/mesh/pkg/resource"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file; run go test with -update")
	require.Equal(t, string(want), string(got), "golden file %s (run go test with -update after checking the change)", path)
}

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

func settings() injector.Settings {
	return injector.Settings{
		SidecarImage: "kumahq/kuma-dp:1.2.3", InitImage: "kumahq/kuma-dp:1.2.3",
		ControlPlaneAddress: "https://kuma-control-plane.kuma-system:5678",
		CACert:              []byte(testCA),
		UID:                 5678,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: k8sresource.MustParse("50m"), corev1.ResourceMemory: k8sresource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: k8sresource.MustParse("1000m"), corev1.ResourceMemory: k8sresource.MustParse("512Mi")},
		},
	}
}

func enabledNamespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kuma.io/sidecar-injection": "enabled"}}}
}

// echoPod is the guide's kuma-tcp-echo Pod, as its Deployment makes it.
func echoPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kuma-tcp-echo-7c9b8", Namespace: "kuma-example",
			Labels: map[string]string{"app": "kuma-tcp-echo"},
			Annotations: map[string]string{
				"prometheus.metrics.kuma.io/port": "1234",
				"prometheus.metrics.kuma.io/path": "/non-standard-path",
			}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "kuma-tcp-echo", Image: "kumahq/kuma-tcp-echo:0.1.0",
			Ports: []corev1.ContainerPort{{ContainerPort: 8000}}}}},
	}
}

func mesh(port uint32) *resource.MeshSpec {
	return &resource.MeshSpec{Metrics: &resource.Metrics{EnabledBackend: "prometheus-1", Backends: []resource.MetricsBackend{{
		Name: "prometheus-1", Type: resource.MetricsTypePrometheus, Conf: &resource.PrometheusConf{Port: &port}}}}}
}

// applyPatch applies the JSON patch to the Pod, as the API server does.
func applyPatch(t *testing.T, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	require.NoError(t, err)
	p, err := jsonpatch.DecodePatch(patch)
	require.NoError(t, err)
	patched, err := p.Apply(doc)
	require.NoError(t, err)
	var out corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(patched))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&out))
	return &out
}

func inject(t *testing.T, inp injector.Input) *corev1.Pod {
	t.Helper()
	before, err := json.Marshal(inp.Pod)
	require.NoError(t, err)
	r := injector.Inject(inp, settings())
	require.Empty(t, r.Problems)
	require.Empty(t, r.Skip)
	require.NotNil(t, r.Pod)
	after, err := json.Marshal(inp.Pod)
	require.NoError(t, err)
	require.JSONEq(t, string(before), string(after), "Inject changed its input")
	return r.Pod
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s in %v", name, cs)
	return corev1.Container{}
}

func TestInjectTheGuidesEchoPod(t *testing.T) {
	pod := echoPod()
	got := inject(t, injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: enabledNamespace("kuma-example"), Mesh: mesh(5670)})

	require.Equal(t, map[string]string{
		"prometheus.metrics.kuma.io/port":            "1234", // the metrics annotations carried over
		"prometheus.metrics.kuma.io/path":            "/non-standard-path",
		"kuma.io/sidecar-injected":                   "true",
		"kuma.io/transparent-proxying":               "enabled",
		"kuma.io/transparent-proxying-inbound-port":  "15006",
		"kuma.io/transparent-proxying-outbound-port": "15001",
		"kuma.io/control-plane-ca-cert":              testCA,
	}, got.Annotations)
	require.Equal(t, pod.Spec.Containers[0], got.Spec.Containers[0], "the application's container is untouched")
	require.Len(t, got.Spec.Containers, 2)

	sidecar := container(t, got.Spec.Containers, "kuma-sidecar")
	require.Equal(t, "kumahq/kuma-dp:1.2.3", sidecar.Image)
	require.Equal(t, []string{"run", "--cp-address", "https://kuma-control-plane.kuma-system:5678",
		"--name", "kuma-tcp-echo-7c9b8.kuma-example", "--mesh", "default",
		"--ca-cert-file", "/var/run/secrets/kuma.io/sidecar/ca.crt",
		"--dataplane-token-file", "/var/run/secrets/kuma.io/sidecar/token"}, sidecar.Args)
	require.Empty(t, sidecar.Env)
	require.Equal(t, settings().Resources, sidecar.Resources)
	require.EqualValues(t, 5678, *sidecar.SecurityContext.RunAsUser)
	require.EqualValues(t, 5678, *sidecar.SecurityContext.RunAsGroup)
	require.True(t, *sidecar.SecurityContext.RunAsNonRoot)
	require.Equal(t, []corev1.VolumeMount{{Name: "kuma-sidecar", MountPath: "/var/run/secrets/kuma.io/sidecar", ReadOnly: true}}, sidecar.VolumeMounts)

	require.Len(t, got.Spec.InitContainers, 1)
	init := got.Spec.InitContainers[0]
	require.Equal(t, "kuma-init", init.Name)
	require.Equal(t, "kumahq/kuma-dp:1.2.3", init.Image)
	require.Equal(t, []string{"kumactl"}, init.Command)
	// The Pod's metrics port (its annotation wins over the mesh's 5670) is
	// reached directly.
	require.Equal(t, []string{"install", "transparent-proxy", "--redirect-inbound-port", "15006", "--redirect-outbound-port", "15001",
		"--kuma-dp-uid", "5678", "--exclude-inbound-ports", "1234"}, init.Args)
	require.Equal(t, []corev1.Capability{"NET_ADMIN", "NET_RAW"}, init.SecurityContext.Capabilities.Add)
	require.EqualValues(t, 0, *init.SecurityContext.RunAsUser)

	// One projected volume: the ServiceAccount token for the API server's
	// audience (what pkg/k8s/dpauth reviews) and the CA, from the annotation.
	require.Len(t, got.Spec.Volumes, 1)
	v := got.Spec.Volumes[0]
	require.Equal(t, "kuma-sidecar", v.Name)
	require.Len(t, v.Projected.Sources, 2)
	tok := v.Projected.Sources[0].ServiceAccountToken
	require.Equal(t, "token", tok.Path)
	require.Empty(t, tok.Audience, "the API server's own audience, which dpauth's TokenReview accepts")
	ca := v.Projected.Sources[1].DownwardAPI.Items[0]
	require.Equal(t, "ca.crt", ca.Path)
	require.Equal(t, "metadata.annotations['kuma.io/control-plane-ca-cert']", ca.FieldRef.FieldPath)

	// The patch, and the Pod it makes from the original: Inject's.
	patch, err := injector.Patch(pod, got)
	require.NoError(t, err)
	golden(t, "echo-pod.patch.json", indent(t, patch))
	samePod(t, got, applyPatch(t, pod, patch))
}

// samePod compares Pods as the API server sees them: their JSON (a
// quantity's in-memory form changes when it is read back).
func samePod(t *testing.T, want, got *corev1.Pod) {
	t.Helper()
	w, err := json.Marshal(want)
	require.NoError(t, err)
	g, err := json.Marshal(got)
	require.NoError(t, err)
	require.JSONEq(t, string(w), string(g))
}

func indent(t *testing.T, js []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Indent(&b, js, "", "  "))
	return append(b.Bytes(), '\n')
}

// TestPatchOfABarePod: a Pod without annotations, init containers or
// volumes gets them whole.
func TestPatchOfABarePod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	got := inject(t, injector.Input{Pod: pod, Namespace: "ns", NamespaceObject: enabledNamespace("ns")})
	patch, err := injector.Patch(pod, got)
	require.NoError(t, err)
	golden(t, "bare-pod.patch.json", indent(t, patch))
	samePod(t, got, applyPatch(t, pod, patch))

	// A Pod with its own init containers and volumes keeps them first.
	pod.Annotations = map[string]string{"team": "a/b~c"}
	pod.Spec.InitContainers = []corev1.Container{{Name: "migrate", Image: "app"}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	got = inject(t, injector.Input{Pod: pod, Namespace: "ns", NamespaceObject: enabledNamespace("ns")})
	require.Equal(t, []string{"migrate", "kuma-init"}, []string{got.Spec.InitContainers[0].Name, got.Spec.InitContainers[1].Name})
	require.Equal(t, "data", got.Spec.Volumes[0].Name)
	patch, err = injector.Patch(pod, got)
	require.NoError(t, err)
	require.Contains(t, string(patch), `"path":"/metadata/annotations/kuma.io~1sidecar-injected"`)
	require.Contains(t, string(patch), `"path":"/spec/initContainers/-"`)
	samePod(t, got, applyPatch(t, pod, patch))
}

// TestGeneratedNames: a Pod of a ReplicaSet has no name at admission; the
// proxy's name comes from the downward API.
func TestGeneratedNames(t *testing.T) {
	pod := echoPod()
	pod.Name, pod.GenerateName, pod.Namespace = "", "kuma-tcp-echo-7c9b8-", ""
	got := inject(t, injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: enabledNamespace("kuma-example")})
	sidecar := container(t, got.Spec.Containers, "kuma-sidecar")
	require.NotContains(t, sidecar.Args, "--name")
	require.Equal(t, []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
		{Name: "KUMA_DATAPLANE_NAME", Value: "$(POD_NAME).$(POD_NAMESPACE)"},
	}, sidecar.Env)
}

func TestWhichPods(t *testing.T) {
	labelled := enabledNamespace("kuma-example")
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "other"}}
	with := func(edit func(p *corev1.Pod)) *corev1.Pod {
		p := echoPod()
		edit(p)
		return p
	}
	injected := inject(t, injector.Input{Pod: echoPod(), Namespace: "kuma-example", NamespaceObject: labelled})
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		skip string // "" = injected
	}{
		{"enabled namespace", echoPod(), labelled, ""},
		{"another namespace", echoPod(), plain, injector.SkipNotInMesh},
		{"unknown namespace", echoPod(), nil, injector.SkipNotInMesh},
		{"namespace labelled disabled", echoPod(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "d", Labels: map[string]string{"kuma.io/sidecar-injection": "disabled"}}}, injector.SkipNotInMesh},
		{"opted out by annotation", with(func(p *corev1.Pod) { p.Annotations["kuma.io/sidecar-injection"] = "disabled" }), labelled, injector.SkipNotInMesh},
		{"opted out by label", with(func(p *corev1.Pod) { p.Labels["kuma.io/sidecar-injection"] = "false" }), labelled, injector.SkipNotInMesh},
		{"opted in by annotation", with(func(p *corev1.Pod) { p.Annotations["kuma.io/sidecar-injection"] = "enabled" }), plain, ""},
		{"opted in by label", with(func(p *corev1.Pod) { p.Labels["kuma.io/sidecar-injection"] = "yes" }), nil, ""},
		{"injected already", injected, labelled, injector.SkipAlreadyInjected},
		{"marked injected", with(func(p *corev1.Pod) { p.Annotations["kuma.io/sidecar-injected"] = "true" }), labelled, injector.SkipAlreadyInjected},
		{"has a kuma-sidecar", with(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "kuma-sidecar"})
		}), labelled, injector.SkipAlreadyInjected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := injector.Inject(injector.Input{Pod: tc.pod, Namespace: "kuma-example", NamespaceObject: tc.ns}, settings())
			require.Empty(t, r.Problems)
			require.Equal(t, tc.skip, r.Skip)
			require.Equal(t, tc.skip == "", r.Pod != nil)
		})
	}
}

func TestMeshAndExcludedPorts(t *testing.T) {
	ns := enabledNamespace("kuma-example")
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		mesh        *resource.MeshSpec
		wantMesh    string
		wantArgs    []string
	}{
		{"no metrics anywhere: the default port", nil, nil, "default", []string{"--exclude-inbound-ports", "5670"}},
		{"the mesh's port", nil, mesh(9100), "default", []string{"--exclude-inbound-ports", "9100"}},
		{"the Pod's port wins", map[string]string{"prometheus.metrics.kuma.io/port": "1234"}, mesh(9100), "default", []string{"--exclude-inbound-ports", "1234"}},
		{"the Pod's port without mesh metrics", map[string]string{"prometheus.metrics.kuma.io/port": "1234"}, nil, "default", []string{"--exclude-inbound-ports", "1234"}},
		{"excluded ports merged and sorted", map[string]string{"traffic.kuma.io/exclude-inbound-ports": "9000, 22,5670", "traffic.kuma.io/exclude-outbound-ports": "5432"}, nil, "default",
			[]string{"--exclude-inbound-ports", "22,5670,9000", "--exclude-outbound-ports", "5432"}},
		{"the Pod's mesh", map[string]string{"kuma.io/mesh": "payments"}, nil, "payments", []string{"--exclude-inbound-ports", "5670"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: tc.annotations},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
			got := inject(t, injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: ns, Mesh: tc.mesh})
			args := got.Spec.InitContainers[0].Args
			require.Equal(t, tc.wantArgs, args[len(args)-len(tc.wantArgs):])
			sidecar := container(t, got.Spec.Containers, "kuma-sidecar")
			require.Equal(t, tc.wantMesh, sidecar.Args[6], "%v", sidecar.Args)
		})
	}
	// The mesh of the Namespace's label.
	ns.Labels["kuma.io/mesh"] = "payments"
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	require.Equal(t, "payments", injector.MeshName(injector.Input{Pod: pod, NamespaceObject: ns}))
	got := inject(t, injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: ns})
	require.Equal(t, "payments", container(t, got.Spec.Containers, "kuma-sidecar").Args[6])
}

func TestBadAnnotationsRefuseThePod(t *testing.T) {
	ns := enabledNamespace("kuma-example")
	for _, tc := range []struct {
		key, value, want string
	}{
		{"prometheus.metrics.kuma.io/port", "http", `annotation "prometheus.metrics.kuma.io/port": "http" is not a port number (1-65535)`},
		{"prometheus.metrics.kuma.io/prot", "1234", `annotation "prometheus.metrics.kuma.io/prot": unknown annotation`},
		{"traffic.kuma.io/exclude-inbound-ports", "80,http", `annotation "traffic.kuma.io/exclude-inbound-ports": "80,http" is not a comma-separated list of port numbers (1-65535): "http"`},
		{"traffic.kuma.io/exclude-outbound-ports", "70000", `annotation "traffic.kuma.io/exclude-outbound-ports": "70000" is not a comma-separated list of port numbers`},
		{"kuma.io/sidecar-injection", "maybe", `annotation "kuma.io/sidecar-injection": "maybe" is not one of enabled, true, yes, disabled, false or no`},
		{"kuma.io/mesh", "Payments!", `annotation "kuma.io/mesh": "Payments!" is not a mesh name`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			pod := echoPod()
			pod.Annotations[tc.key] = tc.value
			r := injector.Inject(injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: ns}, settings())
			require.Nil(t, r.Pod)
			require.NotEmpty(t, r.Problems)
			var msgs []string
			for _, p := range r.Problems {
				msgs = append(msgs, p.Error())
			}
			require.Contains(t, strings.Join(msgs, "\n"), tc.want)
		})
	}
	// The injector's own names taken by the Pod.
	pod := echoPod()
	pod.Spec.InitContainers = []corev1.Container{{Name: "kuma-init"}}
	r := injector.Inject(injector.Input{Pod: pod, Namespace: "kuma-example", NamespaceObject: ns}, settings())
	require.Nil(t, r.Pod)
	require.Contains(t, r.Problems[0].Error(), "the Pod has a init container named kuma-init, the injector's own")
}
