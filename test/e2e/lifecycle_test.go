package e2e

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

// TestSIGTERMDrainsInFlightRequests: a proxy told to stop while a slow
// request is in flight finishes it, refuses new connections, deregisters
// and exits.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	app, addr := loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "slow", "--listen", hostPort(app, appPort), "--error-rate", "0", "--latency", "750ms")
	dp := startDataplane(t, cp, "backend-1", backendDataplane("backend-1", addr, app))

	type answer struct {
		code int
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		code, err := getStatus(&http.Client{Timeout: 30 * time.Second}, appURL(addr, inboundPort))
		got <- answer{code, err}
	}()
	// The request is in flight once the proxy counts it as active.
	eventually(t, 10*time.Second, func() error {
		if v := dp.stat(t, "cluster.localhost_"+strconv.Itoa(appPort)+".upstream_rq_active"); v != "1" {
			return fmt.Errorf("upstream_rq_active %q", v)
		}
		return nil
	})
	require.NoError(t, dp.cmd.Process.Signal(syscall.SIGTERM))
	a := <-got
	require.NoError(t, a.err)
	require.Equal(t, 200, a.code, "the in-flight request finished")
	select {
	case err := <-dp.done:
		require.NoError(t, err, "kuma-dp exits cleanly")
		dp.done <- err
	case <-time.After(30 * time.Second):
		t.Fatal("kuma-dp did not exit after draining")
	}
	_, err := net.DialTimeout("tcp", hostPort(addr, inboundPort), time.Second)
	require.Error(t, err, "nothing listens any more")
	require.NotContains(t, k.must("get", "dataplanes"), "backend-1", "deregistered")
}

// TestMetricsConfigAppliesLive: changing the mesh's metrics port and path
// moves every proxy's endpoint; turning metrics off removes it.
func TestMetricsConfigAppliesLive(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	app, addr := loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "b", "--listen", hostPort(app, appPort), "--error-rate", "0")
	startDataplane(t, cp, "backend-1", backendDataplane("backend-1", addr, app))
	eventually(t, 10*time.Second, func() error { return httpOK("http://" + hostPort(addr, metricsPort) + "/metrics") })

	apply := func(yaml string) {
		t.Helper()
		_, errOut, err := k.run(yaml, "apply", "-f", "-")
		require.NoError(t, err, errOut)
	}
	apply(`type: Mesh
name: default
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
    conf:
      skipMTLS: true
      port: 5671
      path: /stats-here
      envoy:
        filterRegex: "^server\\."
`)
	eventually(t, 10*time.Second, func() error {
		if err := httpOK("http://" + hostPort(addr, 5671) + "/stats-here"); err != nil {
			return err
		}
		if _, err := net.DialTimeout("tcp", hostPort(addr, metricsPort), time.Second); err == nil {
			return fmt.Errorf("the old port still listens")
		}
		return nil
	})
	for _, line := range strings.Split(httpGet(t, "http://"+hostPort(addr, 5671)+"/stats-here"), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			require.True(t, strings.HasPrefix(line, "envoy_server_") || strings.HasPrefix(line, "kuma_dp_"), "the mesh's filterRegex applies: %s", line)
		}
	}

	apply("type: Mesh\nname: default\n")
	eventually(t, 10*time.Second, func() error {
		if _, err := net.DialTimeout("tcp", hostPort(addr, 5671), time.Second); err == nil {
			return fmt.Errorf("metrics are off but the endpoint still listens")
		}
		return nil
	})
}
