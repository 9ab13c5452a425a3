package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/pki"
)

// TestMain checks for leaked goroutines after the tests, and after the
// Kubernetes test's API server has stopped.
func TestMain(m *testing.M) {
	k8stest.Main(m, func() error { return goleak.Find() })
}

// testConfig is a control plane on the memory store, every listener on a
// free port of 127.0.0.1, loopback callers not admin.
func testConfig(t *testing.T, workDir string) cpconfig.Config {
	t.Helper()
	cfg := cpconfig.Default()
	cfg.General.WorkDir = workDir
	cfg.Store.Type = cpconfig.StoreMemory
	cfg.ListenOn("127.0.0.1")
	cfg.APIServer.Authn.LocalhostIsAdmin = false
	require.NoError(t, cfg.Validate())
	return cfg
}

// run starts a control plane and returns its addresses and a function that
// stops it (also called at cleanup).
func run(t *testing.T, cfg cpconfig.Config) (addrs map[string]string, stop func()) {
	t.Helper()
	cp, err := New(t.Context(), cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(stop)
	return cp.Addrs(), stop
}

func httpsClient(t *testing.T, roots *x509.CertPool, certs ...tls.Certificate) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type answer struct {
	status int
	body   string
	proto  int
}

func get(t *testing.T, c *http.Client, url, token string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return answer{status: res.StatusCode, body: string(b), proto: res.ProtoMajor}
}

func readPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	pool, err := pki.Pool(b)
	require.NoError(t, err)
	return pool
}

func adminToken(t *testing.T, workDir string) string {
	t.Helper()
	b, err := os.ReadFile(authn.AdminTokenPath(workDir))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}

