package kumactl_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

// startControlPlane runs a real control plane in-process on loopback ports,
// on the given store, loopback callers admin; it stops with the test. It
// returns the address of its API.
func startControlPlane(t *testing.T, storeType string) string {
	t.Helper()
	cfg := cpconfig.Default()
	cfg.General.WorkDir = t.TempDir()
	cfg.Store.Type = storeType
	cfg.ListenOn("127.0.0.1")
	cfg.APIServer.Authn.LocalhostIsAdmin = true
	require.NoError(t, cfg.Validate())
	cp, err := controlplane.New(t.Context(), cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + cp.Addrs()["api"]
}

// kumactlFor is an env whose config file names the control plane at address.
func kumactlFor(t *testing.T, address string) *env {
	t.Helper()
	e := &env{t: t, cfgFile: filepath.Join(t.TempDir(), ".kumactl", "config")}
	cfg := config.Default()
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "cp", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: address}}}, false))
	require.NoError(t, config.Save(e.cfgFile, cfg))
	return e
}

const populate = `type: Mesh
name: secure
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
type: Dataplane
mesh: secure
name: web-1
networking:
  address: 127.0.0.2
  inbound:
  - port: 8080
    tags:
      kuma.io/service: web
---
type: Dataplane
mesh: default
name: backend-1
networking:
  address: 127.0.0.3
  inbound:
  - port: 9090
    tags:
      kuma.io/service: backend
      version: v2
---
type: TrafficPermission
mesh: secure
name: web-to-backend
sources:
- match:
    kuma.io/service: web
destinations:
- match:
    kuma.io/service: backend
---
type: Secret
mesh: default
name: db-password
data: c2VjcmV0
`

// waitCA polls the control plane until the builtin CA ca-1 of mesh secure
// exists, and returns it.
func waitCA(t *testing.T, c *apiclient.Client) *pki.KeyPair {
	t.Helper()
	var pair *pki.KeyPair
	require.Eventually(t, func() bool {
		var err error
		pair, err = ca.Load(func(mesh, name string) *resource.Object {
			o, err := c.Get(t.Context(), resource.KindSecret, mesh, name)
			if err != nil {
				return nil
			}
			return o
		}, "secure", "ca-1")
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "the CA of mesh secure")
	return pair
}

// scraperCertificate has the control plane's CA of mesh secure certify a
// new key.
func scraperCertificate(t *testing.T, c *apiclient.Client) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	got, err := c.GenerateScraperCertificate(t.Context(), "secure", "prometheus", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), time.Hour)
	require.NoError(t, err)
	certs, err := pki.ParseCertificates([]byte(got.Certificate))
	require.NoError(t, err)
	return certs[0]
}

