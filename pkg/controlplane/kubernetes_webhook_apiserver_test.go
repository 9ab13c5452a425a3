package controlplane_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
)

// TestKubernetesModeAdmissionWebhook: a control plane in Kubernetes mode,
// outside the cluster, serves the validating webhook with a certificate of
// its work directory's CA; registered by URL with that CA (every write sent
// to it, the control plane's own too), kubectl's invalid writes are refused
// with the REST API's messages and valid ones stored.
func TestKubernetesModeAdmissionWebhook(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	env.EnsureNamespace(t, "kuma-system")
	t.Setenv("KUBECONFIG", env.KubeconfigPath)
	cfg, err := cpconfig.Load("", func(k string) (string, bool) {
		return cpconfig.EnvironmentKubernetes, k == "KUMA_ENVIRONMENT"
	})
	require.NoError(t, err)
	cfg.General.WorkDir = t.TempDir()
	cfg.ListenOn("127.0.0.1")
	cp, err := controlplane.New(ctx, cfg, nil)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	ca, err := os.ReadFile(filepath.Join(cfg.General.WorkDir, controlplane.AdmissionServingFiles.CACert))
	require.NoError(t, err)
	registration, err := install.RenderWebhookConfiguration(install.WebhookOptions{URL: "https://" + cp.Addrs()["admission-server"] + webhook.Path, CABundle: ca})
	require.NoError(t, err)
	invalid := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: invalid\nspec:\n  mtls:\n    enabledBackend: ca-2\n    backends:\n    - name: ca-1\n      type: builtin\n"
	const want = "spec.mtls.enabledBackend: names no backend; defined backends: ca-1"
	// Deleted before the control plane stops (cleanups run last first).
	env.RegisterValidatingWebhook(t, install.WebhookConfigurationName, registration, invalid, want)
	apply := func(manifest string, args ...string) (string, string, error) {
		return env.Kubectl(ctx, []byte(manifest), append([]string{"apply", "-f", "-"}, args...)...)
	}
	_, stderr, err := apply(invalid)
	require.Error(t, err)
	require.Contains(t, stderr, `The Mesh "invalid" is invalid`)
	require.Contains(t, stderr, want)
	_, _, err = env.Kubectl(ctx, nil, "get", "mesh", "invalid")
	require.ErrorContains(t, err, "NotFound")

	// The guide's permissions, in the mesh the control plane made; one in
	// a mesh that does not exist is refused.
	out, stderr, err := env.Kubectl(ctx, nil, "apply", "-f", "../resource/testdata/guide/trafficpermissions-kubernetes.yaml")
	require.NoError(t, err, stderr)
	require.Contains(t, out, "grafana-to-prometheus")
	_, stderr, err = apply("apiVersion: kuma.io/v1alpha1\nkind: TrafficPermission\nmesh: nowhere\nmetadata:\n  name: lost\nspec:\n" +
		"  sources: [{match: {kuma.io/service: a}}]\n  destinations: [{match: {kuma.io/service: b}}]\n")
	require.Error(t, err)
	require.Contains(t, stderr, `mesh: mesh "nowhere" does not exist`)
}
