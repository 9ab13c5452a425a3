package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
	"github.com/kumametrics/mesh/pkg/stats"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

// echoServer answers every line with "<name>:<line>".
func echoServer(t *testing.T, name string) (addr string, stop func()) {
	t.Helper()
	return proxytest.LineApp(t, name)
}

// stillWaiting fails the test if done delivers within grace: a call that
// must keep waiting (a drain with work in flight) is given time to return
// wrongly, after the test saw it start.
func stillWaiting[T any](t testing.TB, done <-chan T, grace time.Duration, what string) {
	t.Helper()
	select {
	case v := <-done:
		t.Fatalf("%s returned while it had to wait: %v", what, v)
	case <-time.After(grace):
	}
}

// host is this test binary's own loopback address: the proxy's listeners
// in these tests bind on it, where nothing else on the machine listens, so
// freePort can hand out ports without asking the system, and a port it
// handed out and nobody bound is a dead endpoint.
var host = loopback.Host()

var lastPort atomic.Uint32

// freePort returns a port of host no other test of this binary got.
func freePort(testing.TB) uint32 { return 20000 + lastPort.Add(1) }

// addr is host:port.
func addr(port uint32) string { return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10)) }

func hostPort(t testing.TB, addr string) (string, uint32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return h, uint32(n)
}

func outboundConfig(t testing.TB, port uint32, endpoints ...string) *meshv1.ProxyConfig {
	out := &meshv1.Outbound{Address: host, Port: port, Service: "echo", Protocol: "tcp", ClusterName: "echo", Name: fmt.Sprintf("outbound:%s:%d", host, port)}
	for _, e := range endpoints {
		h, p := hostPort(t, e)
		out.Endpoints = append(out.Endpoints, &meshv1.Endpoint{Address: h, Port: p})
	}
	return &meshv1.ProxyConfig{Mesh: "default", Name: "test", Outbounds: []*meshv1.Outbound{out}}
}

func newProxy(t testing.TB) (*Proxy, *stats.Store) {
	st := stats.NewStore()
	p := New(st, Options{})
	t.Cleanup(p.Close)
	return p, st
}

// client is one connection through the proxy.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, port uint32) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr(port))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *client) say(line string) (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := fmt.Fprintf(c.c, "%s\n", line); err != nil {
		return "", err
	}
	s, err := c.r.ReadString('\n')
	return strings.TrimSpace(s), err
}

func (c *client) must(line string) string {
	c.t.Helper()
	s, err := c.say(line)
	require.NoError(c.t, err)
	return s
}

func counter(t *testing.T, st *stats.Store, dotted string) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, st.Write(&b, stats.FormatEnvoy, stats.RenderOptions{}))
	for _, line := range strings.Split(b.String(), "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && name == dotted {
			return v
		}
	}
	return ""
}

func TestTCPRoundRobinAndStats(t *testing.T) {
	a, _ := echoServer(t, "a")
	b, _ := echoServer(t, "b")
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a, b)))
	seen := map[string]int{}
	for range 4 {
		c := dial(t, port)
		seen[strings.Split(c.must("hi"), ":")[0]]++
		c.c.Close()
	}
	require.Equal(t, map[string]int{"a": 2, "b": 2}, seen)
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_cx_total") == "4" }, waitTimeout, time.Millisecond)
	require.Equal(t, "2", counter(t, st, "cluster.echo.membership_total"))
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_cx_active") == "0" }, waitTimeout, time.Millisecond)
	require.Equal(t, strconv.Itoa(4*len("hi\n")), counter(t, st, "cluster.echo.upstream_cx_tx_bytes_total"))
	require.Equal(t, strconv.Itoa(4*len("a:hi\n")), counter(t, st, "cluster.echo.upstream_cx_rx_bytes_total"))
}

func TestTCPFailsOverAndEjects(t *testing.T) {
	a, _ := echoServer(t, "a")
	dead := addr(freePort(t))
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, dead, a)))
	for range 6 {
		require.Equal(t, "a:x", dial(t, port).must("x"), "a dead endpoint is skipped")
	}
	require.Equal(t, "3", counter(t, st, "cluster.echo.upstream_cx_connect_fail"), "ejected after 3 failures, then skipped")
	require.Equal(t, "1", counter(t, st, "cluster.echo.outlier_detection.ejections_active"))
	require.Equal(t, "1", counter(t, st, "cluster.echo.membership_healthy"))
}

