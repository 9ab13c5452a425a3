package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent.Add(1)
			if code, err := getStatus(client, frontURL); err != nil || code != 200 {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %v", code, err))
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	cp.kill()
	eventually(t, 30*time.Second, func() error {
		if v := front.stat(t, "control_plane.connected_state"); v != "0" {
			return fmt.Errorf("connected_state %q", v)
		}
		return nil
	})
	// While the control plane is away: traffic flows and metrics are served.
	before := sent.Load()
	eventually(t, 30*time.Second, func() error {
		if sent.Load() < before+100 {
			return fmt.Errorf("only %d requests since the control plane died", sent.Load()-before)
		}
		return nil
	})
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

	require.Zero(t, failed.Load(), "requests failed during the outage (of %d); first: %v", sent.Load(), firstFailure.Load())
}
