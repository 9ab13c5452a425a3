package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

func meshWithCAs(enabled string) string {
	y := `type: Mesh
name: default
metrics:
  enabledBackend: prometheus-1
  backends:
  - name: prometheus-1
    type: prometheus
`
	if enabled == "" {
		return y
	}
	return y + `mtls:
  enabledBackend: ` + enabled + `
  backends:
  - name: ca-1
    type: builtin
    dpCert:
      rotation:
        expiration: 20s
  - name: ca-2
    type: builtin
    dpCert:
      rotation:
        expiration: 20s
`
}

// TestTrafficFlowsThroughMTLSChanges: requests between proxies keep
// succeeding while mTLS is switched on, while certificates rotate and while
// the CA backend changes.
func TestTrafficFlowsThroughMTLSChanges(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	apply := func(yaml string) {
		t.Helper()
		_, errOut, err := k.run(yaml, "apply", "-f", "-")
		require.NoError(t, err, errOut)
	}
	apply(meshWithCAs(""))
	backendApp, frontendApp, clientApp, backAddr := loopback.Host(), loopback.Host(), loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "frontend", "--listen", hostPort(frontendApp, appPort), "--backend", appURL(frontendApp, outboundPort))
	back := startDataplane(t, cp, "backend-1", backendDataplane("backend-1", backAddr, backendApp))
	front := startDataplane(t, cp, "frontend-1", frontendDataplane(loopback.Host(), frontendApp))
	// The client joins the mesh too: the test calls the frontend through its outbound.
	client := startDataplane(t, cp, "client", fmt.Sprintf(`type: Dataplane
mesh: default
name: client
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: client
  outbound:
  - address: %s
    port: %d
    tags:
      kuma.io/service: frontend
`, loopback.Host(), inboundPort, clientApp, appPort, clientApp, outboundPort))

	url := appURL(clientApp, outboundPort)
	httpc := &http.Client{Timeout: 10 * time.Second}
	eventually(t, 30*time.Second, func() error {
		if code, err := getStatus(httpc, url); err != nil || code != 200 {
			return fmt.Errorf("through the mesh: %d %v", code, err)
		}
		return nil
	})
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				sent.Add(1)
				if code, err := getStatus(httpc, url); err != nil || code != 200 {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d %v", time.Now().Format("15:04:05.000"), code, err))
				}
			}
		}()
	}
	stopped := false
	stopTraffic := func() {
		if !stopped {
			close(stop)
			wg.Wait()
			stopped = true
		}
	}
	defer stopTraffic()
	handshakes := func(d *dataplane, cluster string) int {
		var n int
		_, _ = fmt.Sscanf(d.stat(t, "cluster."+cluster+".ssl.handshake"), "%d", &n)
		return n
	}
	issued := func(d *dataplane) int { return strings.Count(d.log.String(), "workload certificate issued") }

	// mTLS on: after the switch window, the hops are mTLS.
	apply(meshWithCAs("ca-1"))
	eventually(t, 60*time.Second, func() error {
		if handshakes(client, "frontend") == 0 || handshakes(front, "backend") == 0 {
			return fmt.Errorf("no mTLS handshakes yet")
		}
		if _, err := getStatus(&http.Client{Timeout: time.Second}, appURL(backAddr, inboundPort)); err == nil {
			return fmt.Errorf("the backend's inbound still accepts plain text")
		}
		return nil
	})
	// Rotation: 20s certificates are renewed at 16s.
	eventually(t, 60*time.Second, func() error {
		for _, d := range []*dataplane{client, front, back} {
			if issued(d) < 2 {
				return fmt.Errorf("%s: %d certificates so far", d.name, issued(d))
			}
		}
		return nil
	})
	// Another CA: every proxy gets a certificate of ca-2; both stay trusted meanwhile.
	before := map[string]int{}
	for _, d := range []*dataplane{client, front, back} {
		before[d.name] = issued(d)
	}
	apply(meshWithCAs("ca-2"))
	eventually(t, 60*time.Second, func() error {
		for _, d := range []*dataplane{client, front, back} {
			if issued(d) <= before[d.name] {
				return fmt.Errorf("%s has no certificate of the new CA yet", d.name)
			}
		}
		return nil
	})
	// A little more traffic on the new CA, then the verdict.
	n := sent.Load()
	eventually(t, 30*time.Second, func() error {
		if sent.Load() < n+1000 {
			return fmt.Errorf("only %d requests since the CA change", sent.Load()-n)
		}
		return nil
	})
	stopTraffic()
	t.Logf("%d requests through mTLS on, rotations and a CA change", sent.Load())
	for _, d := range []*dataplane{client, front, back} {
		for _, line := range strings.Split(d.log.String(), "\n") {
			if strings.Contains(line, "workload certificate issued") {
				t.Log(d.name, line[strings.Index(line, "time=")+5:strings.Index(line, "Z ")], line[strings.Index(line, "ca_version="):])
			}
		}
	}
	require.Zero(t, failed.Load(), "of %d requests; first failure: %v", sent.Load(), firstFailure.Load())
}
