package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/resource"
)

// The well-known ports of the mesh's processes. Each process has a loopback
// host of its own (loopback.Host), so these never collide.
const (
	// appPort is where an application listens, on its host.
	appPort = 8080
	// inboundPort is a proxy's inbound, on the Dataplane's address.
	inboundPort = 8080
	// metricsPort is the mesh's default metrics port, on the Dataplane's
	// address.
	metricsPort = 5670
	// outboundPort is a proxy's outbound, on its application's host (the
	// workload's own "localhost", where kuma-dp's outbounds usually are).
	outboundPort = 10001
	// adminPort is kuma-dp's admin API (its default), on a host of its own.
	adminPort = 9901
)

// hostPort joins a host and a port.
func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// appURL is the URL of the application (or outbound) on host:port.
func appURL(host string, port int) string {
	return "http://" + hostPort(host, port) + "/"
}

// dataplane is a kuma-dp process.
type dataplane struct {
	name string
	// adminAddr is its admin API's host:port.
	adminAddr string
	// tokenFile is its --dataplane-token-file.
	tokenFile string
	*process
}

// startDataplane runs kuma-dp with the Dataplane in yaml and a token for its
// services, and waits until it applied its first config.
func startDataplane(t *testing.T, cp *controlPlane, name, yaml string) *dataplane {
	t.Helper()
	dp := launchDataplane(t, cp, name, yaml, cp.dataplaneToken(t, "default", name, servicesOf(t, yaml)))
	eventually(t, 30*time.Second, func() error { return httpOK(dp.admin("/ready")) })
	return dp
}

// launchDataplane runs kuma-dp with the Dataplane in yaml and token in its
// token file, without waiting for anything.
func launchDataplane(t *testing.T, cp *controlPlane, name, yaml, token string) *dataplane {
	t.Helper()
	return launchDataplaneAt(t, "https://"+cp.dpAddr, filepath.Join(cp.workDir, "dp-server-ca.pem"), name, yaml, token)
}

// launchDataplaneAt runs kuma-dp against the control planes of cpAddress
// (kuma-dp's --cp-address) trusting caFile, without waiting for anything.
func launchDataplaneAt(t *testing.T, cpAddress, caFile, name, yaml, token string) *dataplane {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, name+".yaml")
	require.NoError(t, os.WriteFile(file, []byte(yaml), 0o600))
	tokenFile := filepath.Join(dir, name+".token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(token), 0o600))
	adminHost := loopback.Host()
	dp := &dataplane{name: name, adminAddr: hostPort(adminHost, adminPort), tokenFile: tokenFile}
	dp.process = startProcess(t, filepath.Join(binDir, "kuma-dp"), nil, "run",
		"--cp-address", cpAddress,
		"--ca-cert-file", caFile,
		"--dataplane-token-file", tokenFile,
		"--dataplane-file", file, "--admin-address", adminHost, "--admin-port", strconv.Itoa(adminPort), "--drain-time", "5s")
	return dp
}

// servicesOf returns the kuma.io/service values of the Dataplane in yaml.
func servicesOf(t *testing.T, yaml string) []string {
	t.Helper()
	obj, err := resource.DecodeYAML([]byte(yaml), 1)
	require.NoError(t, err)
	return obj.Dataplane().Services()
}

// dataplaneToken asks the control plane (as admin, from loopback) for a
// dataplane token allowing services.
func (cp *controlPlane) dataplaneToken(t *testing.T, mesh, name string, services []string) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{"mesh": mesh, "name": name, "tags": map[string][]string{"kuma.io/service": services}})
	require.NoError(t, err)
	res, err := http.Post(cp.apiURL+"/tokens/dataplane", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return string(b)
}

func (d *dataplane) admin(path string) string {
	return "http://" + d.adminAddr + path
}

// stat reads one statistic from the admin API (Envoy text form).
func (d *dataplane) stat(t *testing.T, dotted string) string {
	t.Helper()
	body := httpGet(t, d.admin("/stats?filter=^"+strings.ReplaceAll(dotted, ".", `\.`)+"$"))
	for _, line := range strings.Split(body, "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && name == dotted {
			return v
		}
	}
	return ""
}

// startApp runs a demo-app role.
func startApp(t *testing.T, args ...string) *process {
	t.Helper()
	return startProcess(t, filepath.Join(binDir, "demo-app"), nil, args...)
}

// getStatus fetches url and returns its status code, or an error.
func getStatus(client *http.Client, url string) (int, error) {
	res, err := client.Get(url)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// traffic is a steady stream of requests, one every 10 ms, that counts the
// ones that failed.
type traffic struct {
	sent, failed atomic.Int64
	firstFailure atomic.Value
	stop         chan struct{}
	once         sync.Once
	done         chan struct{}
}

// startTraffic GETs url with client every 10 ms until the test ends or stop.
func startTraffic(t *testing.T, client *http.Client, url string) *traffic {
	tr := &traffic{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			tr.sent.Add(1)
			if code, err := getStatus(client, url); err != nil || code != 200 {
				tr.failed.Add(1)
				tr.firstFailure.CompareAndSwap(nil, fmt.Sprintf("%d %v", code, err))
			}
		}
	}()
	t.Cleanup(tr.halt)
	return tr
}

// halt stops the requests (once) and waits for the last one.
func (tr *traffic) halt() {
	tr.once.Do(func() { close(tr.stop) })
	<-tr.done
}

// waitSent waits until n more requests were sent.
func (tr *traffic) waitSent(t *testing.T, n int64) {
	t.Helper()
	before := tr.sent.Load()
	eventually(t, 30*time.Second, func() error {
		if got := tr.sent.Load() - before; got < n {
			return fmt.Errorf("only %d requests sent", got)
		}
		return nil
	})
}

// requireNoFailure checks that no request failed.
func (tr *traffic) requireNoFailure(t *testing.T) {
	t.Helper()
	require.Zero(t, tr.failed.Load(), "requests failed (of %d); first: %v", tr.sent.Load(), tr.firstFailure.Load())
}
