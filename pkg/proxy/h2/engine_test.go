package h2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/stats"
)

const waitTimeout = 10 * time.Second

// rig is an engine serving a loopback listener, with its statistics.
type rig struct {
	p    *Proxy
	addr string
	st   *stats.Store
	// dials counts upstream connections; closed those closed.
	dials, closed atomic.Int32
}

// newRig starts an engine in front of backend; mod adjusts its Config.
func newRig(t testing.TB, backend string, mod func(*Config)) *rig {
	t.Helper()
	r := &rig{st: stats.NewStore()}
	cfg := Config{
		Pick: func() string { return backend },
		Dial: func(ctx context.Context, first string) (net.Conn, string, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", backend)
			if err != nil {
				return nil, "", fmt.Errorf("dial %s: %w", backend, err)
			}
			r.dials.Add(1)
			return &closeCounted{Conn: c, n: &r.closed}, backend, nil
		},
		Cluster:  stats.NewClusterStats(r.st, "echo"),
		Listener: stats.NewHTTPConnManagerStats(r.st, "echo"),
	}
	if mod != nil {
		mod(&cfg)
	}
	r.p = New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); r.p.ServeConn(c, false) }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		r.p.Close()
		wg.Wait()
	})
	return r
}

type closeCounted struct {
	net.Conn
	once sync.Once
	n    *atomic.Int32
}

func (c *closeCounted) Close() error {
	c.once.Do(func() { c.n.Add(1) })
	return c.Conn.Close()
}

// UnwrapTCP lets the engine read and write the socket below, as it does
// below the proxy's own wrappers.
func (c *closeCounted) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return c.Conn, nil, nil
}

func (r *rig) counter(t *testing.T, dotted string) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, r.st.Write(&b, stats.FormatEnvoy, stats.RenderOptions{}))
	for _, line := range strings.Split(b.String(), "\n") {
		if name, v, ok := strings.Cut(line, ": "); ok && name == dotted {
			return v
		}
	}
	return ""
}

// h2cServer serves h over HTTP/2 with prior knowledge.
func h2cServer(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// h2cClient is a net/http client speaking h2c.
func h2cClient(t testing.TB) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
}

// rawConn is a client or server that reads and writes frames itself.
type rawConn struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func newRaw(t *testing.T, c net.Conn) *rawConn {
	require.NoError(t, c.SetDeadline(time.Now().Add(waitTimeout)))
	r := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hbuf)
	t.Cleanup(func() { _ = c.Close() })
	return r
}

// dialRaw connects a raw client: preface and SETTINGS sent.
func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *rawConn {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	r := newRaw(t, c)
	_, err = io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, r.fr.WriteSettings(settings...))
	return r
}

func (r *rawConn) headers(id uint32, end bool, fields ...string) {
	r.hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		require.NoError(r.t, r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	require.NoError(r.t, r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true}))
}

func (r *rawConn) get(id uint32, path string) {
	r.headers(id, true, ":method", "GET", ":scheme", "http", ":authority", "echo", ":path", path)
}

// next reads frames until one satisfying want, answering SETTINGS and PING.
func (r *rawConn) next(want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		require.NoError(r.t, err)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				require.NoError(r.t, r.fr.WriteSettingsAck())
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				require.NoError(r.t, r.fr.WritePing(true, f.Data))
			}
		}
		if want(f) {
			return f
		}
	}
}

func onStream(id uint32, t http2.FrameType) func(http2.Frame) bool {
	return func(f http2.Frame) bool { return f.Header().StreamID == id && f.Header().Type == t }
}

func TestRequestsAndStatistics(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, len(body)))
		if r.URL.Path == "/missing" {
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = w.Write(body)
	}))
	r := newRig(t, backend, nil)
	c := h2cClient(t)
	for i := range 5 {
		body := strings.Repeat("x", i*40000)
		resp, err := c.Post("http://"+r.addr+"/echo", "text/plain", strings.NewReader(body))
		require.NoError(t, err)
		got, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, fmt.Sprintf("POST /echo %d", len(body)), resp.Header.Get("X-Got"))
		require.Equal(t, body, string(got))
	}
	resp, err := c.Get("http://" + r.addr + "/missing")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 404, resp.StatusCode)
	require.Eventually(t, func() bool {
		return r.counter(t, "cluster.echo.upstream_rq_2xx") == "5" && r.counter(t, "cluster.echo.upstream_rq_4xx") == "1" &&
			r.counter(t, "http.echo.downstream_rq_2xx") == "5" && r.counter(t, "cluster.echo.upstream_rq_active") == "0"
	}, waitTimeout, time.Millisecond)
	require.EqualValues(t, 1, r.dials.Load(), "one multiplexed upstream connection")
}

