package webhook_test

import (
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

// serveWebhookOver starts the webhook on a fresh loopback address with a
// certificate of a new CA in a certificate directory, as kuma-cp outside
// the cluster serves it, and returns its URL and CA.
func serveWebhookOver(t *testing.T, meshes webhook.MeshReader) (url string, ca []byte) {
	t.Helper()
	host := k8stest.LoopbackHost()
	now := time.Now()
	authority, err := pki.NewCA("webhook-test-ca", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	leaf, err := pki.Issue(authority, pki.Leaf{CommonName: "kuma-control-plane", IPs: []net.IP{net.ParseIP(host)}, Server: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, webhook.CertFile), leaf.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, webhook.KeyFile), leaf.KeyPEM, 0o600))
	tlsConfig, err := webhook.CertDirTLS(dir)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	srv := &http.Server{Handler: webhook.Handler(&webhook.Validator{Names: v1alpha1.Names{SystemNamespace: "kuma-system"}, Meshes: meshes}, log),
		TLSConfig: tlsConfig, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		require.NoError(t, srv.Close())
		require.ErrorIs(t, <-served, http.ErrServerClosed)
	})
	return "https://" + ln.Addr().String() + webhook.Path, authority.CertPEM
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// invalidMesh breaks rules the CRD's schema cannot express: the webhook's.
const invalidMesh = `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: invalid-metrics
spec:
  metrics:
    enabledBackend: prometheus-2
    backends:
    - name: prometheus-1
      type: graphite
      conf:
        path: metrics
        envoy:
          filterRegex: "(["
`

// TestKubectlThroughTheWebhook: registered by URL, as for a control plane
// outside the cluster, the webhook lets kubectl apply the guide's Mesh and
// TrafficPermissions and refuses invalid ones with the REST API's messages
// at their fields; nothing invalid is stored.
func TestKubectlThroughTheWebhook(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	c := env.Client(t)
	url, ca := serveWebhookOver(t, webhook.APIMeshes{Reader: c})
	cfg, err := install.RenderWebhookConfiguration(install.WebhookOptions{URL: url, CABundle: ca})
	require.NoError(t, err)
	env.RegisterValidatingWebhook(t, install.WebhookConfigurationName, cfg, invalidMesh, "spec.metrics.enabledBackend: names no backend")
	apply := func(manifest string, args ...string) (string, string, error) {
		return env.Kubectl(ctx, []byte(manifest), append([]string{"apply", "-f", "-"}, args...)...)
	}

	// The guide's resources, as written.
	for _, f := range []string{"mesh-kubernetes-short.yaml", "mesh-kubernetes-full.yaml", "mesh-kubernetes-mtls.yaml", "trafficpermissions-kubernetes.yaml"} {
		out, stderr, err := env.Kubectl(ctx, nil, "apply", "-f", filepath.Join(guideDir, f))
		require.NoError(t, err, "%s: %s", f, stderr)
		t.Logf("kubectl apply -f %s: %s", f, strings.TrimSpace(out))
	}
	out, _, err := env.Kubectl(ctx, nil, "get", "trafficpermissions", "-o", "name")
	require.NoError(t, err)
	require.Equal(t, "trafficpermission.kuma.io/grafana-to-prometheus\ntrafficpermission.kuma.io/metrics-permissions\n", out)

	// An invalid Mesh: kubectl shows every field and message, nothing is stored.
	_, stderr, err := apply(invalidMesh)
	require.Error(t, err)
	t.Logf("kubectl apply of an invalid Mesh:\n%s", stderr)
	require.Contains(t, stderr, `The Mesh "invalid-metrics" is invalid`)
	for _, want := range []string{
		`spec.metrics.backends[0].type: unknown backend type "graphite"; available types: prometheus`,
		`spec.metrics.backends[0].conf.path: must start with '/'`,
		`spec.metrics.backends[0].conf.envoy.filterRegex: is not a valid regular expression`,
		`spec.metrics.enabledBackend: names no backend; defined backends: prometheus-1`,
	} {
		require.Contains(t, stderr, want)
	}
	err = c.Get(ctx, client.ObjectKey{Name: "invalid-metrics"}, &v1alpha1.Mesh{})
	require.True(t, apierrors.IsNotFound(err), "%v", err)

	// A TrafficPermission of a mesh that does not exist, as the REST API says.
	tp := strings.NewReplacer("mesh: default", "mesh: payments", "name: grafana-to-prometheus", "name: payments-grafana").Replace(tpDefault)
	_, stderr, err = apply(tp)
	require.Error(t, err)
	require.Contains(t, stderr, `mesh: mesh "payments" does not exist`)

	// A new Mesh and its TrafficPermission in one apply: the mesh is found.
	out, stderr, err = apply("apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: payments\n---\n" + tp)
	require.NoError(t, err, stderr)
	require.Contains(t, out, "trafficpermission.kuma.io/payments-grafana created")

	// An update that breaks a stored resource is refused; it stays as it was.
	broken := strings.Replace(tp, "kuma.io/service: grafana_kuma-metrics_svc_80", `kuma.io/service: "grafana kuma"`, 1)
	_, stderr, err = apply(broken)
	require.Error(t, err)
	require.Contains(t, stderr, `spec.sources[0].match["kuma.io/service"]: `+resource.TagValueMessage)
	var stored v1alpha1.TrafficPermission
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "payments-grafana"}, &stored))
	require.Contains(t, string(stored.Spec), "grafana_kuma-metrics_svc_80")
	require.Equal(t, "payments", stored.Mesh)
	// As is moving it to another mesh.
	_, stderr, err = apply(strings.Replace(tp, "mesh: payments", "mesh: default", 1))
	require.Error(t, err)
	require.Contains(t, stderr, `mesh: cannot be changed from "payments": delete the TrafficPermission and create it in mesh "default"`)
	// A label changes nothing the webhook judges.
	_, stderr, err = env.Kubectl(ctx, nil, "label", "trafficpermission", "payments-grafana", "team=payments", "--overwrite")
	require.NoError(t, err, stderr)
	// Deletes are not judged.
	_, stderr, err = env.Kubectl(ctx, nil, "delete", "trafficpermission", "payments-grafana")
	require.NoError(t, err, stderr)
	_, stderr, err = env.Kubectl(ctx, nil, "delete", "mesh", "payments")
	require.NoError(t, err, stderr)
}
