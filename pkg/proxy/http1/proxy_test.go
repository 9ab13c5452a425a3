package http1_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/proxy/http1"
)

// backend starts a net/http upstream and counts its connections.
func backend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	srv, conns, _ := backendCounting(t, h)
	return srv, conns
}

// backendCounting starts a net/http upstream and counts the connections it
// accepted and closed.
func backendCounting(t *testing.T, h http.HandlerFunc) (srv *httptest.Server, opened, closed *atomic.Int64) {
	t.Helper()
	opened, closed = new(atomic.Int64), new(atomic.Int64)
	srv = httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			opened.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, opened, closed
}

func hostOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

func TestKeepAliveReuse(t *testing.T) {
	t.Parallel()
	srv, conns := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	})
	h := newHarness(t, hostOf(srv), nil)
	c := client(t)
	for i := range 50 {
		status, body := get(t, c, fmt.Sprintf("http://%s/r%d", h.addr, i))
		require.Equal(t, 200, status)
		require.Equal(t, fmt.Sprintf("hello /r%d", i), body)
	}
	require.EqualValues(t, 1, conns.Load(), "upstream connections")
	require.EqualValues(t, 1, h.dials.Load())
	require.EqualValues(t, 1, h.cluster.UpstreamCxTotal.Value())
	require.EqualValues(t, 50, h.cluster.UpstreamRqXX[1].Value())
}

// hideLength hides the length of a body so net/http sends it chunked.
type hideLength struct{ io.Reader }

func TestChunkedBothWays(t *testing.T) {
	t.Parallel()
	var sawTE []string
	var mu sync.Mutex
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sawTE = append(sawTE, strings.Join(r.TransferEncoding, ","))
		mu.Unlock()
		b, err := io.ReadAll(r.Body) // net/http answers only after the body
		if err != nil {
			return
		}
		for len(b) > 0 { // in pieces: a chunked response
			n := min(len(b), 1000)
			_, _ = w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	})
	h := newHarness(t, hostOf(srv), nil)
	c := client(t)
	payload := strings.Repeat("0123456789abcdef", 10000)
	resp, err := c.Post("http://"+h.addr+"/echo", "text/plain", hideLength{strings.NewReader(payload)})
	require.NoError(t, err)
	require.Equal(t, []string{"chunked"}, resp.TransferEncoding)
	got, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, payload, string(got))
	mu.Lock()
	require.Equal(t, []string{"chunked"}, sawTE)
	mu.Unlock()
}

func TestChunkedTrailersAndExtensions(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"))
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"4;name=value\r\nwxyz\r\n0\r\nX-Req-Trailer: r\r\n\r\n")
	resp, body := rc.read("POST")
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, "abc", body)
	require.Equal(t, "t", resp.Trailer.Get("X-Trailer"))
	got := be.got()
	require.Len(t, got, 1)
	require.True(t, strings.HasSuffix(got[0], "\r\n\r\n4\r\nwxyz\r\n0\r\nX-Req-Trailer: r\r\n\r\n"), got[0])
}

// pattern is a reader of n bytes of a fixed pattern.
func pattern(n int64) io.Reader {
	return io.LimitReader(repeatReader{}, n)
}

type repeatReader struct{}

func (repeatReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(i % 251)
	}
	return len(b), nil
}

// TestLargeBodiesStreamed is not parallel: it measures the bytes the whole
// process allocates.
func TestLargeBodiesStreamed(t *testing.T) {
	size := int64(largeBodySize)
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				w.WriteHeader(500)
				return
			}
			_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, pattern(size))
	})
	h := newHarness(t, hostOf(srv), nil)
	c := client(t)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// Upload, with a length and chunked.
	req, err := http.NewRequest(http.MethodPost, "http://"+h.addr+"/up", pattern(size))
	require.NoError(t, err)
	req.ContentLength = size
	resp, err := c.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, strconv.FormatInt(size, 10), string(b))

	resp, err = c.Post("http://"+h.addr+"/up", "", hideLength{pattern(size)})
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, strconv.FormatInt(size, 10), string(b))

	// Download.
	resp, err = c.Get("http://" + h.addr + "/down")
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, size, n)

	runtime.ReadMemStats(&after)
	// Three bodies of size passed through client, proxy and backend in this
	// process: far less than one body was allocated in all.
	if !raceEnabled { // the race detector's own allocations blur the figure
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(size/4), "bytes allocated")
	}
}