// A panic while serving a client connection ends that connection only;
// the next one is served.
func TestPanicEndsOnlyThatConnection(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	var armed atomic.Bool
	log, logs := netservetest.NewLogger()
	var panics netservetest.Counter
	r := newRig(t, backend, func(c *Config) {
		pick := c.Pick
		c.Pick = func() string {
			if armed.Load() {
				panic("pick broke")
			}
			return pick()
		}
		c.Panics = &netserve.Panics{Name: "outbound:echo", Log: log, Count: &panics}
	})
	armed.Store(true)
	raw := dialRaw(t, r.addr)
	raw.get(1, "/")
	for {
		_, err := raw.fr.ReadFrame()
		if err != nil {
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the connection closed: %v", err)
			break
		}
	}
	require.EqualValues(t, 1, panics.Load())
	require.Contains(t, logs.String(), "pick broke")
	armed.Store(false)
	resp, err := h2cClient(t).Get("http://" + r.addr + "/")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Eventually(t, func() bool { return r.counter(t, "http.echo.downstream_cx_active") == "1" }, waitTimeout, time.Millisecond)
}

// Connections without streams close after the idle timeout, on both sides.
func TestIdleConnectionsClose(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	r := newRig(t, backend, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	raw := dialRaw(t, r.addr)
	raw.get(1, "/")
	raw.next(func(f http2.Frame) bool {
		return f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
	ga := raw.next(func(f http2.Frame) bool { return f.Header().Type == http2.FrameGoAway }).(*http2.GoAwayFrame)
	require.Equal(t, http2.ErrCodeNo, ga.ErrCode)
	require.EqualValues(t, 1, ga.LastStreamID)
	_, err := raw.fr.ReadFrame()
	require.ErrorIs(t, err, io.EOF, "closed after the GOAWAY")
	require.Eventually(t, func() bool { return r.closed.Load() == 1 }, waitTimeout, time.Millisecond, "the idle upstream connection closed")
	require.Eventually(t, func() bool { return r.counter(t, "http.echo.downstream_cx_active") == "0" }, waitTimeout, time.Millisecond)
}

// rawUpstream accepts one connection and hands it to serve as a raw
// HTTP/2 server (preface read, SETTINGS sent).
func rawUpstream(t *testing.T, serve func(*rawConn)) string { return rawServer(t, false, serve) }

// rawServer accepts connections (many, or just one) and serves each as
// rawUpstream does, on a goroutine of its own.
func rawServer(t *testing.T, many bool, serve func(*rawConn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := &rawConn{t: t, c: c, fr: http2.NewFramer(c, c)}
				r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				r.enc = hpack.NewEncoder(&r.hbuf)
				_ = c.SetDeadline(time.Now().Add(waitTimeout))
				if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil || r.fr.WriteSettings() != nil {
					return
				}
				serve(r)
			}()
			if !many {
				return
			}
		}
	}()
	return ln.Addr().String()
}

// Streams an upstream's GOAWAY says it did not take are refused to the
// client (safe for it to retry); the ones it took are answered.
func TestUpstreamGoAwayRefusesTheStreamsAfterIt(t *testing.T) {
	served := make(chan error, 1)
	backend := rawUpstream(t, func(up *rawConn) {
		served <- func() error {
			var ids []uint32
			for len(ids) < 2 {
				f, err := up.fr.ReadFrame()
				if err != nil {
					return err
				}
				if h, ok := f.(*http2.MetaHeadersFrame); ok {
					ids = append(ids, h.StreamID)
				}
			}
			if err := up.fr.WriteGoAway(ids[0], http2.ErrCodeNo, nil); err != nil {
				return err
			}
			up.hbuf.Reset()
			_ = up.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			if err := up.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: ids[0], BlockFragment: up.hbuf.Bytes(), EndHeaders: true}); err != nil {
				return err
			}
			return up.fr.WriteData(ids[0], true, []byte("first"))
		}()
	})
	r := newRig(t, backend, nil)
	raw := dialRaw(t, r.addr)
	raw.get(1, "/a")
	raw.get(3, "/b")
	rst := raw.next(onStream(3, http2.FrameRSTStream)).(*http2.RSTStreamFrame)
	require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
	h := raw.next(onStream(1, http2.FrameHeaders)).(*http2.MetaHeadersFrame)
	require.Equal(t, "200", h.PseudoValue("status"))
	d := raw.next(onStream(1, http2.FrameData)).(*http2.DataFrame)
	require.Equal(t, "first", string(d.Data()))
	require.True(t, d.StreamEnded())
	require.NoError(t, <-served)
	require.Eventually(t, func() bool {
		return r.counter(t, "cluster.echo.upstream_rq_rx_reset") == "1" && r.counter(t, "cluster.echo.upstream_rq_2xx") == "1"
	}, waitTimeout, time.Millisecond)
}

