package e2e

import (
	"context"
	"fmt"
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

	"github.com/kumametrics/mesh/internal/netnstest"
)

// kumaDPUID is the UID the pods' kuma-dp run as, excluded by their rules.
const kumaDPUID = 5678

// meshPod is a network namespace with the transparent proxy's rules, a
// workload and kuma-dp running as kumaDPUID.
type meshPod struct {
	*netnstest.Pod
	// client makes HTTP requests from inside the pod, as the workload
	// (root: its connections are captured), one connection each.
	client *http.Client
}

func newMeshPod(t *testing.T, n *netnstest.Network, cp *controlPlane, name string) *meshPod {
	t.Helper()
	pod := n.AddPod(name)
	out, err := pod.Run(context.Background(), filepath.Join(binDir, "kumactl"), "install", "transparent-proxy",
		"--kuma-dp-uid", strconv.Itoa(kumaDPUID), "--kuma-cp-address", "https://"+cp.dpAddr)
	require.NoError(t, err, "%s", out)
	return &meshPod{Pod: pod, client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: pod.DialContext, DisableKeepAlives: true,
	}}}
}

// startKumaDP runs kuma-dp in the pod as kumaDPUID with the Dataplane in
// yaml and waits until it is ready.
func (p *meshPod) startKumaDP(t *testing.T, cp *controlPlane, dir, name, yaml string) {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	require.NoError(t, os.WriteFile(file, []byte(yaml), 0o644))
	tokenFile := filepath.Join(dir, name+".token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(cp.dataplaneToken(t, "default", name, servicesOf(t, yaml))), 0o644))
	p.Start(t, "kuma-dp-"+name, netnstest.Proc{UID: kumaDPUID, GID: kumaDPUID}, filepath.Join(binDir, "kuma-dp"), "run",
		"--cp-address", "https://"+cp.dpAddr, "--ca-cert-file", filepath.Join(dir, "dp-server-ca.pem"),
		"--dataplane-token-file", tokenFile, "--dataplane-file", file, "--drain-time", "1s")
	eventually(t, 30*time.Second, func() error {
		_, err := p.get("http://127.0.0.1:9901/ready")
		return err
	})
}

// get fetches url from inside the pod and fails on anything but 200.
func (p *meshPod) get(url string) (string, error) {
	res, err := p.client.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s: status %d: %s", url, res.StatusCode, b)
	}
	return string(b), nil
}

// stat reads the statistics of the pod's kuma-dp (admin API, Envoy's text
// form) and sums those whose dotted name starts with prefix and ends with
// suffix (0 when there is none).
func (p *meshPod) stat(t *testing.T, prefix, suffix string) int {
	t.Helper()
	body, err := p.get("http://127.0.0.1:9901/stats")
	require.NoError(t, err)
	sum := 0
	for _, line := range strings.Split(body, "\n") {
		name, v, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) {
			continue
		}
		n, err := strconv.Atoi(v)
		require.NoError(t, err, line)
		sum += n
	}
	return sum
}

func transparentDataplane(name, addr, service, protocol string, vips ...string) string {
	vipList := ""
	if len(vips) > 0 {
		vipList = "\n    vips: [" + strings.Join(vips, ", ") + "]"
	}
	return fmt.Sprintf(`type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  transparentProxying:
    redirectPortInbound: 15006
    redirectPortOutbound: 15001
  inbound:
  - port: 8080
    servicePort: 8080%s
    tags:
      kuma.io/service: %s
      kuma.io/protocol: %s
`, name, addr, vipList, service, protocol)
}

const echoPermission = `type: TrafficPermission
mesh: default
name: client-to-echo
sources:
- match:
    kuma.io/service: client
destinations:
- match:
    kuma.io/service: echo
`

