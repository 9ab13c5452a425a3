package kumadp

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/proxy"
)

func newTestAgent(t *testing.T) *Agent {
	t.Helper()
	dps, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	a, err := New(Config{CPAddress: "https://127.0.0.1:1", InsecureSkipVerify: true, Dataplane: dps})
	require.NoError(t, err)
	require.NoError(t, a.admin.start("127.0.0.1:0"))
	t.Cleanup(func() {
		a.admin.close()
		a.metrics.close()
		a.proxy.Close()
	})
	return a
}

// brokenListen binds listeners that fail every accept for good.
func brokenListen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return netservetest.FailAccepts(ln, syscall.EINVAL, -1), nil
}

func applyConfig(t *testing.T, a *Agent, cfg *meshv1.ProxyConfig) {
	t.Helper()
	res, err := anypb.New(cfg)
	require.NoError(t, err)
	require.NoError(t, a.apply(&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: []*anypb.Any{res}}))
}

// A traffic listener that stops accepting makes the proxy not ready.
func TestReadyReportsAListenerThatStoppedAccepting(t *testing.T) {
	a := newTestAgent(t)
	a.proxy.Close()
	a.proxy = proxy.New(a.stats, proxy.Options{Security: a.sec, Listen: brokenListen})
	applyConfig(t, a, &meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Outbounds: []*meshv1.Outbound{{
		Address: "127.0.0.1", Port: 0, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:backend",
	}}})
	base := "http://" + a.admin.addr()
	require.Eventually(t, func() bool { code, _ := adminGet(t, base+"/ready"); return code == 503 }, 10*time.Second, time.Millisecond)
	_, body := adminGet(t, base+"/ready")
	require.True(t, strings.HasPrefix(body, "NOT_ACCEPTING: listener outbound:backend: "), body)
	require.Contains(t, body, "invalid argument")
}

// So does the metrics endpoint.
func TestReadyReportsAMetricsEndpointThatStoppedAccepting(t *testing.T) {
	a := newTestAgent(t)
	a.metrics.listen = brokenListen
	applyConfig(t, a, &meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Metrics: &meshv1.Metrics{Address: "127.0.0.1", Port: 0, Path: "/metrics"}})
	base := "http://" + a.admin.addr()
	require.Eventually(t, func() bool { code, _ := adminGet(t, base+"/ready"); return code == 503 }, 10*time.Second, time.Millisecond)
	_, body := adminGet(t, base+"/ready")
	require.Contains(t, body, "NOT_ACCEPTING: listener kuma:metrics:prometheus on 127.0.0.1:0: ")

	// Turning metrics off ends the failure with the endpoint.
	applyConfig(t, a, &meshv1.ProxyConfig{Mesh: "default", Name: "web-1"})
	code, body := adminGet(t, base+"/ready")
	require.Equal(t, 200, code, body)
}

// The admin API and the metrics endpoint refuse heads over 64 KiB.
func TestAdminAndMetricsHeadLimit(t *testing.T) {
	a := newTestAgent(t)
	applyConfig(t, a, &meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Metrics: &meshv1.Metrics{Address: "127.0.0.1", Port: 0, Path: "/metrics"}})
	t.Run("admin", func(t *testing.T) {
		netservetest.CheckHTTPHeadLimit(t, func() (net.Conn, error) { return net.Dial("tcp", a.admin.addr()) }, "GET", "/ready", 64<<10)
	})
	t.Run("metrics", func(t *testing.T) {
		a.metrics.mu.Lock()
		addr := a.metrics.ln.Addr().String()
		a.metrics.mu.Unlock()
		netservetest.CheckHTTPHeadLimit(t, func() (net.Conn, error) { return net.Dial("tcp", addr) }, "GET", "/metrics", 64<<10)
	})
}

// A running proxy settles once a config is applied and SettleDelay passed,
// and again after each new one.
func TestSettlesAfterEachAppliedConfig(t *testing.T) {
	cp := startConfigServer(t)
	dp, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	a := runAgentAt(t, cp.addr, cp.caFile, dp, func(c *Config) { c.SettleDelay = time.Millisecond })
	require.Nil(t, cp.push("v1", &meshv1.ProxyConfig{Mesh: "default", Name: "web-1"}).GetErrorDetail())
	require.Eventually(t, func() bool { return a.settled.Load() >= 1 }, 10*time.Second, time.Millisecond)
	before := a.settled.Load()
	require.Nil(t, cp.push("v2", &meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Outbounds: []*meshv1.Outbound{{
		Address: "127.0.0.1", Port: 0, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:backend",
	}}}).GetErrorDetail())
	require.Eventually(t, func() bool { return a.settled.Load() > before }, 10*time.Second, time.Millisecond)
}
