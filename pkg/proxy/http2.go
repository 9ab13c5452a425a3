package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/pkg/netfeed"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/proxy/http1"
	"github.com/kumametrics/mesh/pkg/stats"
)

// h2Proxy carries HTTP/2 without TLS (h2c), which gRPC uses: downstream
// connections are served by an HTTP/2 server, and each request goes to the
// next endpoint of the cluster over a pooled, multiplexed upstream
// connection (one per endpoint), with trailers passed through.
type h2Proxy struct {
	c      *cluster
	hcm    *stats.HTTPConnManagerStats
	panics *netserve.Panics
	// server serves the downstream connections that ServeConn hands to it
	// through conns (net/http has no per-connection entry point).
	server *http.Server
	conns  *netfeed.Listener
	served chan struct{} // closed when server.Serve returned
	// transports by security: [0] plain text, [1] mTLS; a request takes the
	// one of the current mode, so a switch retires the other's connections.
	transports [2]*http.Transport
	// mode is the index of the transport last used.
	mode atomic.Int32

	mu       sync.Mutex
	draining bool
	inflight sync.WaitGroup
}

// h2cOnly speaks HTTP/2 with prior knowledge over unencrypted connections
// (the mesh's TLS, when on, is below it, done by the proxy itself).
func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

func newHTTP2(p *Proxy, rt route) connHandler {
	h := &h2Proxy{c: rt.cluster, hcm: stats.NewHTTPConnManagerStats(p.stats, rt.hcm), panics: rt.panics, conns: netfeed.New(feedAddr{}), served: make(chan struct{})}
	h.server = &http.Server{
		Handler:     h,
		Protocols:   h2cOnly(),
		IdleTimeout: 5 * time.Minute,
		// As the HTTP/1.1 engine's (net/http's default is 1 MiB). No read
		// timeout: gRPC streams last as long as their callers want.
		MaxHeaderBytes: http1.DefaultMaxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			fc, _ := c.(*fedConn)
			return context.WithValue(ctx, h2ConnKey{}, fc != nil && fc.external)
		},
		ErrorLog: log.New(io.Discard, "", 0), // broken client connections are counted, not logged
	}
	go func() {
		defer close(h.served)
		_ = h.server.Serve(h.conns)
	}()
	for i := range h.transports {
		useTLS := i == 1
		h.transports[i] = &http.Transport{
			Protocols: h2cOnly(),
			// Dials run on the transport's goroutines: a panic there fails
			// the request instead of the process.
			DialContext: func(ctx context.Context, network, addr string) (_ net.Conn, err error) {
				defer h.panics.RecoverAsError(&err)
				e := h.c.lookup(addr)
				if e == nil {
					return nil, fmt.Errorf("endpoint %s is gone", addr)
				}
				return h.c.connect(ctx, e, useTLS)
			},
			// A proxy passes bodies as they are: no gzip asked for or undone.
			DisableCompression: true,
			HTTP2:              &http.HTTP2Config{SendPingTimeout: 30 * time.Second},
		}
	}
	rt.cluster.watchEndpoints(func(keep func(string) bool) {
		// Pooled connections to removed endpoints close once idle.
		h.closeIdle()
	})
	return h
}

func (h *h2Proxy) closeIdle() {
	for _, t := range h.transports {
		t.CloseIdleConnections()
	}
}

// transport is the one of the current security mode; when the mode
// changes, the other's idle connections are closed (once, not per request).
func (h *h2Proxy) transport() *http.Transport {
	mode := int32(0)
	if h.c.useTLS() {
		mode = 1
	}
	if prev := h.mode.Swap(mode); prev != mode {
		h.transports[prev].CloseIdleConnections()
	}
	return h.transports[mode]
}

type h2ConnKey struct{}

// flushEveryChunk restores the former copy, which flushed after every
// chunk even when it was the body's last; the benchmarks set it to measure
// both side by side (atomic: connections of the arm before may still be
// serving).
var flushEveryChunk atomic.Bool

// ServeConn serves one downstream connection until it ends.
func (h *h2Proxy) ServeConn(conn net.Conn, external bool) {
	h.hcm.ConnectionOpened()
	defer h.hcm.ConnectionClosed()
	fc := &fedConn{Conn: conn, external: external, closed: make(chan struct{})}
	if !unbufferedFedReads.Load() {
		fc.r = bufio.NewReaderSize(conn, fedReadBuffer)
	}
	if !h.conns.Feed(fc) {
		_ = conn.Close()
		return
	}
	<-fc.closed
}

// hopHeaders are not forwarded (RFC 9113 forbids most of them anyway).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade"}