// A request sent while its upstream connection is still being dialed
// waits for it, body and trailers included, in order; what waits is kept
// whole while the client's next header blocks are read.
func TestStreamsWaitForTheDial(t *testing.T) {
	type got struct {
		path    string
		body    string
		trailer string
	}
	gotc := make(chan got, 2)
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotc <- got{r.URL.Path, string(b), r.Trailer.Get("X-Sum")}
		_, _ = io.WriteString(w, "ok")
	}))
	release := make(chan struct{})
	r := newRig(t, backend, func(c *Config) {
		dial := c.Dial
		c.Dial = func(ctx context.Context, first string) (net.Conn, string, error) {
			<-release
			return dial(ctx, first)
		}
	})
	raw := dialRaw(t, r.addr)
	raw.headers(1, false, ":method", "POST", ":scheme", "http", ":authority", "echo", ":path", "/post", "trailer", "x-sum")
	require.NoError(t, raw.fr.WriteData(1, false, []byte("hello ")))
	require.NoError(t, raw.fr.WriteData(1, false, []byte("world")))
	raw.headers(1, true, "x-sum", "11")
	raw.get(3, "/get")
	// Both blocks read before the dial ends.
	require.Eventually(t, func() bool { return r.counter(t, "cluster.echo.upstream_rq_active") == "2" }, waitTimeout, time.Millisecond)
	close(release)
	status := map[uint32]string{}
	for len(status) < 2 { // in either order
		h := raw.next(func(f http2.Frame) bool { return f.Header().Type == http2.FrameHeaders }).(*http2.MetaHeadersFrame)
		status[h.StreamID] = h.PseudoValue("status")
	}
	require.Equal(t, map[uint32]string{1: "200", 3: "200"}, status)
	byPath := map[string]got{}
	for range 2 {
		g := <-gotc
		byPath[g.path] = g
	}
	require.Equal(t, got{"/post", "hello world", "11"}, byPath["/post"])
	require.Equal(t, got{"/get", "", ""}, byPath["/get"])
}

// Response trailers that wait behind DATA the client has no window for
// yet are kept whole while the upstream's next header blocks are read.
func TestTrailersWaitingForTheWindow(t *testing.T) {
	first := make(chan struct{})
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/second" {
			<-first // its head comes after the first one's trailers
			w.Header().Set("X-Second", "2")
			return
		}
		defer close(first)
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Sum", "4")
	}))
	r := newRig(t, backend, nil)
	raw := dialRaw(t, r.addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	raw.get(1, "/first")
	raw.next(onStream(1, http2.FrameHeaders))
	raw.get(3, "/second")
	h := raw.next(onStream(3, http2.FrameHeaders)).(*http2.MetaHeadersFrame)
	require.Equal(t, "200", h.PseudoValue("status"))
	require.NoError(t, raw.fr.WriteWindowUpdate(1, 100))
	d := raw.next(onStream(1, http2.FrameData)).(*http2.DataFrame)
	require.Equal(t, "body", string(d.Data()))
	tr := raw.next(onStream(1, http2.FrameHeaders)).(*http2.MetaHeadersFrame)
	require.True(t, tr.StreamEnded())
	require.Equal(t, []hpack.HeaderField{{Name: "x-sum", Value: "4"}}, tr.Fields)
}