func TestAPIOverHTTPSWithTheGeneratedCertificate(t *testing.T) {
	workDir := t.TempDir()
	addrs, stop := run(t, testConfig(t, workDir))
	require.Contains(t, addrs, "api-https")
	require.NotEqual(t, addrs["api"], addrs["api-https"])

	caFile := filepath.Join(workDir, "api-server-ca.pem")
	roots := readPool(t, caFile)
	client := httpsClient(t, roots)
	base := "https://" + addrs["api-https"]
	idx := get(t, client, base+"/", "")
	require.Equal(t, http.StatusOK, idx.status, idx.body)
	require.Equal(t, 2, idx.proto, "HTTP/2 over TLS")
	var index map[string]string
	require.NoError(t, json.Unmarshal([]byte(idx.body), &index))
	require.Equal(t, "Kuma", index["tagline"])

	// The same API and authentication as over HTTP: user tokens work.
	token := adminToken(t, workDir)
	require.Equal(t, http.StatusUnauthorized, get(t, client, base+"/meshes/default/secrets", "").status)
	require.Equal(t, http.StatusOK, get(t, client, base+"/meshes/default/secrets", token).status)
	require.Equal(t, http.StatusUnauthorized, get(t, client, base+"/meshes/default/secrets", "x.y.z").status)

	// The name localhost verifies too, and TLS 1.1 is refused.
	_, port, err := net.SplitHostPort(addrs["api-https"])
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, get(t, client, "https://localhost:"+port+"/", "").status)
	old := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11}}
	defer old.CloseIdleConnections()
	_, err = (&http.Client{Transport: old}).Get(base + "/")
	require.Error(t, err, "TLS 1.1 is refused")

	// Plain HTTP still serves the API on its own port.
	require.Equal(t, http.StatusOK, get(t, http.DefaultClient, "http://"+addrs["api"]+"/", "").status)

	// Its own CA, apart from the dataplane server's.
	apiCA, err := os.ReadFile(caFile)
	require.NoError(t, err)
	dpCA, err := os.ReadFile(filepath.Join(workDir, "dp-server-ca.pem"))
	require.NoError(t, err)
	require.NotEqual(t, apiCA, dpCA)
	info, err := os.Stat(filepath.Join(workDir, "api-server-ca.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	// After a restart on the same work directory clients still trust it.
	stop()
	addrs, _ = run(t, testConfig(t, workDir))
	again, err := os.ReadFile(caFile)
	require.NoError(t, err)
	require.Equal(t, apiCA, again, "the CA is kept across restarts")
	require.Equal(t, http.StatusOK, get(t, httpsClient(t, roots), "https://"+addrs["api-https"]+"/", "").status)
}

func TestAPIOverHTTPSWithAProvidedCertificate(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("operator CA", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	leaf, err := pki.Issue(ca, pki.Leaf{CommonName: "cp.example", DNSNames: []string{"cp.example"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	require.NoError(t, os.WriteFile(certFile, leaf.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, leaf.KeyPEM, 0o600))

	workDir := t.TempDir()
	cfg := testConfig(t, workDir)
	cfg.APIServer.HTTPS.TLSCertFile, cfg.APIServer.HTTPS.TLSKeyFile = certFile, keyFile
	addrs, _ := run(t, cfg)
	roots, err := pki.Pool(ca.CertPEM)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, get(t, httpsClient(t, roots), "https://"+addrs["api-https"]+"/", "").status)
	require.NoFileExists(t, filepath.Join(workDir, "api-server-ca.pem"), "nothing generated")

	// A broken pair stops the start with the file named.
	cfg.APIServer.HTTPS.TLSKeyFile = certFile
	_, err = New(t.Context(), cfg, nil)
	require.ErrorContains(t, err, "API server TLS: load "+certFile)
}

func TestAPIAdminsByClientCertificate(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("operators", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	issue := func(cn string) (*pki.KeyPair, tls.Certificate) {
		kp, err := pki.Issue(ca, pki.Leaf{CommonName: cn, Client: true, Lifetime: time.Hour}, now)
		require.NoError(t, err)
		c, err := kp.TLS()
		require.NoError(t, err)
		return kp, c
	}
	alice, aliceTLS := issue("alice")
	_, mallory := issue("mallory") // same CA, not in the directory: a CA grants nothing
	certsDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(certsDir, "alice.pem"), alice.CertPEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(certsDir, ".alice.pem.swp"), []byte("editor junk"), 0o644))

	workDir := t.TempDir()
	cfg := testConfig(t, workDir)
	cfg.APIServer.Auth.ClientCertsDir = certsDir
	addrs, _ := run(t, cfg)
	roots := readPool(t, filepath.Join(workDir, "api-server-ca.pem"))
	secrets := "https://" + addrs["api-https"] + "/meshes/default/secrets"

	require.Equal(t, http.StatusOK, get(t, httpsClient(t, roots, aliceTLS), secrets, "").status, "alice's certificate makes an admin")
	a := get(t, httpsClient(t, roots, mallory), secrets, "")
	require.Equal(t, http.StatusUnauthorized, a.status)
	require.Contains(t, a.body, "not one of the control plane's admin client certificates (apiServer.auth.clientCertsDir)")
	require.Equal(t, http.StatusUnauthorized, get(t, httpsClient(t, roots), secrets, "").status, "no certificate, no token: anonymous")
	require.Equal(t, http.StatusOK, get(t, httpsClient(t, roots), "https://"+addrs["api-https"]+"/meshes", "").status, "anonymous reads stay open")
	require.Equal(t, http.StatusOK, get(t, httpsClient(t, roots), secrets, adminToken(t, workDir)).status, "tokens without a certificate")

	// A directory with something that is not a certificate stops the start.
	require.NoError(t, os.WriteFile(filepath.Join(certsDir, "notes.txt"), []byte("hello"), 0o644))
	_, err = New(t.Context(), cfg, nil)
	require.ErrorContains(t, err, "apiServer.auth.clientCertsDir: client certificates: "+filepath.Join(certsDir, "notes.txt")+": no PEM certificate found")
}

func TestHTTPSCanBeTurnedOff(t *testing.T) {
	workDir := t.TempDir()
	cfg := testConfig(t, workDir)
	cfg.APIServer.HTTPS.Enabled = false
	addrs, _ := run(t, cfg)
	require.NotContains(t, addrs, "api-https")
	require.Contains(t, addrs, "api")
	require.NoFileExists(t, filepath.Join(workDir, "api-server-ca.pem"))
}

func TestStartFailsCleanlyWhenTheHTTPSPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	cfg := testConfig(t, t.TempDir())
	cfg.APIServer.HTTPS.Port = uint32(taken.Addr().(*net.TCPAddr).Port)
	_, err = New(t.Context(), cfg, nil)
	require.ErrorContains(t, err, "api-https server: listen on "+taken.Addr().String(), "an error, not a panic closing what was opened")
}
