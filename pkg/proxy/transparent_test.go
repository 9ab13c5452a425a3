package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/internal/netnstest"
	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
	"github.com/kumametrics/mesh/pkg/stats"
	"github.com/kumametrics/mesh/pkg/transparentproxy"
)

// proxyUID is the UID the redirect rules of these tests exclude: the
// proxy in the test process makes its sockets as that UID (DialAs).
const proxyUID = 4243

// tpod is a pod with the redirect rules installed and a proxy of the test
// process serving it, as kuma-dp would inside the pod.
type tpod struct {
	*netnstest.Pod
	n     *netnstest.Network
	proxy *Proxy
	st    *stats.Store
}

func newTransparentPod(t testing.TB) *tpod {
	t.Helper()
	netnstest.RequireIPTables(t)
	n := netnstest.New(t)
	pod := n.AddPod("pod")
	require.NoError(t, pod.Do(func() error {
		return transparentproxy.Install(context.Background(), transparentproxy.Exec{}, transparentproxy.DefaultConfig(proxyUID))
	}))
	st := stats.NewStore()
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn
	}
	p := New(st, Options{
		Log:    slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: level})),
		Listen: pod.Listen,
		Dial:   pod.Dialer(t, proxyUID),
		DialFrom: func(ctx context.Context, local netip.Addr, network, addr string) (net.Conn, error) {
			return pod.DialAs(ctx, proxyUID, local, network, addr)
		},
	})
	t.Cleanup(p.Close)
	return &tpod{Pod: pod, n: n, proxy: p, st: st}
}

// lineAppIn runs a line application inside the pod on addr.
func (tp *tpod) lineAppIn(t testing.TB, addr, name string) {
	t.Helper()
	ln, err := tp.Listen("tcp", addr)
	require.NoError(t, err)
	proxytest.LineAppOn(t, ln, name)
}