// An upstream connection that may no longer be reused (the mesh's TLS
// mode changed) takes no new streams and closes once idle.
func TestUnreusableUpstreamRetires(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	var reusable atomic.Bool
	reusable.Store(true)
	r := newRig(t, backend, func(c *Config) { c.Reusable = func(net.Conn) bool { return reusable.Load() } })
	c := h2cClient(t)
	get := func() {
		resp, err := c.Get("http://" + r.addr + "/")
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
	}
	get()
	get()
	require.EqualValues(t, 1, r.dials.Load())
	reusable.Store(false)
	get() // the last on the old connection, which then retires
	require.Eventually(t, func() bool { return r.closed.Load() == 1 }, waitTimeout, time.Millisecond)
	reusable.Store(true)
	get()
	require.EqualValues(t, 2, r.dials.Load())
}

// A connection whose stream ids run out takes no new streams: the next
// request opens another connection, and the old one closes once idle.
func TestStreamIDsRunningOutMoveToANewConnection(t *testing.T) {
	backend := answeringUpstream(t) // net/http's server refuses a jump in stream ids
	r := newRig(t, backend, nil)
	c := h2cClient(t)
	get := func() {
		t.Helper()
		resp, err := c.Get("http://" + r.addr + "/")
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
	}
	get()
	r.p.mu.Lock()
	for _, list := range r.p.ups {
		for _, u := range list {
			u.mu.Lock()
			u.nextID = lastStreamIDs - 2 // the last id it may use
			u.mu.Unlock()
		}
	}
	r.p.mu.Unlock()
	get() // on the old connection, with its last id
	require.EqualValues(t, 1, r.dials.Load())
	get()
	require.EqualValues(t, 2, r.dials.Load(), "a new connection")
	require.Eventually(t, func() bool { return r.closed.Load() == 1 }, waitTimeout, time.Millisecond, "the old one closed")
}

// answeringUpstream is a raw HTTP/2 server answering every request 200
// with an empty body, on any number of connections.
func answeringUpstream(t *testing.T) string {
	return rawServer(t, true, func(up *rawConn) {
		for {
			f, err := up.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = up.fr.WriteSettingsAck()
				}
			case *http2.MetaHeadersFrame:
				up.hbuf.Reset()
				_ = up.enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				_ = up.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: up.hbuf.Bytes(), EndStream: true, EndHeaders: true})
			}
		}
	})
}

// BenchmarkReadsSideBySide compares reading on the socket (package sock)
// with reading through net.Conn: two engines in front of one h2c backend,
// one client connection each, every iteration one GET of a 1 KiB answer
// through each (alternating which goes first) so that the machine's load
// falls on both alike. Reported per GET: the median latency and the CPU of
// the whole process (clients, engines, backend: the same for both but the
// engine's reads).
//
//	go test -run '^$' -bench ReadsSideBySide -benchtime 20000x ./pkg/proxy/h2/
func BenchmarkReadsSideBySide(b *testing.B) {
	engineSideBySide(b, [2]string{"socket", "conn"}, func(p *Proxy) { p.throughConn = true })
}

// BenchmarkWritesSideBySide compares, the same way, output written by the
// goroutine that made it when the socket takes it at once with output
// always handed to the connection's writer goroutine.
//
//	go test -run '^$' -bench WritesSideBySide -benchtime 20000x ./pkg/proxy/h2/
func BenchmarkWritesSideBySide(b *testing.B) {
	engineSideBySide(b, [2]string{"direct", "writer"}, func(p *Proxy) { p.writerOnly = true })
}

// engineSideBySide measures two engines, the second changed by second.
func engineSideBySide(b *testing.B, names [2]string, second func(*Proxy)) {
	body := strings.Repeat("x", 1024)
	backend := h2cServer(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1024")
		_, _ = io.WriteString(w, body)
	}))
	var urls [2]string
	var clients [2]*http.Client
	for i := range 2 {
		r := newRig(b, backend, func(c *Config) {
			c.Dial = func(ctx context.Context, _ string) (net.Conn, string, error) {
				var d net.Dialer
				conn, err := d.DialContext(ctx, "tcp", backend)
				return conn, backend, err
			}
		})
		if i == 1 {
			second(r.p)
		}
		urls[i], clients[i] = "http://"+r.addr+"/", h2cClient(b)
	}
	get := func(i int) {
		resp, err := clients[i].Get(urls[i])
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err != nil || n != 1024 {
			b.Fatalf("%s: %d bytes, %v", names[i], n, err)
		}
	}
	get(0)
	get(1)
	var lat [2][]time.Duration
	var cpu [2]time.Duration
	b.ResetTimer()
	for i := range b.N {
		for k := range 2 {
			w := (i + k) % 2
			c0, t0 := processCPU(), time.Now()
			get(w)
			lat[w] = append(lat[w], time.Since(t0))
			cpu[w] += processCPU() - c0
		}
	}
	b.StopTimer()
	for w := range 2 {
		slices.Sort(lat[w])
		b.ReportMetric(float64(lat[w][len(lat[w])/2])/float64(time.Microsecond), names[w]+"-p50-µs")
		b.ReportMetric(float64(cpu[w])/float64(time.Microsecond)/float64(b.N), names[w]+"-cpu-µs")
	}
}

