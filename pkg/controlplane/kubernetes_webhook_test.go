package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/kumametrics/mesh/pkg/k8s/webhook"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// admissionControlPlane is a control plane with only its admission server
// started, as New starts it in Kubernetes mode.
func admissionControlPlane(t *testing.T, cfg func(*ControlPlane)) *ControlPlane {
	t.Helper()
	st := memory.New()
	require.NoError(t, manager.New(st, nil).EnsureDefaultMesh(context.Background()))
	cp := bareControlPlane(t)
	if cfg != nil {
		cfg(cp)
	}
	require.NoError(t, cp.startAdmissionServer(st, "kuma-system", nil))
	return cp
}

const admissionReview = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"u-1","kind":{"group":"kuma.io","version":"v1alpha1","kind":"TrafficPermission"},
 "resource":{"group":"kuma.io","version":"v1alpha1","resource":"trafficpermissions"},
 "name":"grafana-to-prometheus","operation":"CREATE","userInfo":{"username":"admin"},
 "object":{"apiVersion":"kuma.io/v1alpha1","kind":"TrafficPermission","mesh":"MESH","metadata":{"name":"grafana-to-prometheus"},
  "spec":{"sources":[{"match":{"kuma.io/service":"grafana_kuma-metrics_svc_80"}}],"destinations":[{"match":{"kuma.io/service":"prometheus-server_kuma-metrics_svc_80"}}]}}}}`

// review posts the review of a TrafficPermission in mesh over a new
// connection verified against roots.
func review(t *testing.T, addr string, roots *x509.CertPool, mesh string) (*admissionv1.AdmissionResponse, error) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	res, err := client.Post("https://"+addr+webhook.Path, "application/json", strings.NewReader(strings.Replace(admissionReview, "MESH", mesh, 1)))
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	var out admissionv1.AdmissionReview
	require.NoError(t, json.Unmarshal(b, &out))
	return out.Response, nil
}

func pool(t *testing.T, pemFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	require.NoError(t, err)
	p, err := pki.Pool(b)
	require.NoError(t, err)
	return p
}

func TestAdmissionServerWithAGeneratedCertificate(t *testing.T) {
	cp := admissionControlPlane(t, nil)
	addr := cp.Addrs()["admission-server"]
	require.NotEmpty(t, addr)
	roots := pool(t, filepath.Join(cp.cfg.General.WorkDir, AdmissionServingFiles.CACert))

	// It answers before Run: the control plane's first writes may need it.
	resp, err := review(t, addr, roots, "default")
	require.NoError(t, err)
	require.True(t, resp.Allowed, "%+v", resp.Result)
	require.EqualValues(t, "u-1", resp.UID)
	resp, err = review(t, addr, roots, "payments")
	require.NoError(t, err)
	require.False(t, resp.Allowed)
	require.Equal(t, `mesh: mesh "payments" does not exist`, resp.Result.Message)

	// Its task stops it.
	require.Len(t, cp.tasks, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.tasks[0].run(ctx) }()
	cancel()
	require.NoError(t, <-done)
	_, err = review(t, addr, roots, "default")
	require.Error(t, err)
	cp.close()
}

func TestAdmissionServerReadsItsCertificateDirectory(t *testing.T) {
	dir := t.TempDir()
	// issue writes a certificate for 127.0.0.1 by a new CA into dir and
	// returns the CA.
	issue := func() *x509.CertPool {
		ca, err := pki.NewCA("test-ca", pki.KeyType{}, time.Now(), time.Hour)
		require.NoError(t, err)
		leaf, err := pki.Issue(ca, pki.Leaf{CommonName: "kuma-control-plane", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Lifetime: time.Hour}, time.Now())
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.crt"), leaf.CertPEM, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "tls.key"), leaf.KeyPEM, 0o600))
		p := x509.NewCertPool()
		p.AddCert(ca.Cert)
		return p
	}
	first := issue()
	cp := admissionControlPlane(t, func(cp *ControlPlane) { cp.cfg.Runtime.Kubernetes.AdmissionServer.CertDir = dir })
	defer cp.close()
	addr := cp.Addrs()["admission-server"]
	resp, err := review(t, addr, first, "default")
	require.NoError(t, err)
	require.True(t, resp.Allowed)
	_, err = os.Stat(filepath.Join(cp.cfg.General.WorkDir, AdmissionServingFiles.CACert))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing generated when a directory is given")

	// A renewed Secret is served from the next handshake, without a restart.
	second := issue()
	resp, err = review(t, addr, second, "default")
	require.NoError(t, err)
	require.True(t, resp.Allowed)
	_, err = review(t, addr, first, "default")
	require.ErrorContains(t, err, "certificate signed by unknown authority")
}

// bareControlPlane is a control plane with nothing started.
func bareControlPlane(t *testing.T) *ControlPlane {
	return &ControlPlane{cfg: testConfig(t, t.TempDir()), log: slog.New(slog.DiscardHandler), listeners: map[string]net.Listener{},
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "server_accept_errors_total"}, []string{"server"})}
}

func TestAdmissionServerRefusesABadCertificateDirectory(t *testing.T) {
	cp := bareControlPlane(t)
	cp.cfg.Runtime.Kubernetes.AdmissionServer.CertDir = t.TempDir()
	err := cp.startAdmissionServer(memory.New(), "kuma-system", nil)
	require.ErrorContains(t, err, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR")
	require.ErrorContains(t, err, "tls.crt")
	require.Empty(t, cp.listeners)
}
