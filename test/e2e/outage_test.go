package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

// backendDataplane is a backend's Dataplane: its proxy on addr, its
// application on appHost.
func backendDataplane(name, addr, appHost string) string {
	return fmt.Sprintf(`type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
`, name, addr, inboundPort, appHost, appPort)
}

// frontendDataplane is frontend-1's Dataplane: its proxy on addr, its
// application on appHost, which reaches backend through the outbound on
// appHost too.
func frontendDataplane(addr, appHost string) string {
	return fmt.Sprintf(`type: Dataplane
mesh: default
name: frontend-1
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: frontend
      kuma.io/protocol: http
  outbound:
  - address: %s
    port: %d
    tags:
      kuma.io/service: backend
`, addr, inboundPort, appHost, appPort, appHost, outboundPort)
}

func TestControlPlaneOutage(t *testing.T) {
	work := t.TempDir()
	cp := newControlPlane(t, work)
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))

	backendApp, backend2App, frontendApp, frontAddr := loopback.Host(), loopback.Host(), loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "backend", "--name", "backend-2", "--listen", hostPort(backend2App, appPort), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "frontend", "--listen", hostPort(frontendApp, appPort), "--backend", appURL(frontendApp, outboundPort))
	startDataplane(t, cp, "backend-1", backendDataplane("backend-1", loopback.Host(), backendApp))
	front := startDataplane(t, cp, "frontend-1", frontendDataplane(frontAddr, frontendApp))

	client := &http.Client{Timeout: 10 * time.Second}
	frontURL := appURL(frontAddr, inboundPort)
	eventually(t, 30*time.Second, func() error {
		code, err := getStatus(client, frontURL)
		if err != nil || code != 200 {
			return fmt.Errorf("through the mesh: %d %v", code, err)
		}
		return nil
	})
	require.Equal(t, "1", front.stat(t, "control_plane.connected_state"))

	// Steady traffic through frontend-1 → backend for the whole test.
	tr := startTraffic(t, client, frontURL)

	cp.kill()
	eventually(t, 30*time.Second, func() error {
		if v := front.stat(t, "control_plane.connected_state"); v != "0" {
			return fmt.Errorf("connected_state %q", v)
		}
		return nil
	})
	// While the control plane is away: traffic flows and metrics are served.
	tr.waitSent(t, 100)
	require.Contains(t, httpGet(t, "http://"+hostPort(frontAddr, metricsPort)+"/metrics"), "envoy_control_plane_connected_state 0")

	// Restart: proxies reconnect and converge on a change made after the restart.
	cp.start()
	eventually(t, 60*time.Second, func() error {
		if v := front.stat(t, "control_plane.connected_state"); v != "1" {
			return fmt.Errorf("connected_state %q", v)
		}
		return nil
	})
	startDataplane(t, cp, "backend-2", backendDataplane("backend-2", loopback.Host(), backend2App))
	eventually(t, 30*time.Second, func() error {
		if v := front.stat(t, "cluster.backend.membership_total"); v != "2" {
			return fmt.Errorf("frontend sees %q backend endpoints", v)
		}
		return nil
	})
	// Every proxy reconnects (each on its own backoff).
	eventually(t, 60*time.Second, func() error {
		if out := k.must("inspect", "dataplanes"); strings.Contains(out, "Offline") {
			return fmt.Errorf("not every proxy is online again:\n%s", out)
		}
		return nil
	})

	tr.requireNoFailure(t)
}
