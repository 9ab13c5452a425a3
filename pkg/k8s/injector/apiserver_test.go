package injector_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/injector"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func podManifest(namespace, name string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  containers:\n  - name: app\n    image: app\n", name, namespace)
}

func appPod(namespace, name string, annotations, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kumahq/kuma-tcp-echo:0.1.0"}}},
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestInjectionThroughTheAPIServer: the injector registered with
// `kumactl install control-plane`'s MutatingWebhookConfiguration (by URL,
// as for a control plane outside the cluster) on a real kube-apiserver:
// Pods created through the API server come back injected exactly when they
// belong in the mesh; Deployments (their Pod templates) and other kinds
// are never touched; a bad annotation refuses the Pod naming it.
func TestInjectionThroughTheAPIServer(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	c := env.Client(t)
	inj := &injector.Injector{Settings: settings(), Namespaces: c, Meshes: webhook.APIMeshes{Reader: c}}
	mux := http.NewServeMux()
	mux.Handle(injector.Path, webhook.Serve(inj, slog.New(slog.NewTextHandler(testWriter{t}, nil))))
	base, ca := k8stest.ServeAdmission(t, mux)
	cfg, err := install.RenderInjectorConfiguration(install.WebhookOptions{URL: base + injector.Path, CABundle: ca})
	require.NoError(t, err)

	meshNS := env.Namespace(t, "kuma-example", map[string]string{"kuma.io/sidecar-injection": "enabled"})
	otherNS := env.Namespace(t, "other", nil)
	env.RegisterMutatingWebhook(t, install.InjectorConfigurationName, cfg, podManifest(meshNS, "probe"), "name: "+injector.SidecarName)

	create := func(pod *corev1.Pod) *corev1.Pod {
		t.Helper()
		require.NoError(t, c.Create(ctx, pod))
		var got corev1.Pod
		require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(pod), &got))
		return &got
	}
	injected := func(p *corev1.Pod) bool {
		return p.Annotations[injector.SidecarInjected] == "true" && slices.Contains(names(p.Spec.Containers), injector.SidecarName)
	}

	// A Pod of the mesh namespace, read back from the API server.
	pod := create(appPod(meshNS, "echo", map[string]string{"prometheus.metrics.kuma.io/port": "1234"}, nil))
	require.Equal(t, []string{"app", "kuma-sidecar"}, names(pod.Spec.Containers))
	require.Equal(t, []string{"kuma-init"}, names(pod.Spec.InitContainers))
	require.Equal(t, map[string]string{
		"prometheus.metrics.kuma.io/port":            "1234",
		"kuma.io/sidecar-injected":                   "true",
		"kuma.io/transparent-proxying":               "enabled",
		"kuma.io/transparent-proxying-inbound-port":  "15006",
		"kuma.io/transparent-proxying-outbound-port": "15001",
		"kuma.io/control-plane-ca-cert":              testCA,
	}, pod.Annotations)
	sidecar := pod.Spec.Containers[1]
	require.Equal(t, []string{"run", "--cp-address", "https://kuma-control-plane.kuma-system:5678", "--name", "echo." + meshNS, "--mesh", "default",
		"--ca-cert-file", "/var/run/secrets/kuma.io/sidecar/ca.crt", "--dataplane-token-file", "/var/run/secrets/kuma.io/sidecar/token"}, sidecar.Args)
	require.Equal(t, "50m", sidecar.Resources.Requests.Cpu().String())
	require.Equal(t, "512Mi", sidecar.Resources.Limits.Memory().String())
	require.Equal(t, []string{"install", "transparent-proxy", "--redirect-inbound-port", "15006", "--redirect-outbound-port", "15001",
		"--kuma-dp-uid", "5678", "--exclude-inbound-ports", "1234"}, pod.Spec.InitContainers[0].Args)
	vol := pod.Spec.Volumes[len(pod.Spec.Volumes)-1]
	require.Equal(t, injector.VolumeName, vol.Name)
	require.Equal(t, "token", vol.Projected.Sources[0].ServiceAccountToken.Path)
	require.Empty(t, vol.Projected.Sources[0].ServiceAccountToken.Audience)

	// A Pod named by the API server (generateName): the proxy's name comes
	// from the downward API when the webhook does not see the name.
	gen := appPod(meshNS, "", nil, nil)
	gen.GenerateName = "echo-"
	gen = create(gen)
	require.True(t, injected(gen))
	// The API server names it after the admission webhooks ran.
	genSidecar := gen.Spec.Containers[1]
	require.NotContains(t, genSidecar.Args, "--name")
	require.Equal(t, corev1.EnvVar{Name: "KUMA_DATAPLANE_NAME", Value: "$(POD_NAME).$(POD_NAMESPACE)"}, genSidecar.Env[2])
	require.Equal(t, "metadata.name", genSidecar.Env[0].ValueFrom.FieldRef.FieldPath)

	// The Pod's mesh, read from the API server: its metrics port is excluded.
	mesh := "injector-" + randomSuffix()
	require.NoError(t, c.Create(ctx, &v1alpha1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: mesh},
		Spec: []byte(`{"metrics":{"enabledBackend":"prometheus-1","backends":[{"name":"prometheus-1","type":"prometheus","conf":{"port":9100}}]}}`)}))
	inMesh := create(appPod(meshNS, "in-"+mesh, map[string]string{"kuma.io/mesh": mesh}, nil))
	require.Contains(t, inMesh.Spec.Containers[1].Args, mesh)
	require.Equal(t, "9100", inMesh.Spec.InitContainers[0].Args[len(inMesh.Spec.InitContainers[0].Args)-1])

	// Left alone: opted out (annotation or label), other namespaces.
	for _, p := range []*corev1.Pod{
		appPod(meshNS, "opted-out", map[string]string{"kuma.io/sidecar-injection": "disabled"}, nil),
		appPod(meshNS, "opted-out-by-label", nil, map[string]string{"kuma.io/sidecar-injection": "false"}),
		appPod(otherNS, "elsewhere", nil, nil),
	} {
		got := create(p)
		require.Equal(t, []string{"app"}, names(got.Spec.Containers), p.Name)
		require.Empty(t, got.Spec.InitContainers, p.Name)
		require.NotContains(t, got.Annotations, injector.SidecarInjected, p.Name)
	}
	// A Pod that opts in elsewhere is injected.
	require.True(t, injected(create(appPod(otherNS, "opted-in", map[string]string{"kuma.io/sidecar-injection": "enabled"}, nil))))
	require.True(t, injected(create(appPod(otherNS, "opted-in-by-label", nil, map[string]string{"kuma.io/sidecar-injection": "yes"}))))

	// Re-submitting an injected Pod changes nothing: one proxy, one init container.
	again := pod.DeepCopy()
	again.ObjectMeta = metav1.ObjectMeta{Name: "echo-again", Namespace: meshNS, Annotations: pod.Annotations}
	again.Spec.NodeName = ""
	got := create(again)
	require.Equal(t, names(pod.Spec.Containers), names(got.Spec.Containers))
	require.Equal(t, names(pod.Spec.InitContainers), names(got.Spec.InitContainers))
	require.Equal(t, pod.Spec.Containers[1].Args, got.Spec.Containers[1].Args, "the proxy still names the Pod it was made for: nothing was rewritten")
	require.Len(t, got.Spec.Volumes, len(pod.Spec.Volumes))

	// A Deployment's Pod template is not a Pod: not injected.
	replicas := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: meshNS},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "echo"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}},
	}
	require.NoError(t, c.Create(ctx, dep))
	var storedDep appsv1.Deployment
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(dep), &storedDep))
	require.Equal(t, []string{"app"}, names(storedDep.Spec.Template.Spec.Containers))
	require.Empty(t, storedDep.Spec.Template.Spec.InitContainers)

	// A bad annotation refuses the Pod, naming it (kubectl shows it).
	_, stderr, err := env.Kubectl(ctx, []byte(strings.Replace(podManifest(meshNS, "bad-port"), "metadata:\n",
		"metadata:\n  annotations:\n    prometheus.metrics.kuma.io/port: http\n", 1)), "apply", "-f", "-")
	require.Error(t, err)
	t.Logf("kubectl apply of a Pod with a bad annotation: %s", strings.TrimSpace(stderr))
	require.Contains(t, stderr, `The Pod "bad-port" is invalid: metadata.annotations[prometheus.metrics.kuma.io/port]: annotation "prometheus.metrics.kuma.io/port": "http" is not a port number (1-65535)`)
	err = c.Create(ctx, appPod(meshNS, "bad-exclude", map[string]string{"traffic.kuma.io/exclude-inbound-ports": "80,x"}, nil))
	require.ErrorContains(t, err, `annotation "traffic.kuma.io/exclude-inbound-ports": "80,x" is not a comma-separated list of port numbers`)
}