func TestNoBodyResponses(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, head string, c net.Conn) bool {
		var resp string
		switch {
		case strings.HasPrefix(head, "HEAD "):
			resp = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
		case strings.HasPrefix(head, "GET /204 "):
			resp = "HTTP/1.1 204 No Content\r\n\r\n"
		case strings.HasPrefix(head, "GET /304 "):
			resp = "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n"
		default:
			resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		}
		_, err := io.WriteString(c, resp)
		return err == nil
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	for _, tc := range []struct {
		name, method, path string
		status             int
	}{
		{name: "HEAD", method: "HEAD", path: "/", status: 200},
		{name: "204", method: "GET", path: "/204", status: 204},
		{name: "304", method: "GET", path: "/304", status: 304},
		{name: "after them", method: "GET", path: "/", status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc.send(tc.method + " " + tc.path + " HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, body := rc.read(tc.method)
			require.Equal(t, tc.status, resp.StatusCode)
			if tc.name == "after them" {
				require.Equal(t, "ok", body)
			} else {
				require.Empty(t, body)
			}
		})
	}
	require.Equal(t, 1, be.connCount())
}

func TestHTTP10(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, head string, c net.Conn) bool {
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
		if strings.HasPrefix(head, "GET /chunked ") {
			resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		}
		_, err := io.WriteString(c, resp)
		return err == nil
	})
	h := newHarness(t, be.addr(), nil)

	t.Run("close by default", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.send("GET /plain HTTP/1.0\r\n\r\n")
		resp, body := rc.read("GET")
		require.Equal(t, "hello", body)
		require.True(t, resp.Close)
		rc.requireClosed()
	})
	t.Run("keep-alive when asked", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		for range 2 {
			rc.send("GET /plain HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n")
			resp, body := rc.read("GET")
			require.Equal(t, "hello", body)
			require.Equal(t, "keep-alive", resp.Header.Get("Connection"))
		}
	})
	t.Run("chunked response is de-chunked", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		resp, err := io.ReadAll(rc.br)
		require.NoError(t, err)
		require.Equal(t, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", string(resp))
	})
	// Forwarded as HTTP/1.1 with an empty Host when the client sent none.
	got := be.got()
	require.Contains(t, got, "GET /plain HTTP/1.1\r\nHost: \r\n\r\n")
	require.Contains(t, got, "GET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
}

func TestExpectContinue(t *testing.T) {
	t.Parallel()
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		b, _ := io.ReadAll(r.Body) // net/http sends 100 Continue here
		_, _ = w.Write(b)
	})
	h := newHarness(t, hostOf(srv), nil)

	t.Run("continue", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		require.NoError(t, err)
		require.Equal(t, 100, resp.StatusCode) // passed on before the body was sent
		rc.send("body")
		resp, body := rc.read("POST")
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, "body", body)
	})
	t.Run("final answer instead", func(t *testing.T) {
		rc := dialRaw(t, h.addr)
		rc.send("POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := rc.read("POST")
		require.Equal(t, 417, resp.StatusCode)
		require.True(t, resp.Close)
		rc.requireClosed()
	})
	t.Run("net/http client", func(t *testing.T) {
		tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodPost, "http://"+h.addr+"/echo", strings.NewReader("payload"))
		require.NoError(t, err)
		req.Header.Set("Expect", "100-continue")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, "payload", string(b))
	})
}