// processCPU is the CPU time the process used so far (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestFramesArrivingInPieces: frames whose bytes arrive in several
// reads — a HEADERS frame cut inside its header and inside its payload, a
// header block split over CONTINUATION frames sent byte by byte, a DATA
// frame larger than the read buffer — are read whole on the socket path:
// every request is answered.
func TestFramesArrivingInPieces(t *testing.T) {
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n, _ := io.Copy(io.Discard, req.Body)
		_, _ = fmt.Fprintf(w, "%s %d", req.URL.Path, n)
	}))
	r := newRig(t, backend, nil)
	c := dialRaw(t, r.addr)
	var out bytes.Buffer
	frames := http2.NewFramer(&out, nil)
	// pieces writes what the frames wrote to out in pieces of at most n
	// bytes, pausing between them so that the proxy reads each alone.
	pieces := func(n int) {
		b := out.Bytes()
		for len(b) > 0 {
			k := min(n, len(b))
			_, err := c.c.Write(b[:k])
			require.NoError(t, err)
			b = b[k:]
			time.Sleep(2 * time.Millisecond) // not a wait for a condition: it makes the reads small
		}
		out.Reset()
	}
	block := func(path string) []byte {
		c.hbuf.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "echo"}, {Name: ":path", Value: path}} {
			require.NoError(t, c.enc.WriteField(f))
		}
		return append([]byte(nil), c.hbuf.Bytes()...)
	}
	answer := func(id uint32, want string) {
		t.Helper()
		f := c.next(onStream(id, http2.FrameData)).(*http2.DataFrame)
		require.Equal(t, want, string(f.Data()))
	}

	// HEADERS cut at 4 bytes: inside the frame header, then inside the block.
	require.NoError(t, frames.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("/cut"), EndStream: true, EndHeaders: true}))
	pieces(4)
	answer(1, "/cut 0")

	// A header block over three frames, sent a byte at a time.
	b := block("/continued")
	third := len(b) / 3
	require.NoError(t, frames.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:third], EndStream: true}))
	require.NoError(t, frames.WriteContinuation(3, false, b[third:2*third]))
	require.NoError(t, frames.WriteContinuation(3, true, b[2*third:]))
	pieces(1)
	answer(3, "/continued 0")

	// A DATA frame of 10000 bytes (more than the 4 KiB read buffer), in
	// pieces of 3000.
	require.NoError(t, frames.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block("/big"), EndHeaders: true}))
	require.NoError(t, frames.WriteData(5, true, bytes.Repeat([]byte("x"), 10000)))
	pieces(3000)
	answer(5, "/big 10000")
}

// TestOutputWaitsInOrderWhenTheSocketIsFull: four 2 MiB answers at once
// to a client with a small receive buffer, so that the proxy's writes to it
// find its socket full: what a reader's own write leaves behind goes
// through the writer goroutine before anything newer, and every body
// arrives whole, in order, the client reading one after the other.
func TestOutputWaitsInOrderWhenTheSocketIsFull(t *testing.T) {
	const size = 2 << 20
	body := func(name string) []byte {
		b := make([]byte, size)
		for i := range b {
			b[i] = name[i%len(name)] + byte(i/len(name))
		}
		return b
	}
	backend := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = w.Write(body(req.URL.Path))
	}))
	r := newRig(t, backend, nil)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(32 << 10) // a small window: the proxy's writes find it full
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	names := []string{"/a", "/bb", "/ccc", "/dddd"}
	resps := make([]*http.Response, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			resp, err := client.Get("http://" + r.addr + name)
			if err == nil {
				resps[i] = resp
			}
		})
	}
	wg.Wait()
	for i, name := range names {
		require.NotNil(t, resps[i], name)
		got, err := io.ReadAll(resps[i].Body)
		_ = resps[i].Body.Close()
		require.NoError(t, err, name)
		require.True(t, bytes.Equal(body(name), got), "%s: %d bytes, not the body sent", name, len(got))
	}
}
