package http1_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/proxy/http1"
	"github.com/kumametrics/mesh/pkg/stats"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness runs a Proxy behind its own listeners on 127.0.0.1.
type harness struct {
	t        testing.TB
	p        *http1.Proxy
	cluster  *stats.ClusterStats
	listener *stats.HTTPConnManagerStats
	dials    atomic.Int64
	wg       sync.WaitGroup
	addr     string // the internal listener
	extAddr  string // the external listener
	lns      []net.Listener
}

// newHarness starts a proxy whose Dial connects to upstream (empty: no
// upstream at all); mod adjusts the Config.
func newHarness(t testing.TB, upstream string, mod func(*http1.Config)) *harness {
	t.Helper()
	h := &harness{t: t}
	s := stats.NewStore()
	h.cluster = stats.NewClusterStats(s, "backend")
	h.listener = stats.NewHTTPConnManagerStats(s, "outbound_backend")
	cfg := http1.Config{
		Cluster:  h.cluster,
		Listener: h.listener,
		Log:      slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if upstream != "" {
		cfg.Dial = h.dialer(upstream)
	}
	if mod != nil {
		mod(&cfg)
	}
	h.p = http1.New(cfg)
	h.addr = h.serve(false)
	h.extAddr = h.serve(true)
	t.Cleanup(h.close)
	return h
}

// dialer returns a Dial that connects to addr and counts the dials.
func (h *harness) dialer(addr string) func(context.Context, string) (net.Conn, string, error) {
	return func(ctx context.Context, _ string) (net.Conn, string, error) {
		h.dials.Add(1)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		return c, addr, err
	}
}

func (h *harness) serve(external bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(h.t, err)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				h.p.ServeConn(c, external)
			}()
		}
	}()
	h.lns = append(h.lns, ln)
	return ln.Addr().String()
}

func (h *harness) close() {
	for _, ln := range h.lns {
		_ = ln.Close()
	}
	h.p.Close()
	h.wg.Wait()
}

// testWriter sends log output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// client returns an HTTP client with keep-alive to the proxy.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// get fetches url and returns the status and body.
func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// rawConn is a client connection that writes raw bytes and reads responses
// with net/http's parser.
type rawConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	_, err := io.WriteString(r.c, s)
	require.NoError(r.t, err)
}

// read reads one response to a request with method and its whole body.
func (r *rawConn) read(method string) (*http.Response, string) {
	r.t.Helper()
	resp, err := http.ReadResponse(r.br, &http.Request{Method: method})
	require.NoError(r.t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	require.NoError(r.t, resp.Body.Close())
	return resp, string(b)
}

// requireClosed requires the peer to close the connection (after any
// remaining bytes).
func (r *rawConn) requireClosed() {
	r.t.Helper()
	_, err := io.ReadAll(r.br)
	require.NoError(r.t, err) // EOF
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, cond func() bool, msg string) {
	t.Helper()
	if cond() {
		return
	}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			require.FailNow(t, "condition not met: "+msg)
		case <-tick.C:
		}
	}
}

// rawBackend is an upstream that reads request heads (and Content-Length
// bodies) and answers each with a canned response, recording what it got.
type rawBackend struct {
	t        testing.TB
	ln       net.Listener
	respond  func(n int, head string, c net.Conn) bool // false closes the connection
	mu       sync.Mutex
	requests []string
	rxBytes  int
	conns    int
	wg       sync.WaitGroup
}

func newRawBackend(t testing.TB, respond func(n int, head string, c net.Conn) bool) *rawBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	b := &rawBackend{t: t, ln: ln, respond: respond}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		b.wg.Wait()
	})
	return b
}

func (b *rawBackend) addr() string { return b.ln.Addr().String() }

func (b *rawBackend) accept() {
	defer b.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var cwg sync.WaitGroup
	defer cwg.Wait()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			for _, c := range conns {
				_ = c.Close()
			}
			return
		}
		b.mu.Lock()
		b.conns++
		b.mu.Unlock()
		conns = append(conns, c)
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				head, body, ok := readRawRequest(br)
				if !ok {
					return
				}
				b.mu.Lock()
				b.requests = append(b.requests, head+body)
				b.rxBytes += len(head) + len(body)
				n := len(b.requests)
				b.mu.Unlock()
				if !b.respond(n, head, c) {
					return
				}
			}
		}()
	}
}

// got returns the requests received so far.
func (b *rawBackend) got() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

func (b *rawBackend) connCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.conns
}

// readRawRequest reads a head and a Content-Length or chunked body, raw.
func readRawRequest(br *bufio.Reader) (head, body string, ok bool) {
	var sb strings.Builder
	cl := 0
	chunked := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", "", false
		}
		sb.WriteString(line)
		l := strings.ToLower(strings.TrimSpace(line))
		if v, found := strings.CutPrefix(l, "content-length:"); found {
			for _, c := range strings.TrimSpace(v) {
				cl = cl*10 + int(c-'0')
			}
		}
		if l == "transfer-encoding: chunked" {
			chunked = true
		}
		if line == "\r\n" {
			break
		}
	}
	if chunked {
		var bb strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return "", "", false
			}
			bb.WriteString(line)
			if line == "0\r\n" {
				for {
					tl, err := br.ReadString('\n')
					if err != nil {
						return "", "", false
					}
					bb.WriteString(tl)
					if tl == "\r\n" {
						return sb.String(), bb.String(), true
					}
				}
			}
			var n int
			for _, c := range strings.TrimSpace(line) {
				n = n*16 + strings.IndexRune("0123456789abcdef", c)
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(br, buf); err != nil {
				return "", "", false
			}
			bb.Write(buf)
		}
	}
	buf := make([]byte, cl)
	if _, err := io.ReadFull(br, buf); err != nil {
		return "", "", false
	}
	return sb.String(), string(buf), true
}

// reply returns a respond func that writes resp to every request.
func reply(resp string) func(int, string, net.Conn) bool {
	return func(_ int, _ string, c net.Conn) bool {
		_, err := io.WriteString(c, resp)
		return err == nil
	}
}

type statsCounter = stats.Counter

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