func TestConnectionClose(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, body := rc.read("GET")
	require.Equal(t, "ok", body)
	require.True(t, resp.Close)
	rc.requireClosed()
	// The upstream connection was not affected: it is reused.
	rc = dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body = rc.read("GET")
	require.Equal(t, "ok", body)
	require.Equal(t, 1, be.connCount())
	require.Equal(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", be.got()[0], "Connection: close is not forwarded")
}

func TestUpstreamConnectionClose(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	for range 3 {
		rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.read("GET")
		require.Equal(t, "ok", body)
		require.False(t, resp.Close, "the client's connection stays open")
	}
	require.Equal(t, 3, be.connCount())
	require.EqualValues(t, 3, h.dials.Load())
}

func TestHopByHopStripped(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop, keep-alive\r\n"+
		"X-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nTrailer: X-T\r\nX-End: e\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET /p?q=1 HTTP/1.1\r\nHost: example\r\nConnection: X-Hop, keep-alive\r\nX-Hop: secret\r\n" +
		"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n" +
		"Upgrade: h2c\r\nX-End: e\r\nConnection: Content-Length\r\nContent-Length: 0\r\n\r\n")
	resp, body := rc.read("GET")
	require.Equal(t, "ok", body)
	require.Equal(t, http.Header{"X-End": {"e"}, "Content-Length": {"2"}}, resp.Header)
	require.Equal(t, []string{"GET /p?q=1 HTTP/1.1\r\nHost: example\r\nX-End: e\r\nContent-Length: 0\r\n\r\n"}, be.got())
}

func TestUpgrade(t *testing.T) {
	t.Parallel()
	var head atomic.Value
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		head.Store(r.Header.Get("Connection") + "|" + r.Header.Get("Upgrade"))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(conn, brw) // echo until the client half-closes
	})
	h := newHarness(t, hostOf(srv), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly ")
	resp, err := http.ReadResponse(rc.br, nil)
	require.NoError(t, err)
	require.Equal(t, 101, resp.StatusCode)
	require.Equal(t, "echo", resp.Header.Get("Upgrade"))
	require.Equal(t, "Upgrade", resp.Header.Get("Connection"))
	require.Equal(t, "Upgrade|echo", head.Load())
	rc.send("ping")
	buf := make([]byte, len("early ping"))
	_, err = io.ReadFull(rc.br, buf)
	require.NoError(t, err)
	require.Equal(t, "early ping", string(buf))
	require.NoError(t, rc.c.(*net.TCPConn).CloseWrite())
	rc.requireClosed()
	eventually(t, func() bool {
		return h.cluster.UpstreamRqXX[0].Value() == 1 && h.listener.DownstreamRqXX[0].Value() == 1
	}, "101 counted on both sides")
}

