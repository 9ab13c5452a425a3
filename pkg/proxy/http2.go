package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/kumametrics/mesh/pkg/stats"
)

// h2Proxy carries HTTP/2 without TLS (h2c), which gRPC uses: downstream
// connections are served by an HTTP/2 server, and each request goes to the
// next endpoint of the cluster over a pooled, multiplexed upstream
// connection (one per endpoint), with trailers passed through.
type h2Proxy struct {
	c      *cluster
	hcm    *stats.HTTPConnManagerStats
	server *http2.Server
	// transports by security: [0] plain text, [1] mTLS; a request takes the
	// one of the current mode, so a switch retires the other's connections.
	transports [2]*http2.Transport
	// mode is the index of the transport last used.
	mode atomic.Int32

	mu       sync.Mutex
	draining bool
	inflight sync.WaitGroup
}

func newHTTP2(p *Proxy, rt route) connHandler {
	h := &h2Proxy{c: rt.cluster, hcm: stats.NewHTTPConnManagerStats(p.stats, rt.hcm), server: &http2.Server{IdleTimeout: 5 * time.Minute}}
	for i := range h.transports {
		useTLS := i == 1
		h.transports[i] = &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				e := h.c.lookup(addr)
				if e == nil {
					return nil, fmt.Errorf("endpoint %s is gone", addr)
				}
				return h.c.connect(ctx, e, useTLS)
			},
			ReadIdleTimeout: 30 * time.Second,
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
func (h *h2Proxy) transport() *http2.Transport {
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

func (h *h2Proxy) ServeConn(conn net.Conn, external bool) {
	h.hcm.ConnectionOpened()
	defer h.hcm.ConnectionClosed()
	ctx := context.WithValue(context.Background(), h2ConnKey{}, external)
	h.server.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, Handler: h})
}

// hopHeaders are not forwarded (RFC 9113 forbids most of them anyway).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade"}

func (h *h2Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	buf := copyBuffers.Get().(*[]byte)
	for {
		n, rerr := resp.Body.Read(*buf)
		if n > 0 {
			if _, werr := w.Write((*buf)[:n]); werr != nil {
				cs.UpstreamRqTxReset.Inc()
				break
			}
			if flusher != nil {
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

func (h *h2Proxy) Drain(ctx context.Context) {
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
	done := make(chan struct{})
	go func() { h.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func (h *h2Proxy) Close() {
	h.closeIdle()
	h.hcm.Release()
}
