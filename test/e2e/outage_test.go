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
)

func backendDataplane(name, addr string, appPort int) string {
	return fmt.Sprintf(`type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  inbound:
  - port: 8080
    servicePort: %d
    tags:
      kuma.io/service: backend
      kuma.io/protocol: http
`, name, addr, appPort)
}

func frontendDataplane(appPort, outboundPort int) string {
	return fmt.Sprintf(`type: Dataplane
mesh: default
name: frontend-1
networking:
  address: 127.0.0.2
  inbound:
  - port: 8080
    servicePort: %d
    tags:
      kuma.io/service: frontend
      kuma.io/protocol: http
  outbound:
  - port: %d
    tags:
      kuma.io/service: backend
`, appPort, outboundPort)
}

func TestControlPlaneOutage(t *testing.T) {
	work := t.TempDir()
	cp := newControlPlane(t, work)
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))

	ports := freePorts(t, 4)
	backendApp, backend2App, frontendApp, outbound := ports[0], ports[1], ports[2], ports[3]
	startApp(t, "backend", "--name", "backend-1", "--listen", fmt.Sprintf("127.0.0.1:%d", backendApp), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "backend", "--name", "backend-2", "--listen", fmt.Sprintf("127.0.0.1:%d", backend2App), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "frontend", "--listen", fmt.Sprintf("127.0.0.1:%d", frontendApp), "--backend", fmt.Sprintf("http://127.0.0.1:%d/", outbound))
	startDataplane(t, cp, "backend-1", backendDataplane("backend-1", "127.0.0.3", backendApp))
	front := startDataplane(t, cp, "frontend-1", frontendDataplane(frontendApp, outbound))

	client := &http.Client{Timeout: 10 * time.Second}
	eventually(t, 30*time.Second, func() error {
		code, err := getStatus(client, "http://127.0.0.2:8080/")
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
			if code, err := getStatus(client, "http://127.0.0.2:8080/"); err != nil || code != 200 {
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
	require.Contains(t, httpGet(t, "http://127.0.0.2:5670/metrics"), "envoy_control_plane_connected_state 0")

	// Restart: proxies reconnect and converge on a change made after the restart.
	cp.start()
	eventually(t, 60*time.Second, func() error {
		if v := front.stat(t, "control_plane.connected_state"); v != "1" {
			return fmt.Errorf("connected_state %q", v)
		}
		return nil
	})
	startDataplane(t, cp, "backend-2", backendDataplane("backend-2", "127.0.0.4", backend2App))
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