func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	for _, tc := range []struct {
		name    string
		request string
		status  int
	}{
		{name: "garbage", request: "HELLO\r\n\r\n", status: 400},
		{name: "no target", request: "GET HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{name: "two spaces", request: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{name: "lower-case version", request: "GET / http/1.1\r\nHost: x\r\n\r\n", status: 400},
		{name: "HTTP/2.0", request: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", status: 505},
		{name: "HTTP/1.2", request: "GET / HTTP/1.2\r\nHost: x\r\n\r\n", status: 505},
		{name: "control character in target", request: "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", status: 400},
		{name: "missing Host", request: "GET / HTTP/1.1\r\n\r\n", status: 400},
		{name: "two Hosts", request: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: 400},
		{name: "field without colon", request: "GET / HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n", status: 400},
		{name: "space before colon", request: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", status: 400},
		{name: "obs-fold", request: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", status: 400},
		{name: "NUL in value", request: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", status: 400},
		{name: "bare CR in value", request: "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", status: 400},
		{name: "bad Content-Length", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", status: 400},
		{name: "signed Content-Length", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", status: 400},
		{name: "huge Content-Length", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", status: 400},
		{name: "unsupported coding", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501},
		{name: "coding after chunked", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", status: 400},
		{name: "gzip then chunked", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 501},
		{name: "header too large", request: "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", status: 431},
		{name: "CONNECT", request: "CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n", status: 501},
		{name: "bad chunk size", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", status: 400},
		{name: "chunk without CRLF", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n", status: 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, h.addr)
			rc.send(tc.request)
			resp, _ := rc.read("GET")
			require.Equal(t, tc.status, resp.StatusCode)
			require.True(t, resp.Close)
			rc.requireClosed()
		})
	}
	for _, r := range be.got() {
		// Only the chunked cases reach the upstream (their heads are fine);
		// the upstream never sees a body completed from a broken one.
		require.Contains(t, r, "Transfer-Encoding: chunked")
	}
}

func TestSmuggling(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	const smuggled = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tc := range []struct {
		name    string
		request string
		status  int // of the first response; the smuggled request must never reach the upstream
	}{
		{name: "CL.TE", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, status: 400},
		{name: "TE.CL", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + smuggled, status: 400},
		{name: "TE.TE obfuscated", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n" + smuggled, status: 400},
		{name: "TE with space before colon", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n" + smuggled, status: 400},
		{name: "TE xchunked", request: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n" + smuggled, status: 501},
		{name: "differing Content-Length", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 36\r\n\r\n" + smuggled, status: 400},
		{name: "Content-Length list", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 36\r\n\r\n" + smuggled, status: 400},
		{name: "TE in HTTP/1.0", request: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, status: 400},
		{name: "Connection names Content-Length", request: "POST / HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: 32\r\n\r\n" + smuggled, status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := dialRaw(t, h.addr)
			rc.send(tc.request)
			resp, _ := rc.read("POST")
			require.Equal(t, tc.status, resp.StatusCode)
		})
	}
	require.Len(t, smuggled, 32)
	for _, r := range be.got() {
		require.False(t, strings.HasPrefix(r, "GET /admin"), "smuggled request reached the upstream")
	}
}

func TestPipelined(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(n int, head string, c net.Conn) bool {
		path := strings.Fields(head)[1]
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(path), path)
		return err == nil
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"/one", "/two", "/three"} {
		_, body := rc.read("GET")
		require.Equal(t, want, body)
	}
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	// A loopback address of the test's own: nothing listens there.
	closed := net.JoinHostPort(loopback.Host(), "9")

	for _, tc := range []struct {
		name     string
		upstream string
	}{
		{name: "connect refused", upstream: closed},
		{name: "no upstream", upstream: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.upstream, nil)
			rc := dialRaw(t, h.extAddr)
			for range 2 { // the connection stays usable
				rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
				resp, body := rc.read("POST")
				require.Equal(t, 503, resp.StatusCode)
				require.Equal(t, "upstream connect error or disconnect/reset before headers", body)
				require.False(t, resp.Close)
			}
			// upstream_cx_connect_fail is the Dial's to count (per attempt).
			require.EqualValues(t, 0, h.cluster.UpstreamCxConnectFail.Value())
			require.EqualValues(t, 2, h.cluster.UpstreamRqPendingFailureEject.Value())
			require.EqualValues(t, 2, h.cluster.UpstreamRqXX[4].Value())
			require.EqualValues(t, 2, h.cluster.ExternalUpstreamRqXX[4].Value())
			require.EqualValues(t, 2, h.listener.DownstreamRqXX[4].Value())
			eventually(t, func() bool { return h.cluster.UpstreamRqActive.Value() == 0 }, "no request active")
			require.EqualValues(t, 0, h.cluster.UpstreamCxTotal.Value())
		})
	}
}

func TestSlowUpstream(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	h := newHarness(t, hostOf(srv), func(c *http1.Config) { c.ResponseHeaderTimeout = 50 * time.Millisecond })
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := rc.read("GET")
	require.Equal(t, 504, resp.StatusCode)
	require.Equal(t, "upstream request timeout", body)
	require.False(t, resp.Close)
	require.EqualValues(t, 1, h.cluster.UpstreamRqTimeout.Value())
	require.EqualValues(t, 1, h.cluster.UpstreamRqXX[4].Value())
	require.EqualValues(t, 1, h.listener.DownstreamRqXX[4].Value())
	require.EqualValues(t, 1, h.cluster.UpstreamCxDestroyLocalWithActiveRq.Value())
	eventually(t, func() bool { return h.cluster.UpstreamCxActive.Value() == 0 }, "upstream connection closed")
}

func TestUpstreamResetMidBody(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
		return false
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(rc.br, nil)
	require.NoError(t, err)
	require.Equal(t, 200, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Equal(t, "only ten b", string(b))
	eventually(t, func() bool { return h.cluster.UpstreamRqRxReset.Value() == 1 }, "rx reset counted")
	require.EqualValues(t, 1, h.cluster.UpstreamRqXX[1].Value())
	require.EqualValues(t, 1, h.cluster.UpstreamCxDestroyRemoteWithActiveRq.Value())
}

func TestUpstreamResetBeforeHeaders(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 20")
		return false
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := rc.read("GET")
	require.Equal(t, 503, resp.StatusCode)
	require.Equal(t, "upstream connect error or disconnect/reset before headers", body)
	require.EqualValues(t, 1, h.cluster.UpstreamRqRxReset.Value(), "connfail %d dials %d", h.cluster.UpstreamCxConnectFail.Value(), h.dials.Load())
	require.EqualValues(t, 1, h.cluster.UpstreamRqXX[4].Value())
}

func TestStalePooledConnRetried(t *testing.T) {
	t.Parallel()
	// The upstream closes every connection right after its response,
	// without saying so: the pooled connection is stale.
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false
	})
	for _, tc := range []struct {
		name    string
		request string
		status  int
	}{
		{name: "GET", request: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", status: 200},
		{name: "POST without body", request: "POST / HTTP/1.1\r\nHost: x\r\n\r\n", status: 200},
		{name: "PUT with buffered body", request: "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", status: 200},
		{name: "POST with body is not retried", request: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", status: 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, be.addr(), nil)
			rc := dialRaw(t, h.addr)
			rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			_, body := rc.read("GET")
			require.Equal(t, "ok", body)
			// Whether or not the upstream's close has reached the proxy yet,
			// the pooled connection fails before any response byte.
			rc.send(tc.request)
			resp, _ := rc.read("GET")
			require.Equal(t, tc.status, resp.StatusCode)
		})
	}
}

func TestDrain(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	arrived := make(chan struct{})
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	h := newHarness(t, hostOf(srv), nil)

	idle := dialRaw(t, h.addr)
	idle.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body := idle.read("GET")
	require.Equal(t, "done", body)

	busy := dialRaw(t, h.addr)
	busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived

	drained := make(chan error, 1)
	go func() { drained <- h.p.Drain(context.Background()) }()
	idle.requireClosed()
	stillWaiting(t, drained, 100*time.Millisecond, "Drain, with a request in flight,")
	close(release)
	resp, body := busy.read("GET")
	require.Equal(t, "done", body)
	require.True(t, resp.Close)
	busy.requireClosed()
	require.NoError(t, <-drained)

	late := dialRaw(t, h.addr)
	late.requireClosed()
}

func TestDrainTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv, _ := backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	h := newHarness(t, hostOf(srv), nil)
	busy := dialRaw(t, h.addr)
	busy.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, func() bool { return h.cluster.UpstreamRqActive.Value() == 1 }, "request in flight")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, h.p.Drain(ctx), context.DeadlineExceeded)
}

// namedBackend answers every request with its name and can hold requests.
func namedBackend(t *testing.T, name string, hold <-chan struct{}) *rawBackend {
	return newRawBackend(t, func(_ int, head string, c net.Conn) bool {
		if strings.HasPrefix(head, "GET /hold ") {
			<-hold
		}
		_, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
		return err == nil
	})
}

func TestUpdateSwitchesEndpoints(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	a := namedBackend(t, "a", hold)
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(hold) }) })
	b := namedBackend(t, "b", nil)
	h := newHarness(t, a.addr(), nil)

	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body := rc.read("GET")
	require.Equal(t, "a", body)

	// A request in flight on a when the endpoints change.
	inflight := dialRaw(t, h.addr)
	inflight.send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
	eventually(t, func() bool { return len(a.got()) == 2 }, "request held by a")

	h.p.Update(http1.Config{Dial: h.dialer(b.addr()), Cluster: h.cluster, Listener: h.listener})
	h.p.RetainEndpoints(func(ep string) bool { return ep == b.addr() })

	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body = rc.read("GET")
	require.Equal(t, "b", body, "same downstream connection, new endpoint")

	release.Do(func() { close(hold) })
	_, body = inflight.read("GET")
	require.Equal(t, "a", body, "the request in flight finished on a")
	inflight.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body = inflight.read("GET")
	require.Equal(t, "b", body)
	// a's connection was closed after its request instead of going back to the pool.
	eventually(t, func() bool { return h.cluster.UpstreamCxActive.Value() == 1 }, "only b's connection left")
}

func TestRetainEndpoints(t *testing.T) {
	t.Parallel()
	srv, _, closedConns := backendCounting(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	h := newHarness(t, hostOf(srv), nil)
	c := client(t)
	status, _ := get(t, c, "http://"+h.addr+"/")
	require.Equal(t, 200, status)
	require.EqualValues(t, 1, h.cluster.UpstreamCxActive.Value())

	h.p.RetainEndpoints(func(string) bool { return true })
	require.EqualValues(t, 1, h.cluster.UpstreamCxActive.Value())

	h.p.RetainEndpoints(func(string) bool { return false })
	require.EqualValues(t, 0, h.cluster.UpstreamCxActive.Value())
	eventually(t, func() bool { return closedConns.Load() == 1 }, "upstream saw the close")

	status, _ = get(t, c, "http://"+h.addr+"/")
	require.Equal(t, 200, status)
	require.EqualValues(t, 2, h.cluster.UpstreamCxTotal.Value())
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), func(c *http1.Config) { c.IdleTimeout = 30 * time.Millisecond })
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, body := rc.read("GET")
	require.Equal(t, "ok", body)
	rc.requireClosed() // the idle downstream connection
	eventually(t, func() bool { return h.cluster.UpstreamCxActive.Value() == 0 }, "idle upstream connection closed")
	eventually(t, func() bool { return h.listener.DownstreamCxActive.Value() == 0 }, "downstream closed")
}