// TestTransparentProxyBetweenPods: two pods (network namespaces) with the
// rules of `kumactl install transparent-proxy` and kuma-dp running as the
// excluded UID, on a mesh with mTLS. The client workload calls the echo
// service at its ClusterIP (a blackholed address that only the capture
// makes reachable): the call goes through both proxies over mTLS and is
// counted on both sides as through an explicit outbound; TrafficPermission
// decides it; a plain connection from outside to the echo workload's port
// is captured by its proxy (and refused: it is no mesh peer); a
// destination no service has passes through, counted, until the mesh turns
// passthrough off (then it is refused, counted).
func TestTransparentProxyBetweenPods(t *testing.T) {
	netnstest.RequireIPTables(t)
	// The pods' kuma-dp (another UID) run the binaries and read their files.
	require.NoError(t, os.Chmod(binDir, 0o755))
	n := netnstest.New(t)
	// A directory of the test's that the pods' UID can read (t.TempDir's
	// parent is the test runner's alone).
	dir, err := os.MkdirTemp("", "kuma-e2e-tproxy-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	// The dataplane server listens on the host's address on the pods'
	// bridge (its generated certificate names the host's addresses).
	cp := newControlPlane(t, dir, "KUMA_DP_SERVER_INTERFACE="+n.Gateway.String())
	cp.dpAddr = hostPort(n.Gateway.String(), 5678)
	cp.start()
	require.NoError(t, os.Chmod(filepath.Join(dir, "dp-server-ca.pem"), 0o644))
	k := newKumactl(t, cp)
	_, errOut, err := k.run(fmt.Sprintf(mtlsMesh, "true"), "apply", "-f", "-")
	require.NoError(t, err, errOut)

	vip := hostPort(n.ServiceIP(10).String(), 80)
	echo := newMeshPod(t, n, cp, "echo")
	client := newMeshPod(t, n, cp, "client")
	echo.Start(t, "echo-app", netnstest.Proc{}, filepath.Join(binDir, "demo-app"), "backend", "--name", "echo-1", "--listen", "0.0.0.0:8080", "--error-rate", "0")
	echo.startKumaDP(t, cp, dir, "echo-1", transparentDataplane("echo-1", echo.IP.String(), "echo", "http", vip))
	client.startKumaDP(t, cp, dir, "client-1", transparentDataplane("client-1", client.IP.String(), "client", "tcp"))

	// The ClusterIP is reachable only through the proxies.
	eventually(t, 30*time.Second, func() error { _, err := client.get("http://" + vip + "/"); return err })
	outBefore := client.stat(t, "cluster.echo.upstream_rq_2xx", "")
	inBefore := echo.stat(t, "cluster.localhost_8080.upstream_rq_2xx", "")
	const calls = 5
	for range calls {
		body, err := client.get("http://" + vip + "/")
		require.NoError(t, err)
		require.Contains(t, body, "echo-1")
	}
	eventually(t, 10*time.Second, func() error {
		out, in := client.stat(t, "cluster.echo.upstream_rq_2xx", ""), echo.stat(t, "cluster.localhost_8080.upstream_rq_2xx", "")
		if out != outBefore+calls || in != inBefore+calls {
			return fmt.Errorf("client's cluster echo 2xx %d→%d, echo's localhost_8080 2xx %d→%d; want +%d on both", outBefore, out, inBefore, in, calls)
		}
		return nil
	})
	require.Positive(t, client.stat(t, "cluster.echo.ssl.handshake", ""), "the hop between the proxies is mTLS")
	require.Positive(t, echo.stat(t, "rbac.", ".allowed"))

	// Inbound capture: the workload listens on every address, yet a plain
	// client from the host reaches its proxy, which wants a mesh peer.
	hostClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := hostClient.Get("http://" + hostPort(echo.IP.String(), 8080) + "/")
	if err == nil {
		_ = res.Body.Close()
		t.Fatalf("a plain request from outside the mesh reached the workload (status %d): not captured", res.StatusCode)
	}

	// TrafficPermission decides the transparent hop as an explicit one.
	k.must("delete", "traffic-permission", "allow-all-default", "-m", "default")
	eventually(t, 30*time.Second, func() error {
		if _, err := client.get("http://" + vip + "/"); err == nil {
			return fmt.Errorf("still allowed")
		}
		return nil
	})
	require.Positive(t, echo.stat(t, "rbac.", ".denied"))
	_, errOut, err = k.run(echoPermission, "apply", "-f", "-")
	require.NoError(t, err, errOut)
	eventually(t, 30*time.Second, func() error { _, err := client.get("http://" + vip + "/"); return err })

	// A destination no service has (a pod outside the mesh; the host is
	// the control plane's address, which the rules exclude): passed
	// through, the mesh's default.
	outsidePod := n.AddPod("outside")
	outsideLn, err := outsidePod.Listen("tcp", ":0")
	require.NoError(t, err)
	outsideSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "outside")
	})}
	go func() { _ = outsideSrv.Serve(outsideLn) }()
	t.Cleanup(func() { _ = outsideSrv.Close() })
	outside := hostPort(outsidePod.IP.String(), outsideLn.Addr().(*net.TCPAddr).Port)
	body, err := client.get("http://" + outside + "/")
	require.NoError(t, err)
	require.Equal(t, "outside", body)
	eventually(t, 10*time.Second, func() error {
		if got := client.stat(t, "cluster.pass_through.upstream_cx_total", ""); got != 1 {
			return fmt.Errorf("pass_through connections: %d, want 1", got)
		}
		return nil
	})

	// The mesh turns passthrough off: such connections are refused, counted.
	_, errOut, err = k.run(fmt.Sprintf(mtlsMesh, "true")+"networking:\n  outbound:\n    passthrough: false\n", "apply", "-f", "-")
	require.NoError(t, err, errOut)
	eventually(t, 30*time.Second, func() error {
		if _, err := client.get("http://" + outside + "/"); err == nil {
			return fmt.Errorf("still passed through")
		}
		return nil
	})
	require.Positive(t, client.stat(t, "listener.0.0.0.0_15001.no_filter_chain_match", ""))
	_, err = client.get("http://" + vip + "/")
	require.NoError(t, err, "the mesh's services are still reached")
}