// say connects with dial and exchanges one line.
func say(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr, line string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	if len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s, err
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

func hostDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func join(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }

// transparentConfig: the pod's inbound on 8080 (application on
// 127.0.0.1:8080), an outbound to service echo at vip:80, the redirect
// listeners on every address of the pod.
func (tp *tpod) transparentConfig(vip netip.Addr, echo string, passthrough bool) *meshv1.ProxyConfig {
	h, p, _ := net.SplitHostPort(echo)
	port, _ := strconv.Atoi(p)
	return &meshv1.ProxyConfig{
		Mesh: "default", Name: "pod",
		Inbounds: []*meshv1.Inbound{{
			Address: tp.IP.String(), Port: 8080, ServiceAddress: "127.0.0.1", ServicePort: 8080, Protocol: "tcp",
			ClusterName: "localhost_8080", Name: "inbound:" + join(tp.IP, 8080), Transparent: true,
		}},
		Outbounds: []*meshv1.Outbound{{
			Address: vip.String(), Port: 80, Service: "echo", Protocol: "tcp", ClusterName: "echo", Name: "outbound:" + join(vip, 80),
			Endpoints: []*meshv1.Endpoint{{Address: h, Port: uint32(port)}}, Transparent: true,
		}},
		TransparentProxy: &meshv1.TransparentProxy{Address: "0.0.0.0", RedirectPortInbound: 15006, RedirectPortOutbound: 15001, OutboundPassthrough: passthrough},
	}
}

// TestTransparentRoutesByOriginalDestination: behind real iptables
// REDIRECT rules, the redirect listeners hand each connection to the
// inbound of its original port or the outbound of its original address,
// with the same statistics as an explicit listener; what matches neither
// passes through to its original destination (counted), or is refused
// (counted) when outbound passthrough is off; and a connection that was
// not redirected is refused instead of looping.
func TestTransparentRoutesByOriginalDestination(t *testing.T) {
	tp := newTransparentPod(t)
	tp.lineAppIn(t, "127.0.0.1:8080", "app")
	tp.lineAppIn(t, "0.0.0.0:7777", "side")
	tp.lineAppIn(t, "127.0.0.1:9000", "echo")
	hostLn, err := net.Listen("tcp", join(tp.n.Gateway, 0))
	require.NoError(t, err)
	hostApp, _ := proxytest.LineAppOn(t, hostLn, "host")

	vip := tp.n.ServiceIP(10)
	require.NoError(t, tp.proxy.Apply(tp.transparentConfig(vip, "127.0.0.1:9000", false)))
	require.Nil(t, tp.proxy.Addr("inbound:"+join(tp.IP, 8080)), "the inbound has no socket: the application holds its port")
	require.Nil(t, tp.proxy.Addr("outbound:"+join(vip, 80)))

	// The workload calls the service at its virtual address.
	got, err := say(t, tp.DialContext, join(vip, 80), "hi")
	require.NoError(t, err)
	require.Equal(t, "echo:hi", got)
	require.Eventually(t, func() bool { return counter(t, tp.st, "cluster.echo.upstream_cx_total") == "1" }, waitTimeout, time.Millisecond)

	// A client elsewhere calls the workload's port.
	got, err = say(t, hostDial, join(tp.IP, 8080), "in")
	require.NoError(t, err)
	require.Equal(t, "app:in", got)
	require.Eventually(t, func() bool { return counter(t, tp.st, "cluster.localhost_8080.upstream_cx_total") == "1" }, waitTimeout, time.Millisecond)

	// A port no inbound has: through to the workload, from 127.0.0.6.
	got, err = say(t, hostDial, join(tp.IP, 7777), "side door")
	require.NoError(t, err)
	require.Equal(t, "side:side door", got)
	require.Eventually(t, func() bool { return counter(t, tp.st, "cluster.inbound_passthrough.upstream_cx_total") == "1" }, waitTimeout, time.Millisecond)

	// Outbound passthrough off: an unknown destination is refused, counted.
	got, err = say(t, tp.DialContext, hostApp, "out")
	require.Error(t, err, "closed by the proxy (EOF or a reset), never answered: %q", got)
	require.Equal(t, "1", counter(t, tp.st, "listener.0.0.0.0_15001.no_filter_chain_match"))
	require.Equal(t, "", counter(t, tp.st, "cluster.pass_through.upstream_cx_total"), "no passthrough cluster while passthrough is off")

	// Passthrough on: through to the original destination, counted.
	require.NoError(t, tp.proxy.Apply(tp.transparentConfig(vip, "127.0.0.1:9000", true)))
	got, err = say(t, tp.DialContext, hostApp, "out")
	require.NoError(t, err)
	require.Equal(t, "host:out", got)
	require.Eventually(t, func() bool { return counter(t, tp.st, "cluster.pass_through.upstream_cx_total") == "1" }, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, tp.st, "cluster.echo.upstream_cx_total"), "statistics of the outbound kept across the change")

	// A connection to the redirect port itself that no rule redirected
	// (the inbound passthrough connecting to it) is refused, not looped.
	_, err = say(t, hostDial, join(tp.IP, 15001), "loop?")
	require.Error(t, err)
	require.Eventually(t, func() bool {
		return counter(t, tp.st, "listener.0.0.0.0_15001.no_filter_chain_match") == "2"
	}, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, tp.st, "cluster.pass_through.upstream_cx_total"))
}

// TestTransparentHTTPIsInternalOutbound: an HTTP service reached at its
// virtual address is proxied by the HTTP engine and counted as traffic of
// the proxy's own host (internal), as through an explicit outbound.
func TestTransparentHTTPIsInternalOutbound(t *testing.T) {
	tp := newTransparentPod(t)
	ln, err := tp.Listen("tcp", "127.0.0.1:8000")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "web") }), ReadHeaderTimeout: waitTimeout}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	vip := tp.n.ServiceIP(20)
	cfg := tp.transparentConfig(vip, "127.0.0.1:8000", false)
	cfg.Outbounds[0].Protocol, cfg.Outbounds[0].Service, cfg.Outbounds[0].ClusterName = "http", "web", "web"
	require.NoError(t, tp.proxy.Apply(cfg))

	client := &http.Client{Timeout: waitTimeout, Transport: &http.Transport{DialContext: tp.DialContext}}
	defer client.CloseIdleConnections()
	res, err := client.Get("http://" + join(vip, 80) + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.Equal(t, "web", string(body))
	require.Eventually(t, func() bool { return counter(t, tp.st, "cluster.web.upstream_rq_2xx") == "1" }, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, tp.st, "cluster.web.internal.upstream_rq_2xx"))
	require.Equal(t, "0", counter(t, tp.st, "cluster.web.external.upstream_rq_2xx"))
}