func TestEndpointChangesKeepEstablishedConnections(t *testing.T) {
	a, _ := echoServer(t, "a")
	b, _ := echoServer(t, "b")
	p, _ := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	established := dial(t, port)
	require.Equal(t, "a:1", established.must("1"))

	require.NoError(t, p.Apply(outboundConfig(t, port, b)))
	require.Equal(t, "a:2", established.must("2"), "the established connection stays on a")
	require.Equal(t, "b:3", dial(t, port).must("3"), "new connections go to b")

	// The listener goes away: established connections live on, new ones are refused.
	require.NoError(t, p.Apply(&meshv1.ProxyConfig{}))
	require.Equal(t, "a:4", established.must("4"))
	_, err := net.Dial("tcp", addr(port))
	require.Error(t, err)
	require.Empty(t, p.Listeners())
}

func TestDrainWaitsForConnections(t *testing.T) {
	a, _ := echoServer(t, "a")
	st := stats.NewStore()
	p := New(st, Options{})
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	c := dial(t, port)
	require.Equal(t, "a:1", c.must("1"))

	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		drained <- p.Drain(ctx)
	}()
	// New connections are refused at once; the open one still works.
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", addr(port))
		if err == nil {
			conn.Close()
		}
		return err != nil
	}, waitTimeout, time.Millisecond)
	require.Equal(t, "a:2", c.must("2"))
	stillWaiting(t, drained, 100*time.Millisecond, "the drain, with a connection open,")
	c.c.Close()
	require.NoError(t, <-drained)
	require.ErrorContains(t, p.Apply(outboundConfig(t, port, a)), "draining")
}

