package controlplane_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/k8s/injector"
)

// TestKubernetesModeInjectsSidecars: a control plane in Kubernetes mode
// serves the sidecar injector on its admission server, beside the
// validating webhook; registered by URL with the admission server's CA, a
// Pod created in a namespace labelled for injection comes back with the
// configured proxy image, the control plane's address and the dataplane
// server's CA (the one the control plane generated in its work directory).
func TestKubernetesModeInjectsSidecars(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	var cfg cpconfig.Config
	cp := startKubernetesMode(t, env, func(c *cpconfig.Config) {
		c.Runtime.Kubernetes.Injector.SidecarContainer.Image = "registry.local/kuma-dp:test"
		cfg = *c
	})
	ca, err := os.ReadFile(filepath.Join(cfg.General.WorkDir, controlplane.AdmissionServingFiles.CACert))
	require.NoError(t, err)
	registration, err := install.RenderInjectorConfiguration(install.WebhookOptions{URL: "https://" + cp.Addrs()["admission-server"] + injector.Path, CABundle: ca})
	require.NoError(t, err)
	ns := env.Namespace(t, "kuma-example", map[string]string{"kuma.io/sidecar-injection": "enabled"})
	probe := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\n  namespace: " + ns + "\nspec:\n  containers:\n  - {name: app, image: app}\n"
	// Deleted before the control plane stops (cleanups run last first).
	env.RegisterMutatingWebhook(t, install.InjectorConfigurationName, registration, probe, "registry.local/kuma-dp:test")

	c := env.Client(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kumahq/kuma-tcp-echo:0.1.0"}}}}
	require.NoError(t, c.Create(ctx, pod))
	var got corev1.Pod
	require.NoError(t, c.Get(ctx, client.ObjectKeyFromObject(pod), &got))
	require.Len(t, got.Spec.Containers, 2)
	sidecar := got.Spec.Containers[1]
	require.Equal(t, "registry.local/kuma-dp:test", sidecar.Image)
	require.Equal(t, "registry.local/kuma-dp:test", got.Spec.InitContainers[0].Image, "the init container runs the sidecar's image")
	require.Equal(t, []string{"run", "--cp-address", "https://kuma-control-plane.kuma-system:5678", "--name", "echo." + ns, "--mesh", "default"}, sidecar.Args[:7])
	dpCA, err := os.ReadFile(filepath.Join(cfg.General.WorkDir, dpconfig.ServerCAFile))
	require.NoError(t, err)
	require.Equal(t, string(dpCA), got.Annotations[injector.ControlPlaneCACert], "the proxy trusts the dataplane server's CA")
	require.Equal(t, "64Mi", sidecar.Resources.Requests.Memory().String())
}
