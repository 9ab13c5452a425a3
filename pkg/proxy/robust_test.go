package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/stats"
)

// failingProxy is a proxy whose listeners fail their first accepts with
// errno (n times, always when n < 0), and whose log is kept.
func failingProxy(t *testing.T, errno syscall.Errno, n int) (*Proxy, *stats.Store, *syncbuffer.Buffer) {
	t.Helper()
	log, logs := netservetest.NewLogger()
	st := stats.NewStore()
	p := New(st, Options{Log: log, Listen: failingListen(errno, n)})
	t.Cleanup(p.Close)
	return p, st, logs
}

// failingListen binds listeners whose first n accepts fail with errno.
func failingListen(errno syscall.Errno, n int) func(network, address string) (net.Listener, error) {
	return func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		return netservetest.FailAccepts(ln, errno, n), nil
	}
}

// Out of file descriptors, a listener retries and serves again once
// descriptors are free: it does not stop for good.
func TestListenerServesAgainAfterFileDescriptorExhaustion(t *testing.T) {
	a, _ := echoServer(t, "a")
	p, st, logs := failingProxy(t, syscall.EMFILE, 5)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	require.Equal(t, "a:hi", dial(t, port).must("hi"))
	require.Equal(t, "a:again", dial(t, port).must("again"))
	name := fmt.Sprintf("listener.outbound_%s_%d.accept_errors", host, port)
	require.Equal(t, "5", counter(t, st, name))
	require.NoError(t, p.NotAccepting())
	require.Equal(t, 1, strings.Count(logs.String(), "accepting connections fails"), logs.String())
}

// A listener that fails for good is reported (the agent's /ready turns
// not ready) and logged.
func TestListenerThatStopsAcceptingIsReported(t *testing.T) {
	a, _ := echoServer(t, "a")
	p, _, logs := failingProxy(t, syscall.EINVAL, -1)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	require.Eventually(t, func() bool { return p.NotAccepting() != nil }, waitTimeout, time.Millisecond)
	err := p.NotAccepting()
	require.ErrorIs(t, err, syscall.EINVAL)
	require.Contains(t, err.Error(), fmt.Sprintf("listener outbound:%s:%d", host, port))
	require.Contains(t, logs.String(), "listener stopped accepting connections")

	// A listener stopped on purpose is not a failure.
	p2, _ := newProxy(t)
	port2 := freePort(t)
	require.NoError(t, p2.Apply(outboundConfig(t, port2, a)))
	require.NoError(t, p2.Drain(t.Context()))
	require.NoError(t, p2.NotAccepting())
}

// panickyDial panics while armed (as a bug on the connect path would), and
// dials otherwise.
type panickyDial struct{ armed atomic.Bool }

func (d *panickyDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.armed.Load() {
		panic("injected: dialing " + addr)
	}
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func panickyProxy(t *testing.T) (*Proxy, *stats.Store, *panickyDial, *syncbuffer.Buffer) {
	t.Helper()
	log, logs := netservetest.NewLogger()
	d := &panickyDial{}
	st := stats.NewStore()
	p := New(st, Options{Log: log, Dial: d.dial})
	t.Cleanup(p.Close)
	return p, st, d, logs
}

func requirePanicLogged(t *testing.T, logs *syncbuffer.Buffer, listener string) {
	t.Helper()
	out := logs.String()
	require.Contains(t, out, "recovered a panic")
	require.Contains(t, out, "listener="+listener)
	require.Contains(t, out, "panickyDial", "the stack is logged")
}

func TestTCPConnectionPanicEndsOnlyThatConnection(t *testing.T) {
	a, _ := echoServer(t, "a")
	p, st, d, logs := panickyProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, a)))
	established := dial(t, port)
	require.Equal(t, "a:1", established.must("1"))

	d.armed.Store(true)
	_, err := dial(t, port).say("boom")
	require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "the panicking connection is closed, got %v", err)
	d.armed.Store(false)

	name := fmt.Sprintf("outbound:%s:%d", host, port)
	require.Equal(t, "1", counter(t, st, "listener."+strings.ReplaceAll(name, ":", "_")+".connection_panics"))
	requirePanicLogged(t, logs, name)
	require.Equal(t, "a:2", established.must("2"), "other connections go on")
	third := dial(t, port)
	require.Equal(t, "a:3", third.must("3"), "the listener keeps serving")
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	established.c.Close()
	third.c.Close()
	require.NoError(t, p.Drain(ctx), "nothing of the panicked connection is left behind")
}

func TestHTTP1ConnectionPanicEndsOnlyThatConnection(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(backend.Close)
	p, st, d, logs := panickyProxy(t)
	port := freePort(t)
	cfg := outboundConfig(t, port, backend.Listener.Addr().String())
	cfg.Outbounds[0].Protocol = "http"
	require.NoError(t, p.Apply(cfg))
	url := "http://" + addr(port)
	get := func() (string, error) {
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		res, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Get(url)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}

	d.armed.Store(true)
	_, err := get()
	require.Error(t, err, "the panicking connection is closed without an answer")
	d.armed.Store(false)
	name := fmt.Sprintf("outbound:%s:%d", host, port)
	require.Equal(t, "1", counter(t, st, "listener."+strings.ReplaceAll(name, ":", "_")+".connection_panics"))
	requirePanicLogged(t, logs, name)

	body, err := get()
	require.NoError(t, err)
	require.Equal(t, "ok", body, "the listener keeps serving")
	require.Eventually(t, func() bool { return counter(t, st, "http.echo.downstream_cx_active") == "0" }, waitTimeout, time.Millisecond,
		"the panicked connection was accounted as closed")
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	require.NoError(t, p.Drain(ctx), "the panicked session is not left behind")
}

func TestGRPCDialPanicFailsOnlyThatRequest(t *testing.T) {
	p, st, d, logs := panickyProxy(t)
	port := freePort(t)
	cfg := outboundConfig(t, port, grpcBackend(t))
	cfg.Outbounds[0].Protocol = "grpc"
	require.NoError(t, p.Apply(cfg))
	conn, err := grpc.NewClient(addr(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	d.armed.Store(true)
	_, err = client.Check(t.Context(), &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	d.armed.Store(false)
	name := fmt.Sprintf("outbound:%s:%d", host, port)
	require.Equal(t, "1", counter(t, st, "listener."+strings.ReplaceAll(name, ":", "_")+".connection_panics"))
	requirePanicLogged(t, logs, name)

	resp, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err, "the same client connection goes on")
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
}

// The h2c listeners refuse request heads over 64 KiB, as the HTTP/1.1 ones.
func TestHTTP2HeadLimit(t *testing.T) {
	p, _ := newProxy(t)
	port := freePort(t)
	cfg := outboundConfig(t, port, grpcBackend(t))
	cfg.Outbounds[0].Protocol = "http2"
	require.NoError(t, p.Apply(cfg))
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr(port), nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("x", 100<<10))
	res, err := (&http.Client{Transport: tr, Timeout: waitTimeout}).Do(req)
	if err == nil {
		_ = res.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)
		return
	}
	// Refused one way or another: the client obeys the announced limit, or
	// sent before it knew it and the server cut the connection.
	require.Error(t, err)
}
