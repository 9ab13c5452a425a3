package kumadp

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
	"github.com/kumametrics/mesh/pkg/resource"
)

// A config is applied all or nothing: one that cannot be applied whole is
// NACKed with its error, and the running config keeps serving, whole: its
// listeners, its connections, its metrics endpoint, its mTLS state, with
// nothing the rejected config bound left behind. A good config then applies
// fully.
func TestRejectedConfigLeavesTheRunningOneInPlace(t *testing.T) {
	app, _ := proxytest.LineApp(t, "app")
	appHost, appPort := splitHostPort(t, app)
	cp := startConfigServer(t)
	a := cp.runAgent(t)
	admin := "http://" + a.admin.addr()

	// v1: an inbound of "web" in front of the application; the metrics
	// endpoint. Ports of 0: the proxy binds them.
	inbound := &meshv1.Inbound{Address: "127.0.0.1", ServiceAddress: appHost, ServicePort: appPort, Protocol: "tcp",
		ClusterName: "localhost_app", Name: "inbound:web", Tags: map[string]string{resource.ServiceTag: "web"},
		AllowedSources: []*meshv1.Selector{{Match: map[string]string{resource.ServiceTag: "web"}}}}
	v1 := &meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Inbounds: []*meshv1.Inbound{inbound},
		Metrics: &meshv1.Metrics{Address: "127.0.0.1", Path: "/metrics"}}
	ack := cp.push("v1", v1)
	require.Nil(t, ack.GetErrorDetail())
	inboundAddr := a.proxy.Addr("inbound:web").String()
	_, inboundPort := splitHostPort(t, inboundAddr)

	// v2: and an outbound to "web", whose endpoint is that inbound.
	v2 := proto.Clone(v1).(*meshv1.ProxyConfig)
	v2.Outbounds = []*meshv1.Outbound{{Address: "127.0.0.1", Service: "web", Protocol: "tcp", ClusterName: "web", Name: "outbound:web",
		Endpoints: []*meshv1.Endpoint{{Address: "127.0.0.1", Port: inboundPort}}}}
	ack = cp.push("v2", v2)
	require.Nil(t, ack.GetErrorDetail())
	require.Equal(t, "v2", ack.GetVersionInfo())
	outboundAddr := a.proxy.Addr("outbound:web").String()
	metricsAddr := a.metrics.boundAddr().String()
	established, err := dialLine(outboundAddr)
	require.NoError(t, err)
	defer established.c.Close()
	answer, err := established.ask("first")
	require.NoError(t, err)
	require.Equal(t, "app:first", answer)
	running := listening(t)
	require.Contains(t, running, inboundAddr)
	require.Contains(t, running, outboundAddr)
	require.Contains(t, running, metricsAddr)

	elsewhere := loopback.Host() // where the metrics endpoint moves
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	_, busyPort := splitHostPort(t, busy.Addr().String())
	running = append(running, busy.Addr().String())

	// What the rejected configs change besides what makes them fail: mTLS
	// on, a new inbound and outbound, the metrics endpoint elsewhere.
	changed := func() *meshv1.ProxyConfig {
		c := proto.Clone(v2).(*meshv1.ProxyConfig)
		c.Mtls = &meshv1.MTLS{Enabled: true, TrustBundle: cp.meshCA.CertPEM, CaVersion: "ca-1"}
		c.Inbounds = append(c.Inbounds, &meshv1.Inbound{Address: "127.0.0.1", ServiceAddress: appHost, ServicePort: appPort,
			Protocol: "tcp", ClusterName: "localhost_extra", Name: "inbound:extra"})
		c.Outbounds = append(c.Outbounds, &meshv1.Outbound{Address: "127.0.0.1", Service: "web", Protocol: "tcp", ClusterName: "web_again", Name: "outbound:again",
			Endpoints: []*meshv1.Endpoint{{Address: "127.0.0.1", Port: inboundPort}}})
		c.Metrics = &meshv1.Metrics{Address: elsewhere, Path: "/elsewhere"}
		return c
	}
	brokenBundle := append(append([]byte{}, cp.meshCA.CertPEM...), "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3\n-----END CERTIFICATE-----\n"...)
	rejected := []struct {
		name   string
		change func(*meshv1.ProxyConfig)
		err    []string
	}{
		{name: "an inbound on a port in use", change: func(c *meshv1.ProxyConfig) {
			c.Inbounds = append(c.Inbounds, &meshv1.Inbound{Address: "127.0.0.1", Port: busyPort, ServiceAddress: appHost, ServicePort: appPort,
				Protocol: "tcp", ClusterName: "localhost_busy", Name: "inbound:busy"})
		}, err: []string{"listener inbound:busy", "address already in use"}},
		{name: "the metrics endpoint on a port in use", change: func(c *meshv1.ProxyConfig) {
			c.Metrics.Address, c.Metrics.Port = "127.0.0.1", busyPort
		}, err: []string{"metrics endpoint", "address already in use"}},
		{name: "a metrics filter that does not compile", change: func(c *meshv1.ProxyConfig) {
			c.Metrics.FilterRegex = "cluster\\.("
		}, err: []string{"metricsendpoint: filterRegex", "missing closing )"}},
		{name: "a trust bundle with a broken certificate", change: func(c *meshv1.ProxyConfig) {
			c.Mtls.TrustBundle = brokenBundle
		}, err: []string{"mtls", "trust bundle", "certificate 2"}},
		{name: "an unknown protocol", change: func(c *meshv1.ProxyConfig) {
			c.Outbounds[1].Protocol = "smtp"
		}, err: []string{"listener outbound:again", `protocol "smtp"`}},
	}
	for i, tc := range rejected {
		t.Run(tc.name, func(t *testing.T) {
			cfg := changed()
			tc.change(cfg)
			version := fmt.Sprintf("bad-%d", i)
			nack := cp.push(version, cfg)
			require.NotNil(t, nack.GetErrorDetail(), "NACKed")
			require.Equal(t, "v2", nack.GetVersionInfo(), "the NACK names the running version")

			// Every listener of the running config still listens and
			// nothing the rejected config bound is left.
			now := listening(t)
			require.Subset(t, now, []string{inboundAddr, outboundAddr, metricsAddr})
			require.Empty(t, slices.DeleteFunc(now, func(addr string) bool { return slices.Contains(running, addr) }), "left bound")
			require.Equal(t, []string{"inbound:web", "outbound:web"}, a.proxy.Listeners())
			// Plain text as before (mTLS was not switched on), through the
			// outbound and the inbound, on new and established connections.
			for _, addr := range []string{outboundAddr, inboundAddr} {
				answer, err := ask(addr, "again")
				require.NoError(t, err, addr)
				require.Equal(t, "app:again", answer)
			}
			answer, err := established.ask(version)
			require.NoError(t, err)
			require.Equal(t, "app:"+version, answer)
			// The metrics endpoint is where it was, with its path.
			code, body, err := httpStatus("http://" + metricsAddr + "/metrics")
			require.NoError(t, err)
			require.Equal(t, 200, code)
			require.Contains(t, body, "envoy_server_live 1")
			code, _, err = httpStatus("http://" + metricsAddr + "/elsewhere")
			require.NoError(t, err)
			require.Equal(t, 404, code)
			require.Nil(t, a.sec.Certificate(), "no certificate asked for")
			require.Zero(t, cp.signed.Load(), "no certificate asked for")

			code, body, err = httpStatus(admin + "/config_dump")
			require.NoError(t, err)
			require.Equal(t, 200, code)
			var dump struct {
				Version string `json:"version_info"`
				Config  struct {
					Outbounds []struct {
						Name string `json:"name"`
					} `json:"outbounds"`
					Mtls any `json:"mtls"`
				} `json:"config"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &dump), body)
			require.Equal(t, "v2", dump.Version)
			require.Len(t, dump.Config.Outbounds, 1)
			require.Nil(t, dump.Config.Mtls)

			// The NACK says why.
			for _, want := range tc.err {
				require.Contains(t, nack.GetErrorDetail().GetMessage(), want)
			}
		})
	}

	// The good config applies fully.
	ack = cp.push("v3", changed())
	require.Nil(t, ack.GetErrorDetail())
	require.Equal(t, "v3", ack.GetVersionInfo())
	require.Equal(t, []string{"inbound:extra", "inbound:web", "outbound:again", "outbound:web"}, a.proxy.Listeners())
	require.Equal(t, inboundAddr, a.proxy.Addr("inbound:web").String(), "the same socket")
	require.Equal(t, outboundAddr, a.proxy.Addr("outbound:web").String(), "the same socket")
	require.Contains(t, listening(t), a.proxy.Addr("inbound:extra").String())
	// The established connection's hop to the inbound is plain text: mTLS
	// switched on (at once: no switch window) ends it, as it refuses new
	// plain connections (the rejected configs above kept it).
	require.Eventually(t, func() bool { _, err := established.ask("still"); return err != nil },
		waitTimeout, 10*time.Millisecond, "a plain connection outlived the switch to mTLS")
	newMetrics := a.metrics.boundAddr().String()
	require.True(t, strings.HasPrefix(newMetrics, elsewhere+":"), newMetrics)
	code, body, err := httpStatus("http://" + newMetrics + "/elsewhere")
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Contains(t, body, "envoy_server_live 1")
	require.Eventually(t, func() bool { _, _, err := httpStatus("http://" + metricsAddr + "/metrics"); return err != nil },
		waitTimeout, 10*time.Millisecond, "the old metrics address is closed")
	// mTLS: a certificate is issued, and the outbound reaches the inbound
	// over mTLS; plain text to the inbound is refused.
	for _, out := range []string{"outbound:web", "outbound:again"} {
		addr := a.proxy.Addr(out).String()
		require.Eventually(t, func() bool {
			answer, err := ask(addr, "secure")
			return err == nil && answer == "app:secure"
		}, waitTimeout, 10*time.Millisecond, out)
	}
	require.NotZero(t, cp.signed.Load())
	_, body, err = httpStatus(admin + "/stats?filter=^cluster%5C.web%5C.ssl%5C.handshake$")
	require.NoError(t, err)
	require.NotContains(t, body, "cluster.web.ssl.handshake: 0")
	require.Contains(t, body, "cluster.web.ssl.handshake: ")
	for _, in := range []string{"inbound:web", "inbound:extra"} {
		_, err = ask(a.proxy.Addr(in).String(), "plain")
		require.Error(t, err, "plain text refused under mTLS")
	}
	_, body, err = httpStatus(admin + "/config_dump")
	require.NoError(t, err)
	require.Contains(t, body, `"version_info": "v3"`)
}

func splitHostPort(t *testing.T, addr string) (string, uint32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	var port uint32
	_, err = fmt.Sscan(p, &port)
	require.NoError(t, err)
	return h, port
}