func verifies(cert *x509.Certificate, by *pki.KeyPair) error {
	roots := x509.NewCertPool()
	roots.AddCert(by.Cert)
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// TestExportRestoresIntoAFreshControlPlane: a control plane on SQLite,
// populated (meshes, one with builtin mTLS, dataplanes, permissions, a
// secret), is exported; the export applied to a fresh control plane and
// exported again gives the same stream; with --include-secrets the mTLS
// mesh keeps its CA: a certificate issued before the move verifies with
// the CA after it, and the new control plane issues with that CA.
func TestExportRestoresIntoAFreshControlPlane(t *testing.T) {
	srcAddr := startControlPlane(t, cpconfig.StoreSQLite)
	src := kumactlFor(t, srcAddr)
	src.stdin = populate
	res := src.run("apply", "-f", "-")
	require.Equal(t, 0, res.code, res.stderr)
	srcClient, err := apiclient.New(srcAddr)
	require.NoError(t, err)
	srcCA := waitCA(t, srcClient)
	before := scraperCertificate(t, srcClient)

	// Without --include-secrets: no Secret, and stderr says what was left out
	// (the user's secret and the CA's key and certificate).
	res = src.run("export")
	require.Equal(t, 0, res.code, res.stderr)
	require.NotContains(t, res.stdout, "type: Secret")
	require.Contains(t, res.stderr, "left out 3 secrets: use --include-secrets to export them\n")
	require.Contains(t, res.stderr, "left out 5 global-secrets: use --include-secrets to export them\n",
		"and the control plane's own: token signing keys, admin token, serving CAs")
	withoutSecrets := res.stdout

	dir := t.TempDir()
	exported := filepath.Join(dir, "export.yaml")
	res = src.run("export", "--include-secrets", "-o", exported)
	require.Equal(t, 0, res.code, res.stderr)
	require.Empty(t, strings.TrimSpace(strings.ReplaceAll(res.stderr, "exported 2 meshes, 3 secrets, 2 dataplanes, 3 traffic-permissions, 5 global-secrets", "")), res.stderr)
	info, err := os.Stat(exported)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "an export with secrets is readable by its owner only")
	data, err := os.ReadFile(exported)
	require.NoError(t, err)
	first := string(data)
	t.Logf("export:\n%s", first)
	require.NotContains(t, first, "creationTime")
	require.NotContains(t, first, "modificationTime")
	require.NotContains(t, first, "DataplaneInsight")
	require.NotContains(t, first, "ControlPlaneInstance")
	// Meshes first, then the secrets, then the rest.
	docs := strings.Split(first, "\n---\n")
	require.Len(t, docs, 15)
	var kinds []string
	for _, d := range docs {
		kinds = append(kinds, strings.TrimPrefix(strings.SplitN(d, "\n", 2)[0], "type: "))
	}
	require.Equal(t, []string{"Mesh", "Mesh", "Secret", "Secret", "Secret", "Dataplane", "Dataplane", "TrafficPermission", "TrafficPermission", "TrafficPermission",
		"GlobalSecret", "GlobalSecret", "GlobalSecret", "GlobalSecret", "GlobalSecret"}, kinds)

	// Into a fresh control plane (memory store), then out again.
	dstAddr := startControlPlane(t, cpconfig.StoreMemory)
	dst := kumactlFor(t, dstAddr)
	res = dst.run("apply", "-f", exported)
	require.Equal(t, 0, res.code, res.stderr)
	dstClient, err := apiclient.New(dstAddr)
	require.NoError(t, err)
	res = dst.run("export", "--include-secrets")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, first, res.stdout, "the restored control plane exports the same stream")
	res = dst.run("export")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, withoutSecrets, res.stdout)

	// The CA came along: the certificate issued before verifies with the
	// CA after the move, and the new control plane issues with it.
	dstCA := waitCA(t, dstClient)
	require.Equal(t, srcCA.CertPEM, dstCA.CertPEM)
	require.NoError(t, verifies(before, dstCA))
	require.NoError(t, verifies(scraperCertificate(t, dstClient), srcCA))
}

// Export reads collections in pages of 1000, following the next links, and
// writes a page before reading the next.
func TestExportPages(t *testing.T) {
	e := newEnv(t)
	e.cp.List = func(w http.ResponseWriter, r *http.Request, d resource.Descriptor, _ string) {
		if d.Kind != resource.KindDataplane {
			writePage(w, []*resource.Object{})
			return
		}
		dp := fixtureDataplanes()[0]
		if r.URL.Query().Get("offset") == "" {
			writeJSON(w, http.StatusOK, map[string]any{"total": 2, "items": []*resource.Object{dp}, "next": "http://elsewhere:5681/dataplanes?offset=1&size=1000"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"total": 2, "items": []*resource.Object{dp}, "next": nil})
	}
	res := e.run("export")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, []string{
		"GET /meshes?size=1000", "GET /dataplanes?size=1000", "GET /dataplanes?offset=1&size=1000", "GET /traffic-permissions?size=1000",
		"GET /secrets?size=1", "GET /global-secrets?size=1",
	}, e.cp.seen())
	require.Equal(t, 2, strings.Count(res.stdout, "type: Dataplane\n"))
	require.NotContains(t, res.stdout, "creationTime")
	require.Equal(t, "exported 0 meshes, 2 dataplanes, 0 traffic-permissions\n", res.stderr)
}
