package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

// TestPrometheusScrapesTheMesh runs the demo's topology (a frontend calling a
// backend that fails a share of its requests, and the guide's example
// Dataplane with its port/path override) and checks what Debian's Prometheus
// scrapes from the proxies it discovered through the control plane.
func TestPrometheusScrapesTheMesh(t *testing.T) {
	requireProgram(t, "prometheus")
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))

	backendApp, frontendApp, exampleApp := loopback.Host(), loopback.Host(), loopback.Host()
	frontAddr, exampleAddr := loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0.3", "--latency", "1ms")
	startApp(t, "frontend", "--listen", hostPort(frontendApp, appPort), "--backend", appURL(frontendApp, outboundPort))
	startApp(t, "backend", "--name", "example", "--listen", hostPort(exampleApp, appPort), "--error-rate", "0")
	startDataplane(t, cp, "backend-1", backendDataplane("backend-1", loopback.Host(), backendApp))
	startDataplane(t, cp, "frontend-1", frontendDataplane(frontAddr, frontendApp))
	// The guide's Dataplane override, on its own address.
	startDataplane(t, cp, "example", fmt.Sprintf(`type: Dataplane
mesh: default
name: example
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: example
      kuma.io/protocol: http
metrics:
  type: prometheus
  conf:
    skipMTLS: true
    port: 1234
    path: /non-standard-path
`, exampleAddr, inboundPort, exampleApp, appPort))

	startApp(t, "traffic", "--target", appURL(frontAddr, inboundPort), "--rate", "50", "--duration", "5m")

	prom := startPrometheus(t, fmt.Sprintf(`
global:
  scrape_interval: 1s
scrape_configs:
- job_name: 'kuma-dataplanes'
  scrape_interval: "1s"
%s
  http_sd_configs:
  - url: http://%s/v3/discovery:monitoringassignments/http_sd
    refresh_interval: 1s
`, guideRelabelRules, cp.madsAddr))

	// Every proxy is discovered and up, the override one on its port and path.
	eventually(t, 60*time.Second, func() error {
		up := prom.query(t, `up{job="kuma-dataplanes"}`)
		got := map[string]float64{}
		for _, s := range up {
			got[s.Labels["dataplane"]] = s.Value
		}
		for _, dp := range []string{"frontend-1", "backend-1", "example"} {
			if got[dp] != 1 {
				return fmt.Errorf("up: %v", got)
			}
		}
		return nil
	})
	for _, tg := range prom.targets(t)["kuma-dataplanes"] {
		if tg.Labels["dataplane"] == "example" {
			require.Equal(t, "http://"+hostPort(exampleAddr, 1234)+"/non-standard-path", tg.ScrapeURL)
		}
	}

	// The frontend's proxy counts its calls to backend, growing; 5xx are there.
	var first float64
	eventually(t, 60*time.Second, func() error {
		s := prom.query(t, `envoy_cluster_upstream_rq_total{dataplane="frontend-1",envoy_cluster_name="backend"}`)
		if len(s) != 1 || s[0].Value == 0 {
			return fmt.Errorf("rq_total: %v", s)
		}
		first = s[0].Value
		return nil
	})
	eventually(t, 60*time.Second, func() error {
		s := prom.query(t, `envoy_cluster_upstream_rq_total{dataplane="frontend-1",envoy_cluster_name="backend"}`)
		if len(s) != 1 || s[0].Value <= first {
			return fmt.Errorf("rq_total did not grow past %g: %v", first, s)
		}
		return nil
	})
	eventually(t, 60*time.Second, func() error {
		for _, q := range []string{
			`envoy_cluster_upstream_rq_xx{dataplane="frontend-1",envoy_cluster_name="backend",envoy_response_code_class="5"} > 0`,
			`envoy_cluster_upstream_rq_xx{dataplane="backend-1",envoy_cluster_name="localhost_` + strconv.Itoa(appPort) + `",envoy_response_code_class="5"} > 0`,
			`envoy_cluster_upstream_rq_xx{dataplane="backend-1",envoy_response_code_class="2"} > 0`,
			`envoy_cluster_upstream_rq_time_bucket{dataplane="frontend-1",envoy_cluster_name="backend",le="+Inf"} > 0`,
			`envoy_http_downstream_rq_total{dataplane="frontend-1"} > 0`,
			`envoy_server_live{dataplane="backend-1"} == 1`,
			`envoy_control_plane_connected_state{dataplane="frontend-1"} == 1`,
		} {
			if s := prom.query(t, q); len(s) == 0 {
				return fmt.Errorf("no result for %s", q)
			}
		}
		return nil
	})
	// The injected failures: about 30% of the backend's answers are 5xx.
	s := prom.query(t, `sum(envoy_cluster_upstream_rq_xx{dataplane="frontend-1",envoy_cluster_name="backend",envoy_response_code_class="5"}) / sum(envoy_cluster_upstream_rq_total{dataplane="frontend-1",envoy_cluster_name="backend"})`)
	require.Len(t, s, 1)
	require.InDelta(t, 0.3, s[0].Value, 0.15, "share of 5xx")

	// ?filter= limits the endpoint's output, as Envoy's.
	body := httpGet(t, "http://"+hostPort(frontAddr, metricsPort)+`/metrics?filter=cluster\.backend\.upstream_rq_total`)
	var samples []string
	for _, line := range strings.Split(body, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			samples = append(samples, line)
		}
	}
	require.Len(t, samples, 1, body)
	require.True(t, strings.HasPrefix(samples[0], `envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} `), samples[0])
}
