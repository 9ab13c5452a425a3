package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

const mtlsMesh = `type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
    conf:
      skipMTLS: %s
`

const metricsPermission = `type: TrafficPermission
mesh: default
name: metrics-permissions
sources:
- match:
    kuma.io/service: prometheus
destinations:
- match:
    kuma.io/service: dataplane-metrics
`

// plainGet fetches url from a source address that is not the dataplane's.
func plainGet(url string) (int, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(loopback.Host())}}).DialContext,
	}}
	res, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

func TestPrometheusScrapesOverMTLS(t *testing.T) {
	requireProgram(t, "prometheus")
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	apply := func(yaml string) {
		t.Helper()
		_, errOut, err := k.run(yaml, "apply", "-f", "-")
		require.NoError(t, err, errOut)
	}
	apply(fmt.Sprintf(mtlsMesh, "false"))
	// Only what is explicitly permitted: no allow-all.
	k.must("delete", "traffic-permission", "allow-all-default", "-m", "default")
	apply(metricsPermission)

	apps := []string{loopback.Host(), loopback.Host()}
	startApp(t, "backend", "--name", "b1", "--listen", hostPort(apps[0], appPort), "--error-rate", "0")
	startApp(t, "backend", "--name", "b2", "--listen", hostPort(apps[1], appPort), "--error-rate", "0")
	b1Addr := loopback.Host()
	b1 := startDataplane(t, cp, "backend-1", backendDataplane("backend-1", b1Addr, apps[0]))
	startDataplane(t, cp, "backend-2", backendDataplane("backend-2", loopback.Host(), apps[1]))
	b1Metrics := "http://" + hostPort(b1Addr, metricsPort) + "/metrics"

	certDir := t.TempDir()
	out := k.must("generate", "scraper-certificate", "--mesh", "default", "--service", "prometheus", "--out-dir", certDir)
	require.Contains(t, out, "ca_file: "+certDir+"/ca.pem")

	prom := startPrometheus(t, fmt.Sprintf(`
scrape_configs:
- job_name: 'kuma-dataplanes'
  scrape_interval: 1s
%s
  tls_config:
    ca_file: %[3]s/ca.pem
    cert_file: %[3]s/cert.pem
    key_file: %[3]s/key.pem
  http_sd_configs:
  - url: http://%[2]s/v3/discovery:monitoringassignments/http_sd
    refresh_interval: 1s
`, guideRelabelRules, cp.madsAddr, certDir))
	up := func() map[string]float64 {
		got := map[string]float64{}
		for _, s := range prom.query(t, `up{job="kuma-dataplanes"}`) {
			got[s.Labels["dataplane"]] = s.Value
		}
		return got
	}
	eventually(t, 60*time.Second, func() error {
		if u := up(); u["backend-1"] != 1 || u["backend-2"] != 1 {
			return fmt.Errorf("up over mTLS: %v", u)
		}
		return nil
	})
	for _, tg := range prom.targets(t)["kuma-dataplanes"] {
		require.True(t, strings.HasPrefix(tg.ScrapeURL, "https://"), tg.ScrapeURL)
	}
	// Plain HTTP from anywhere but the dataplane itself is refused.
	_, err := plainGet(b1Metrics)
	require.Error(t, err, "plain text is refused under mTLS")

	// Without the permission: scrapes fail and rbac_denied grows.
	denied := func() int {
		var n int
		_, _ = fmt.Sscanf(b1.stat(t, "rbac.kuma_metrics_prometheus.denied"), "%d", &n)
		return n
	}
	before := denied()
	k.must("delete", "traffic-permission", "metrics-permissions", "-m", "default")
	eventually(t, 60*time.Second, func() error {
		if u := up(); u["backend-1"] != 0 || u["backend-2"] != 0 {
			return fmt.Errorf("still up without the permission: %v", u)
		}
		if denied() <= before+1 {
			return fmt.Errorf("rbac denied %d (was %d)", denied(), before)
		}
		return nil
	})

	// skipMTLS: plain HTTP, for anyone.
	apply(fmt.Sprintf(mtlsMesh, "true"))
	eventually(t, 60*time.Second, func() error {
		if code, err := plainGet(b1Metrics); err != nil || code != 200 {
			return fmt.Errorf("plain scrape with skipMTLS: %d %v", code, err)
		}
		return nil
	})
}