// TestReviewDecisions: the injector's answers to requests it does not
// inject, and to a CA file it cannot read, with the real API server's
// Namespaces and Meshes behind it.
func TestReviewDecisions(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	c := env.Client(t)
	meshNS := env.Namespace(t, "kuma-example", map[string]string{"kuma.io/sidecar-injection": "enabled"})
	podJSON, err := json.Marshal(appPod(meshNS, "echo", nil, nil))
	require.NoError(t, err)
	request := func(op admissionv1.Operation, kind string, raw []byte) *admissionv1.AdmissionRequest {
		return &admissionv1.AdmissionRequest{UID: "u-1", Operation: op, Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
			Namespace: meshNS, Name: "echo", Object: runtime.RawExtension{Raw: raw}}
	}
	inj := &injector.Injector{Settings: settings(), Namespaces: c, Meshes: webhook.APIMeshes{Reader: c}}

	resp := inj.Review(ctx, request(admissionv1.Create, "Pod", podJSON))
	require.True(t, resp.Allowed)
	require.Equal(t, types.UID("u-1"), resp.UID)
	require.Equal(t, admissionv1.PatchTypeJSONPatch, *resp.PatchType)
	require.Contains(t, string(resp.Patch), `"name":"kuma-sidecar"`)
	// Updates, other kinds: allowed as they are.
	for _, req := range []*admissionv1.AdmissionRequest{request(admissionv1.Update, "Pod", podJSON), request(admissionv1.Create, "ConfigMap", []byte(`{}`))} {
		resp := inj.Review(ctx, req)
		require.True(t, resp.Allowed)
		require.Nil(t, resp.Patch)
	}
	// Not a Pod: a bad request.
	resp = inj.Review(ctx, request(admissionv1.Create, "Pod", []byte(`{"spec":{"containers":"x"}}`)))
	require.False(t, resp.Allowed)
	require.EqualValues(t, http.StatusBadRequest, resp.Result.Code)

	// The CA, read at every review: missing or not PEM refuses the Pod
	// (failing closed), present is injected as it is now.
	dir := t.TempDir()
	inj.CACertFile = filepath.Join(dir, "ca.crt")
	resp = inj.Review(ctx, request(admissionv1.Create, "Pod", podJSON))
	require.False(t, resp.Allowed)
	require.EqualValues(t, http.StatusServiceUnavailable, resp.Result.Code)
	require.Contains(t, resp.Result.Message, "runtime.kubernetes.injector.caCertFile")
	require.NoError(t, os.WriteFile(inj.CACertFile, []byte("not a certificate"), 0o600))
	resp = inj.Review(ctx, request(admissionv1.Create, "Pod", podJSON))
	require.False(t, resp.Allowed)
	require.Contains(t, resp.Result.Message, "no PEM certificate")
	_, ca := k8stest.ServeAdmission(t, http.NotFoundHandler())
	require.NoError(t, os.WriteFile(inj.CACertFile, ca, 0o600))
	resp = inj.Review(ctx, request(admissionv1.Create, "Pod", podJSON))
	require.True(t, resp.Allowed)
	require.Contains(t, string(resp.Patch), strings.ReplaceAll(strings.TrimSpace(string(ca)), "\n", `\n`))
}
