package controlplane_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
)

// TestKubeConfigLimitsRequestsAsConfigured: the API server configuration of
// KUBECONFIG carries runtime.kubernetes.clientConfig's rate, so every client
// of the control plane (store, pod controller, token checks) gets it;
// without it client-go limits them to 5 requests a second.
func TestKubeConfigLimitsRequestsAsConfigured(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: t}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`), 0o600))
	t.Setenv("KUBECONFIG", kubeconfig)

	rc, err := controlplane.KubeConfig(cpconfig.Default().Runtime.Kubernetes.ClientConfig)
	require.NoError(t, err)
	require.Equal(t, "https://127.0.0.1:6443", rc.Host)
	require.Equal(t, float32(100), rc.QPS)
	require.Equal(t, 100, rc.Burst)

	rc, err = controlplane.KubeConfig(cpconfig.KubernetesClientConfig{QPS: 20, BurstQPS: 40})
	require.NoError(t, err)
	require.Equal(t, float32(20), rc.QPS)
	require.Equal(t, 40, rc.Burst)
}
