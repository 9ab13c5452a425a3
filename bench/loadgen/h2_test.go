package main

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/kumametrics/mesh/bench/internal/benchgrpc"
)

// h2cServer serves handler over HTTP/2 with prior knowledge on 127.0.0.1:0;
// conns counts the connections it accepted.
func h2cServer(t *testing.T, handler http.HandlerFunc) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	conns = new(atomic.Int64)
	srv := &http.Server{Protocols: &p, Handler: handler, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), conns
}

func body(n int) []byte { return bytes.Repeat([]byte("x"), n) }

// grpcServer serves the benchmarks' unary call answering size bytes.
func grpcServer(t *testing.T, size int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := grpc.NewServer()
	benchgrpc.Register(s, size)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func TestH2CProbe(t *testing.T) {
	t.Parallel()
	ok, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/" || r.Host != "bench" || r.ProtoMajor != 2 {
			http.Error(w, "unexpected request "+r.Method+" "+r.Host+r.URL.Path+" "+r.Proto, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(body(1024))
	})
	chunked, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		for range 4 {
			_, _ = w.Write(body(256))
			w.(http.Flusher).Flush()
		}
	})
	short, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body(10)) })
	unavailable, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	})
	reset, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	http1 := cannedServer(t)
	cases := []struct {
		name, addr, wantErr string
	}{
		{name: "200 with the body", addr: ok},
		{name: "body in several DATA frames, no content-length", addr: chunked},
		{name: "short body", addr: short, wantErr: "body of 10 bytes, want 1024"},
		{name: "not 200", addr: unavailable, wantErr: "status 503, want 200"},
		{name: "stream reset", addr: reset, wantErr: "stream reset by the server"},
		{name: "an HTTP/1.1 server", addr: http1, wantErr: "reading a frame"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := probe(config{mode: "h2c", addr: tc.addr, path: "/", host: "bench", size: 1024})
			requireErr(t, err, tc.wantErr)
		})
	}
}

func TestGRPCProbe(t *testing.T) {
	t.Parallel()
	addr := grpcServer(t, 1024)
	h2c, _ := h2cServer(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body(1024)) })
	cases := []struct {
		name, addr, path string
		size             int
		wantErr          string
	}{
		{name: "grpc-status 0 and the message", addr: addr, path: "/", size: 1024},
		{name: "a message of another size", addr: addr, path: "/", size: 1000, wantErr: "gRPC response of 1032 bytes, want one 1003-byte message"},
		{name: "unknown method", addr: addr, path: "/kumametrics.bench.Bench/Nope", size: 1024, wantErr: "grpc-status 12"},
		{name: "not a gRPC server", addr: h2c, path: "/", size: 1024, wantErr: "no grpc-status in the trailers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := probe(config{mode: "grpc", addr: tc.addr, path: tc.path, host: "bench", size: tc.size})
			requireErr(t, err, tc.wantErr)
		})
	}
}

// The HTTP/2 modes multiplex: -conns streams over -conns/-streams
// connections, in both loops, and every answer is checked.
func TestH2Runs(t *testing.T) {
	t.Parallel()
	var served atomic.Int64
	addr, conns := h2cServer(t, func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(512))
		_, _ = w.Write(body(512))
	})
	base := config{mode: "h2c", addr: addr, conns: 8, streams: 4, path: "/", host: "bench", size: 512, timeout: 10 * time.Second}

	requireOpenLoop(t, base)
	require.Equal(t, int64(220), served.Load())
	require.Equal(t, int64(2), conns.Load(), "8 streams, 4 per connection")

	closed := base
	closed.conns, closed.streams = 6, 4 // 4 + 2
	closed.warmup, closed.duration = 10*time.Millisecond, 100*time.Millisecond
	r := runClosedLoop(closed)
	require.Zero(t, r.Errors, r.Error)
	require.Positive(t, r.Requests)
	require.Equal(t, int64(4), conns.Load())

	g := config{mode: "grpc", addr: grpcServer(t, 1024), conns: 8, streams: 8, path: "/", host: "bench", size: 1024,
		timeout: 10 * time.Second, warmup: 10 * time.Millisecond, duration: 100 * time.Millisecond}
	r = runClosedLoop(g)
	require.Zero(t, r.Errors, r.Error)
	require.Positive(t, r.Requests)

	// A wrong answer on any stream stops the run: the other streams'
	// requests in flight may fail too, none hangs.
	bad := base
	bad.size = 1024
	bad.rate, bad.n = 1000, 50
	r = runOpenLoop(bad)
	require.Positive(t, r.Errors)
	require.Contains(t, r.Error, "body of 512 bytes, want 1024")
}

// BenchmarkH2CRoundTrip: the generator's own cost per request, 8 streams
// on one connection to a net/http h2c server.
func BenchmarkH2CRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	page := body(1024)
	srv := &http.Server{Protocols: &p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(page) })}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	rts, err := dialH2(config{mode: "h2c", addr: ln.Addr().String(), path: "/", host: "bench", size: 1024}, time.Now().Add(time.Minute), 8)
	require.NoError(b, err)
	defer rts[0].close()
	b.ReportAllocs()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		rt := rts[next.Add(1)%8]
		for pb.Next() {
			if err := rt.roundTrip(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
