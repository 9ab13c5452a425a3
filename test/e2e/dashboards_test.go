package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/install/dashboards"
	"github.com/kumametrics/mesh/pkg/install/installtest"
)

// TestInstallMetricsUniversal: the Universal files of kumactl install metrics
// pass Debian's promtool, and its Prometheus, on that very prometheus.yml,
// scrapes a mesh with traffic so that every query of every dashboard
// returns data.
func TestInstallMetricsUniversalAndDashboards(t *testing.T) {
	promtool := requireProgram(t, "promtool")
	requireProgram(t, "prometheus")
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	_, errOut, err := k.run(`type: Mesh
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
      skipMTLS: true
`, "apply", "-f", "-")
	require.NoError(t, err, errOut)

	dir := filepath.Join(t.TempDir(), "kuma-metrics")
	out := k.must("install", "metrics", "--universal", "--output-dir", dir,
		"--kuma-cp-address", "http://"+cp.madsAddr, "--kuma-cp-api-address", cp.apiURL,
		"--grafana-plugin", installtest.Dir(t, installtest.PluginFiles(t)))
	require.Contains(t, out, "prometheus --config.file="+filepath.Join(dir, "prometheus.yml"))
	check, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", check)
	require.Contains(t, string(check), "SUCCESS")
	for _, f := range []string{"grafana/provisioning/datasources/kuma.yaml", "grafana/provisioning/dashboards/kuma.yaml", "grafana/dashboards/kuma-mesh.json",
		"grafana/grafana.ini", "grafana/plugins/kumahq-kuma-datasource/plugin.json"} {
		_, err := os.Stat(filepath.Join(dir, f))
		require.NoError(t, err)
	}

	// The mesh: traffic → frontend → backend, all behind proxies, apps' own metrics merged.
	backendApp, frontendApp, trafficApp := loopback.Host(), loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0.2", "--latency", "2ms")
	startApp(t, "frontend", "--listen", hostPort(frontendApp, appPort), "--backend", appURL(frontendApp, outboundPort))
	// The application's metrics, on its inbound's service address.
	aggregate := fmt.Sprintf("metrics:\n  type: prometheus\n  conf:\n    skipMTLS: true\n    aggregate:\n    - name: app\n      port: %d\n", appPort)
	startDataplane(t, cp, "backend-1", backendDataplane("backend-1", loopback.Host(), backendApp)+aggregate)
	startDataplane(t, cp, "frontend-1", frontendDataplane(loopback.Host(), frontendApp)+aggregate)
	startDataplane(t, cp, "traffic", fmt.Sprintf(`type: Dataplane
mesh: default
name: traffic
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: traffic
  outbound:
  - address: %s
    port: %d
    tags:
      kuma.io/service: frontend
`, loopback.Host(), inboundPort, trafficApp, appPort, trafficApp, outboundPort))
	startApp(t, "traffic", "--target", appURL(trafficApp, outboundPort), "--rate", "40", "--duration", "10m")

	// A proxy that comes and goes: completed gRPC calls for the control plane's panels.
	brief := startDataplane(t, cp, "brief", backendDataplane("brief", loopback.Host(), loopback.Host()))
	require.NoError(t, brief.cmd.Process.Signal(os.Interrupt))
	<-brief.done
	brief.done <- nil

	// Debian's Prometheus on the installer's prometheus.yml, as written:
	// --kuma-cp-api-address points its kuma-cp job at this control plane's
	// metrics (the API's host, port 5680).
	cfg, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
	require.NoError(t, err)
	require.Contains(t, string(cfg), `- "`+net.JoinHostPort(cp.host, cpDiagPort)+`"`, "the kuma-cp job targets the control plane's metrics")
	prom := startPrometheus(t, string(cfg))

	values := map[string]string{
		"mesh": "default", "zone": ".*", "dataplane": "frontend-1", "service": "frontend",
		"source": "frontend", "destination": "backend", "job": "kuma-cp", "instance": ".*",
		"__rate_interval": "1m", "__interval": "15s", "__range": "5m",
	}
	queries, err := dashboards.Queries()
	require.NoError(t, err)
	require.NotEmpty(t, queries)
	var empty []string
	eventually(t, 3*time.Minute, func() error {
		empty = empty[:0]
		for _, q := range queries {
			if slices.Contains(dashboards.KubernetesOnlyPanels, q.Panel) {
				continue
			}
			expr, err := dashboards.Expand(q.Expr, values)
			require.NoError(t, err)
			if len(prom.query(t, expr)) == 0 {
				empty = append(empty, fmt.Sprintf("%s / %s / %s: %s", q.Dashboard, q.Panel, q.RefID, expr))
			}
		}
		if len(empty) > 0 {
			return fmt.Errorf("%d of %d queries return no data, e.g.:\n%s", len(empty), len(queries), strings.Join(empty[:min(len(empty), 15)], "\n"))
		}
		return nil
	})
	t.Logf("%d dashboard queries return data", len(queries))
}