func TestStats(t *testing.T) {
	t.Parallel()
	const resp200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	const resp404 = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
	const resp500 = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
	var sent atomic.Int64
	be := newRawBackend(t, func(_ int, head string, c net.Conn) bool {
		resp := resp200
		switch {
		case strings.HasPrefix(head, "GET /404 "):
			resp = resp404
		case strings.HasPrefix(head, "GET /500 "):
			resp = resp500
		}
		sent.Add(int64(len(resp)))
		_, err := io.WriteString(c, resp)
		return err == nil
	})
	h := newHarness(t, be.addr(), nil)

	ext := dialRaw(t, h.extAddr)
	for _, path := range []string{"/", "/", "/404"} {
		ext.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")
		ext.read("GET")
	}
	in := dialRaw(t, h.addr)
	for _, path := range []string{"/500", "/"} {
		in.send("GET " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
		in.read("GET")
	}
	require.EqualValues(t, 2, h.listener.DownstreamCxActive.Value())
	require.EqualValues(t, 2, h.listener.DownstreamCxTotal.Value())

	c := h.cluster
	require.EqualValues(t, 5, c.UpstreamRqTotal.Value())
	require.EqualValues(t, 5, c.UpstreamRqCompleted.Value())
	require.EqualValues(t, 5, c.UpstreamRqTime.Count())
	eventually(t, func() bool { return c.UpstreamRqActive.Value() == 0 }, "no request active")
	require.Equal(t, []uint64{0, 3, 0, 1, 1}, classes(c.UpstreamRqXX))
	require.Equal(t, []uint64{0, 2, 0, 1, 0}, classes(c.ExternalUpstreamRqXX))
	require.Equal(t, []uint64{0, 1, 0, 0, 1}, classes(c.InternalUpstreamRqXX))
	require.Equal(t, []uint64{0, 3, 0, 1, 1}, classes(h.listener.DownstreamRqXX))
	require.EqualValues(t, 5, h.listener.DownstreamRqTotal.Value())
	require.EqualValues(t, 5, h.listener.DownstreamRqTime.Count())
	require.EqualValues(t, 1, c.UpstreamCxTotal.Value())
	require.EqualValues(t, 1, c.UpstreamCxActive.Value())
	require.EqualValues(t, 1, c.UpstreamCxConnectMs.Count())
	require.EqualValues(t, sent.Load(), c.UpstreamCxRxBytesTotal.Value())
	var tx int
	for _, r := range be.got() {
		tx += len(r)
	}
	require.EqualValues(t, tx, c.UpstreamCxTxBytesTotal.Value())

	_ = ext.c.Close()
	_ = in.c.Close()
	eventually(t, func() bool { return h.listener.DownstreamCxActive.Value() == 0 }, "downstream closed")
	h.p.Close()
	require.EqualValues(t, 0, c.UpstreamCxActive.Value())
	require.EqualValues(t, 1, c.UpstreamCxLengthMs.Count())
}

func classes(cs [5]*statsCounter) []uint64 {
	out := make([]uint64, len(cs))
	for i, c := range cs {
		out[i] = c.Value()
	}
	return out
}

func TestDownstreamGoneMidRequest(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
	eventually(t, func() bool { return h.cluster.UpstreamRqActive.Value() == 1 }, "request in flight")
	_ = rc.c.Close()
	eventually(t, func() bool { return h.cluster.UpstreamRqTxReset.Value() == 1 }, "tx reset")
	require.EqualValues(t, 1, h.cluster.UpstreamCxDestroyLocalWithActiveRq.Value())
	eventually(t, func() bool { return h.cluster.UpstreamCxActive.Value() == 0 }, "upstream closed")
}

func TestResponseWithoutLength(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
		return false
	})
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	for range 2 {
		rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, body := rc.read("GET")
		require.Equal(t, "until the end", body)
		require.Equal(t, []string{"chunked"}, resp.TransferEncoding, "re-chunked for the HTTP/1.1 client")
	}
	require.Equal(t, 2, be.connCount())
}

