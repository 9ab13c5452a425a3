package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/pki"
)

// TestKumactlOverHTTPS: kumactl trusts the API's generated certificate with
// the CA kuma-cp writes to its work directory.
func TestKumactlOverHTTPS(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := &kumactl{t: t, config: filepath.Join(t.TempDir(), "kumactl.yaml")}
	caFile := filepath.Join(cp.workDir, "api-server-ca.pem")
	errOut := k.fails("", "config", "control-planes", "add", "--name", "untrusted", "--address", cp.apiHTTPSURL)
	require.Contains(t, errOut, "certificate signed by unknown authority; pass --ca-cert-file")

	admin, err := os.ReadFile(filepath.Join(cp.workDir, "admin-user-token"))
	require.NoError(t, err)
	k.must("config", "control-planes", "add", "--name", "https", "--address", cp.apiHTTPSURL, "--ca-cert-file", caFile,
		"--auth-type=tokens", "--auth-conf", "token="+strings.TrimSpace(string(admin)))
	require.Contains(t, k.must("get", "meshes"), "default")
	require.Contains(t, k.must("generate", "user-token", "--name", "alice", "--valid-for", "1h"), ".")
}

// securedMADSFiles are a CA, MADS' certificate for host (an IP address)
// signed by it, in files.
func securedMADSFiles(t *testing.T, host string) (dir, caFile, certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("mads e2e CA", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	leaf, err := pki.Issue(ca, pki.Leaf{CommonName: "kuma-cp", IPs: []net.IP{net.ParseIP(host)}, Server: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	dir = t.TempDir()
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "mads.pem"), filepath.Join(dir, "mads.key")
	require.NoError(t, os.WriteFile(caFile, ca.CertPEM, 0o644))
	require.NoError(t, os.WriteFile(certFile, leaf.CertPEM, 0o644))
	require.NoError(t, os.WriteFile(keyFile, leaf.KeyPEM, 0o600))
	return dir, caFile, certFile, keyFile
}

// counter reads an unlabelled counter from a Prometheus text exposition.
func counter(t *testing.T, url, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(httpGet(t, url), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

// TestPrometheusDiscoversFromASecuredMADS: Debian's Prometheus, configured by
// kumactl install metrics --universal with http_sd_configs carrying a token
// file and a CA file, discovers every dataplane from a MADS that requires
// TLS and tokens; a job without the token is refused; kuma-prometheus-sd
// does the same over grpcs.
func TestPrometheusDiscoversFromASecuredMADS(t *testing.T) {
	requireProgram(t, "prometheus")
	cp := newControlPlane(t, t.TempDir())
	dir, caFile, certFile, keyFile := securedMADSFiles(t, cp.host)
	cp.env = append(cp.env,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE="+certFile,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_KEY_FILE="+keyFile,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE=token",
	)
	cp.start()
	k := newKumactl(t, cp)
	applyDiscoveryFixtures(t, k)
	tokenFile := filepath.Join(dir, "prometheus.token")
	token := k.must("generate", "user-token", "--name", "prometheus", "--group", "scrapers", "--valid-for", "1h")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token), 0o600))

	// Straight over HTTPS: no token, 401; the token, the targets.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: func() *x509.CertPool {
		b, err := os.ReadFile(caFile)
		require.NoError(t, err)
		p, err := pki.Pool(b)
		require.NoError(t, err)
		return p
	}()}}
	defer tr.CloseIdleConnections()
	sdURL := "https://" + cp.madsAddr + "/v3/discovery:monitoringassignments/http_sd"
	for _, tc := range []struct {
		token  string
		status int
	}{{"", http.StatusUnauthorized}, {strings.TrimSpace(token), http.StatusOK}} {
		req, err := http.NewRequest(http.MethodGet, sdURL, nil)
		require.NoError(t, err)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, tc.status, res.StatusCode, string(body))
	}
	// Plain HTTP is not served on the TLS port.
	if res, err := http.Get("http://" + cp.madsAddr + "/v3/discovery:monitoringassignments/http_sd"); err == nil {
		res.Body.Close()
		require.NotEqual(t, http.StatusOK, res.StatusCode)
	}

	// kuma-prometheus-sd over grpcs with the token.
	sdFile := filepath.Join(t.TempDir(), "kuma.file_sd.json")
	startProcess(t, filepath.Join(binDir, "kuma-prometheus-sd"), nil, "run",
		"--cp-address=grpcs://"+cp.madsAddr, "--ca-cert-file="+caFile, "--auth-token-file="+tokenFile, "--output-file="+sdFile)

	// Prometheus' configuration as kumactl writes it for a secured MADS,
	// plus a job without the token and the file_sd job.
	outDir := t.TempDir()
	k.must("install", "metrics", "--universal", "--output-dir", outDir, "--without-grafana",
		"--kuma-cp-address", "https://"+cp.madsAddr, "--kuma-cp-api-address", cp.apiURL,
		"--kuma-cp-ca-cert-file", caFile, "--kuma-cp-token-file", tokenFile)
	generated, err := os.ReadFile(filepath.Join(outDir, "prometheus.yml"))
	require.NoError(t, err)
	require.Contains(t, string(generated), "credentials_file: \""+tokenFile+"\"")
	config := string(generated) + fmt.Sprintf(`
- job_name: 'without-a-token'
  scrape_interval: "5s"
  http_sd_configs:
  - url: https://%[1]s/v3/discovery:monitoringassignments/http_sd
    refresh_interval: 1s
    tls_config:
      ca_file: %[2]s
- job_name: 'kuma-dataplanes-file-sd'
  scrape_interval: "5s"
  file_sd_configs:
  - files:
    - %[3]s
`, cp.madsAddr, caFile, sdFile)
	prom := startPrometheus(t, config)

	all := "backend-1,example,frontend-1"
	eventually(t, 60*time.Second, func() error {
		pools := prom.targets(t)
		for _, pool := range []string{"kuma-dataplanes", "kuma-dataplanes-file-sd"} {
			if got := strings.Join(poolDataplanes(t, pools[pool]), ","); got != all {
				return fmt.Errorf("pool %s has %v, want %v", pool, got, all)
			}
		}
		if n := counter(t, prom.url+"/metrics", "prometheus_sd_http_failures_total"); n < 2 {
			return fmt.Errorf("the job without a token failed %v times, want it refused at every refresh", n)
		}
		return nil
	})
	require.Empty(t, prom.targets(t)["without-a-token"], "nothing discovered without a token")
	require.Contains(t, prom.log.String(), "401", "Prometheus reports the refusal")
}
