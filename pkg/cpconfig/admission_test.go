package cpconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAdmissionServer(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, AdmissionServer{Address: "0.0.0.0", Port: 5443}, c.Runtime.Kubernetes.AdmissionServer, "the reference system's port")
	require.Equal(t, "0.0.0.0:5443", c.Runtime.Kubernetes.AdmissionServer.ListenAddress())

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  kubernetes:\n    admissionServer:\n      port: 6443\n      certDir: /certs\n"), 0o600))
	c, err = Load(f, env(map[string]string{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS": "::1"}))
	require.NoError(t, err)
	require.Equal(t, AdmissionServer{Address: "::1", Port: 6443, CertDir: "/certs"}, c.Runtime.Kubernetes.AdmissionServer)
	require.Equal(t, "[::1]:6443", c.Runtime.Kubernetes.AdmissionServer.ListenAddress())
	c, err = Load(f, env(map[string]string{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT": "5444", "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR": "/var/run/secrets/kuma.io/tls-cert"}))
	require.NoError(t, err)
	require.Equal(t, AdmissionServer{Address: "0.0.0.0", Port: 5444, CertDir: "/var/run/secrets/kuma.io/tls-cert"}, c.Runtime.Kubernetes.AdmissionServer)

	_, err = Load("", env(map[string]string{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT": "70000"}))
	require.ErrorContains(t, err, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT: must be a port number")
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  kubernetes:\n    admissionServer:\n      port: 70000\n"), 0o600))
	_, err = Load(f, env(nil))
	require.ErrorContains(t, err, "runtime.kubernetes.admissionServer.port (KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT): must be a port number")

	c.ListenOn("127.0.0.9")
	require.Equal(t, "127.0.0.9:0", c.Runtime.Kubernetes.AdmissionServer.ListenAddress())
}

// TestKubernetesClientConfig: the control plane's requests to the API server
// are limited as the reference system's are by default (100 per second,
// bursts of 100), not by client-go's 5 and 10; 0 is client-go's default.
func TestKubernetesClientConfig(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, KubernetesClientConfig{QPS: 100, BurstQPS: 100}, c.Runtime.Kubernetes.ClientConfig)

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  kubernetes:\n    clientConfig:\n      qps: 50\n      burstQps: 0\n"), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, KubernetesClientConfig{QPS: 50, BurstQPS: 0}, c.Runtime.Kubernetes.ClientConfig)
	c, err = Load(f, env(map[string]string{"KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_QPS": "200", "KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_BURST_QPS": "300"}))
	require.NoError(t, err)
	require.Equal(t, KubernetesClientConfig{QPS: 200, BurstQPS: 300}, c.Runtime.Kubernetes.ClientConfig)

	_, err = Load("", env(map[string]string{"KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_QPS": "fast"}))
	require.ErrorContains(t, err, `KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_QPS: must be a positive integer, got "fast"`)
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  kubernetes:\n    clientConfig:\n      burstQps: -1\n"), 0o600))
	_, err = Load(f, env(nil))
	require.ErrorContains(t, err, "runtime.kubernetes.clientConfig.burstQps (KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_BURST_QPS): must not be negative (0 is client-go's default), got -1")
}