func (h *h2Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.panics.RecoverHTTP() // resets only this request's stream
	began := time.Now()
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		w.Header().Set("Connection", "close")
		h.fail(w, http.StatusServiceUnavailable, "proxy draining", began)
		return
	}
	h.inflight.Add(1)
	h.mu.Unlock()
	defer h.inflight.Done()
	external, _ := r.Context().Value(h2ConnKey{}).(bool)
	cs := h.c.stats
	cs.UpstreamRqActive.Inc()
	defer cs.UpstreamRqActive.Dec()

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	if out.URL.Host == "" {
		out.URL.Host = r.Host
	}
	for _, k := range hopHeaders {
		out.Header.Del(k)
	}
	var (
		resp *http.Response
		err  error
	)
	// Try endpoints in turn while the connection itself fails (the request
	// was not sent).
	for attempt := 0; attempt < max(1, len(*h.c.endpoints.Load())); attempt++ {
		e := h.c.pick()
		if e == nil {
			err = errNoEndpoint
			break
		}
		out.URL.Host = e.addr
		resp, err = h.transport().RoundTrip(out)
		var ne *net.OpError
		if err == nil || !errors.As(err, &ne) || ne.Op != "dial" {
			break
		}
	}
	if err != nil {
		if r.Context().Err() != nil {
			cs.UpstreamRqTxReset.Inc()
			return
		}
		cs.UpstreamRqRxReset.Inc()
		h.fail(w, http.StatusServiceUnavailable, "upstream connect error or disconnect/reset before headers", began)
		cs.RequestDone(http.StatusServiceUnavailable, time.Since(began), external)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, k := range hopHeaders {
		w.Header().Del(k)
	}
	for k := range resp.Trailer {
		w.Header().Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	upstreamTime := time.Since(began)
	flusher, _ := w.(http.Flusher)
	// left is what the declared Content-Length still owes (-1: no end known).
	left := resp.ContentLength
	buf := copyBuffers.Get().(*[]byte)
	for {
		n, rerr := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				cs.UpstreamRqTxReset.Inc()
				break
			}
			if left > 0 {
				left = max(0, left-int64(n))
			}
			// A chunk is flushed while more of the body may follow, so a
			// stream streams; the last one (Content-Length reached, or the
			// end read with it) stays buffered and leaves with END_STREAM
			// when the handler returns: one DATA frame fewer per response.
			if flusher != nil && rerr == nil && (left != 0 || flushEveryChunk.Load()) {
				flusher.Flush()
			}
		}
		if rerr != nil {
			switch {
			case errors.Is(rerr, io.EOF):
			case r.Context().Err() != nil:
				cs.UpstreamRqTxReset.Inc() // the downstream went away
			default:
				cs.UpstreamRqRxReset.Inc()
			}
			break
		}
	}
	copyBuffers.Put(buf)
	for k, vs := range resp.Trailer {
		w.Header()[http.TrailerPrefix+k] = vs
	}
	cs.RequestDone(resp.StatusCode, upstreamTime, external)
	h.hcm.RequestDone(resp.StatusCode, time.Since(began))
}

func (h *h2Proxy) fail(w http.ResponseWriter, code int, msg string, began time.Time) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
	h.hcm.RequestDone(code, time.Since(began))
}

// Drain refuses new requests, tells every client with HTTP/2 GOAWAY that
// no new streams will be taken (so it closes its connection once its
// streams are done, and opens the next one elsewhere), and waits for the
// in-flight requests, until ctx ends.
func (h *h2Proxy) Drain(ctx context.Context) {
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
	go func() { _ = h.server.Shutdown(ctx) }() // GOAWAY; returns when the connections closed or ctx ended
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (h *h2Proxy) Close() {
	_ = h.server.Close() // closes the feed and every connection it serves
	<-h.served
	h.closeIdle()
	h.hcm.Release()
}

// feedAddr is the address of the h2c server's listener, which has none.
type feedAddr struct{}

func (feedAddr) Network() string { return "feed" }
func (feedAddr) String() string  { return "feed" }

// fedReadBuffer is the read buffer of a downstream HTTP/2 connection.
// net/http's HTTP/2 server reads each frame straight from its connection,
// its 9-byte header and then its payload, two system calls per frame; with
// the buffer, one read takes in every frame the peer has sent so far (a
// gRPC call's HEADERS and DATA together). Larger payloads bypass it.
const fedReadBuffer = 4 << 10

// unbufferedFedReads is set only in the benchmarks' arms that measure the
// unbuffered reads of before.
var unbufferedFedReads atomic.Bool

// fedConn is a downstream connection being served; closed is closed when
// the server is done with it. It is never a *tls.Conn, so the server speaks
// h2c on it even when the mesh's TLS was terminated below.
type fedConn struct {
	net.Conn
	r        *bufio.Reader // reads of the server; nil: straight from Conn
	external bool
	once     sync.Once
	closed   chan struct{}
}

func (c *fedConn) Read(p []byte) (int, error) {
	if c.r == nil {
		return c.Conn.Read(p)
	}
	return c.r.Read(p)
}

func (c *fedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}