func TestCloseEndsEverything(t *testing.T) {
	t.Parallel()
	be := newRawBackend(t, reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := newHarness(t, be.addr(), nil)
	rc := dialRaw(t, h.addr)
	rc.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	rc.read("GET")
	h.p.Close()
	rc.requireClosed()
	require.EqualValues(t, 0, h.cluster.UpstreamCxActive.Value())
}

// A client that stops reading a long response does not hold the session
// and its upstream connection beyond the idle timeout.
func TestClientThatStopsReadingIsGivenUp(t *testing.T) {
	t.Parallel()
	chunk := strings.Repeat("x", 32<<10)
	be := newRawBackend(t, func(_ int, _ string, c net.Conn) bool {
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"); err != nil {
			return false
		}
		for i := 0; i < (1<<30)/len(chunk); i++ {
			if _, err := io.WriteString(c, chunk); err != nil {
				return false // the proxy gave the connection up
			}
		}
		return false
	})
	h := newHarness(t, be.addr(), func(c *http1.Config) { c.IdleTimeout = 200 * time.Millisecond })
	rc := dialRaw(t, h.addr)
	rc.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	// Never read: the socket buffers fill up and the proxy's writes block.
	eventually(t, func() bool { return h.cluster.UpstreamCxTotal.Value() == 1 }, "the request reached the upstream")
	eventually(t, func() bool { return h.listener.DownstreamCxActive.Value() == 0 }, "the stalled client's connection closed")
	eventually(t, func() bool { return h.cluster.UpstreamCxActive.Value() == 0 }, "its upstream connection closed")
	require.EqualValues(t, 1, h.cluster.UpstreamCxTotal.Value())
}

