package e2e

import (
	"bytes"
	"encoding/json"
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