func TestDrainDeadlineClosesWhatIsLeft(t *testing.T) {
	a, _ := echoServer(t, "a")
	p := New(stats.NewStore(), Options{})
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	c := dial(t, port)
	require.Equal(t, "a:1", c.must("1"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Drain(ctx), context.DeadlineExceeded)
	_ = c.c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := c.r.ReadByte()
	require.ErrorIs(t, err, io.EOF, "closed by the proxy")
}

// A config the proxy cannot apply whole changes nothing: not the mesh's
// mTLS mode either, and what was bound for it is closed again.
func TestApplyIsAllOrNothing(t *testing.T) {
	a, _ := echoServer(t, "a")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	_, busyPort := hostPort(t, busy.Addr().String())
	p, _ := newProxy(t)
	require.NoError(t, p.Apply(outboundConfig(t, 0, a)))

	// mTLS on and a new outbound; and, in the bad one, an inbound on a port in use.
	good := outboundConfig(t, 0, a)
	good.Mtls = &meshv1.MTLS{Enabled: true}
	good.Outbounds = append(good.Outbounds, &meshv1.Outbound{Address: "127.0.0.1", Service: "x", Protocol: "tcp", ClusterName: "x", Name: "outbound:new"})
	bad := proto.Clone(good).(*meshv1.ProxyConfig)
	bad.Inbounds = []*meshv1.Inbound{{Address: "127.0.0.1", Port: busyPort, ServiceAddress: "127.0.0.1", ServicePort: 1, Protocol: "tcp", ClusterName: "localhost_1", Name: "inbound:busy"}}
	ch, err := p.Prepare(bad)
	require.ErrorContains(t, err, "listener inbound:busy")
	require.Nil(t, ch)
	require.Equal(t, []string{"outbound:" + host + ":0"}, p.Listeners(), "nothing changed")
	require.Equal(t, inboundPlain, p.sec.inboundMode(), "mTLS not switched on")
	require.Nil(t, p.sec.state.Load())
	require.Equal(t, "a:ok", dial(t, portOf(t, p, "outbound:"+host+":0")).must("ok"))

	// Prepared, then aborted: the new listener was bound, and is closed.
	ch, err = p.Prepare(good)
	require.NoError(t, err)
	prepared := ch.bound["outbound:new"].Addr().String()
	require.NotContains(t, ch.bound, "outbound:"+host+":0", "the running listener is kept, not bound again")
	ch.Abort()
	ch.Commit() // no effect after Abort
	_, err = net.Dial("tcp", prepared)
	require.Error(t, err, "closed on abort")
	require.Equal(t, []string{"outbound:" + host + ":0"}, p.Listeners())
	require.Nil(t, p.sec.state.Load())

	// Prepared and committed: everything switches.
	ch, err = p.Prepare(good)
	require.NoError(t, err)
	ch.Commit()
	ch.Abort() // no effect after Commit
	require.Equal(t, []string{"outbound:" + host + ":0", "outbound:new"}, p.Listeners())
	require.Equal(t, inboundStrict, p.sec.inboundMode())
	require.NotNil(t, p.Addr("outbound:new"))
	require.Nil(t, p.Addr("outbound:gone"))
}

// portOf is the port a listener of p is bound to.
func portOf(t *testing.T, p *Proxy, name string) uint32 {
	t.Helper()
	addr := p.Addr(name)
	require.NotNil(t, addr, name)
	_, port := hostPort(t, addr.String())
	return port
}

// A listener whose address stays keeps its socket, also under a new name:
// no rebind (which its own socket would refuse), no dropped connection.
func TestListenerKeepsItsSocketUnderANewName(t *testing.T) {
	a, _ := echoServer(t, "a")
	p, _ := newProxy(t)
	require.NoError(t, p.Apply(outboundConfig(t, 0, a)))
	port := portOf(t, p, "outbound:"+host+":0")
	established := dial(t, port)
	require.Equal(t, "a:1", established.must("1"))

	renamed := outboundConfig(t, port, a)
	renamed.Outbounds[0].Name = "outbound:renamed"
	require.NoError(t, p.Apply(renamed))
	require.Equal(t, []string{"outbound:renamed"}, p.Listeners())
	require.Equal(t, port, portOf(t, p, "outbound:renamed"))
	require.Equal(t, "a:2", established.must("2"))
	require.Equal(t, "a:3", dial(t, port).must("3"))
}

func TestApplyRefusesBadListeners(t *testing.T) {
	p, _ := newProxy(t)
	out := func(name string, port uint32, protocol string) *meshv1.Outbound {
		return &meshv1.Outbound{Address: "127.0.0.1", Port: port, Service: "x", Protocol: protocol, ClusterName: "x", Name: name}
	}
	for _, tc := range []struct {
		name string
		outs []*meshv1.Outbound
		want string
	}{
		{name: "a name twice", outs: []*meshv1.Outbound{out("o", 0, "tcp"), out("o", 0, "tcp")}, want: "listener o is configured twice"},
		{name: "an address twice", outs: []*meshv1.Outbound{out("o1", 10001, "tcp"), out("o2", 10001, "http")}, want: "listeners o1 and o2 both listen on 127.0.0.1:10001"},
		{name: "an unknown protocol", outs: []*meshv1.Outbound{out("o", 0, "smtp")}, want: `listener o: protocol "smtp" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorContains(t, p.Apply(&meshv1.ProxyConfig{Outbounds: tc.outs}), tc.want)
			require.Empty(t, p.Listeners())
		})
	}
}

// pathsOf is the path counts of a proxy's cluster.
func pathsOf(t *testing.T, p *Proxy, cluster string) *pipePaths {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clusters[cluster]
	require.NotNil(t, c, "cluster %s", cluster)
	return &c.pipes
}

// taken is how many directions took each path so far.
func (pp *pipePaths) taken() [2]uint64 { return [2]uint64{pp.spliced.Load(), pp.copied.Load()} }

// pollCounter waits until the statistic name (dotted) is want.
func pollCounter(t *testing.T, st *stats.Store, name string, want int64) {
	t.Helper()
	w := strconv.FormatInt(want, 10)
	require.Eventually(t, func() bool { return counter(t, st, name) == w }, waitTimeout, time.Millisecond,
		"%s: want %s", name, w)
}