// An upstream that stops reading a long request body does not hold the
// session either: both connections end.
func TestUpstreamThatStopsReadingIsGivenUp(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	stalled := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			stalled <- c // accepted, never read
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		select {
		case c := <-stalled:
			_ = c.Close()
		default:
		}
	})
	h := newHarness(t, ln.Addr().String(), func(c *http1.Config) {
		c.IdleTimeout = 200 * time.Millisecond
		// After a failed write the proxy still waits this long for an
		// early answer (e.g. a 413) before it gives the upstream up.
		c.ResponseHeaderTimeout = 200 * time.Millisecond
	})
	rc := dialRaw(t, h.addr)
	go func() {
		// The body's writes fail once the proxy gives up; the error is the point.
		_, _ = io.WriteString(rc.c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
		chunk := strings.Repeat("y", 32<<10)
		for i := 0; i < (1<<30)/len(chunk); i++ {
			if _, err := io.WriteString(rc.c, chunk); err != nil {
				return
			}
		}
	}()
	eventually(t, func() bool {
		return h.cluster.UpstreamCxActive.Value() == 0 && h.cluster.UpstreamCxTotal.Value() == 1
	}, "the stalled upstream connection closed")
	eventually(t, func() bool { return h.listener.DownstreamCxActive.Value() == 0 }, "the client's connection closed")
}