// TestTransparentProxyingSwitchesOff: a config without transparent
// proxying closes the redirect listeners and binds the inbound again.
func TestTransparentProxyingSwitchesOff(t *testing.T) {
	tp := newTransparentPod(t)
	tp.lineAppIn(t, "127.0.0.1:9000", "echo")
	vip := tp.n.ServiceIP(30)
	cfg := tp.transparentConfig(vip, "127.0.0.1:9000", true)
	require.NoError(t, tp.proxy.Apply(cfg))
	require.Contains(t, tp.proxy.Listeners(), InboundRedirectListener)

	plain := tp.transparentConfig(vip, "127.0.0.1:9000", true)
	plain.TransparentProxy = nil
	plain.Inbounds[0].Transparent, plain.Inbounds[0].Port = false, 18080
	plain.Inbounds[0].Name = "inbound:" + join(tp.IP, 18080)
	plain.Outbounds[0].Transparent, plain.Outbounds[0].Address, plain.Outbounds[0].Port = false, "127.0.0.1", 10001
	plain.Outbounds[0].Name = "outbound:127.0.0.1:10001"
	require.NoError(t, tp.proxy.Apply(plain))
	require.Equal(t, []string{"inbound:" + join(tp.IP, 18080), "outbound:127.0.0.1:10001"}, tp.proxy.Listeners())
	got, err := say(t, tp.DialContext, "127.0.0.1:10001", "explicit")
	require.NoError(t, err)
	require.Equal(t, "echo:explicit", got)
	_, err = say(t, tp.DialContext, join(vip, 80), "gone")
	require.Error(t, err, "redirected to a port nothing listens on any more")

	require.NoError(t, tp.proxy.Apply(cfg))
	got, err = say(t, tp.DialContext, join(vip, 80), "back")
	require.NoError(t, err)
	require.Equal(t, "echo:back", got)
}

// TestTransparentPassthroughHalfCloses: a connection passed through to its
// original destination keeps TCP's half-close both ways, as through an
// explicit listener: the destination ending its side (a response followed
// by FIN) leaves the workload's side open for what it still sends.
func TestTransparentPassthroughHalfCloses(t *testing.T) {
	tp := newTransparentPod(t)
	tp.lineAppIn(t, "127.0.0.1:9000", "echo")
	hostLn, err := net.Listen("tcp", join(tp.n.Gateway, 0))
	require.NoError(t, err)
	defer hostLn.Close()
	rest := make(chan string, 1)
	go func() {
		c, err := hostLn.Accept()
		if err != nil {
			rest <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		r := bufio.NewReader(c)
		_, _ = r.ReadString('\n')
		_, _ = io.WriteString(c, "ack\n")
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(r)
		if err != nil {
			rest <- err.Error()
			return
		}
		rest <- string(b)
	}()
	require.NoError(t, tp.proxy.Apply(tp.transparentConfig(tp.n.ServiceIP(50), "127.0.0.1:9000", true)))

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := tp.DialContext(ctx, "tcp", hostLn.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	_, err = io.WriteString(c, "request\n")
	require.NoError(t, err)
	got, err := io.ReadAll(c)
	require.NoError(t, err, "the destination's FIN arrives as the end of the stream")
	require.Equal(t, "ack\n", string(got))
	_, err = io.WriteString(c, "more\n")
	require.NoError(t, err)
	require.NoError(t, c.(interface{ CloseWrite() error }).CloseWrite())
	require.Equal(t, "more\n", <-rest, "what the workload sent after the destination's FIN reached it")
	if runtime.GOOS == "linux" {
		require.Equal(t, uint64(2), pathsOf(t, tp.proxy, OutboundPassthrough).spliced.Load(), "the redirected connection is spliced")
	}
}
