package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/pkg/stats"
)

// grpcBackend serves the gRPC health service; "sick" is NOT_SERVING.
func grpcBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("sick", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// protocolOutbound starts a proxy with an outbound of protocol to
// endpoints and returns it, its statistics and the outbound's address.
func protocolOutbound(t testing.TB, protocol string, endpoints ...string) (*Proxy, *stats.Store, string) {
	t.Helper()
	p, st := newProxy(t)
	port := freePort(t)
	cfg := outboundConfig(t, port, endpoints...)
	cfg.Outbounds[0].Protocol = protocol
	require.NoError(t, p.Apply(cfg))
	return p, st, addr(port)
}

// grpcOutbound starts a proxy with a gRPC outbound to endpoints and returns
// a health client connected to it, and the proxy's statistics.
func grpcOutbound(t testing.TB, endpoints ...string) (*Proxy, *stats.Store, healthpb.HealthClient) {
	t.Helper()
	p, st, address := protocolOutbound(t, "grpc", endpoints...)
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return p, st, healthpb.NewHealthClient(conn)
}

func TestGRPCThroughTheProxy(t *testing.T) {
	_, st, client := grpcOutbound(t, grpcBackend(t), grpcBackend(t))
	for range 10 {
		resp, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	}
	// An error status travels in the trailers.
	_, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "unknown"})
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)

	// A server stream works through the proxy too.
	ctx, cancel := context.WithCancel(t.Context())
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "sick"})
	require.NoError(t, err)
	got, err := w.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, got.GetStatus())
	cancel()

	// 10 checks, the failed check and the stream: 12 requests, all HTTP 200
	// (recorded once each response is done).
	require.Eventually(t, func() bool {
		return counter(t, st, "cluster.echo.upstream_rq_2xx") == "12" && counter(t, st, "http.echo.downstream_rq_2xx") == "12"
	}, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, st, "cluster.echo.upstream_rq_tx_reset"), "the cancelled stream")
	require.Equal(t, "2", counter(t, st, "cluster.echo.upstream_cx_total"), "one multiplexed connection per endpoint")
}

func TestGRPCUpstreamDown(t *testing.T) {
	_, st, client := grpcOutbound(t, addr(freePort(t)))
	_, err := client.Check(t.Context(), &healthpb.HealthCheckRequest{})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_5xx") == "1" }, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, st, "cluster.echo.upstream_cx_connect_fail"))
}

// BenchmarkGRPCThroughTheProxy: unary gRPC calls through an h2c outbound,
// one client connection, calls from GOMAXPROCS goroutines.
func BenchmarkGRPCThroughTheProxy(b *testing.B) {
	backend := grpcBackend(b)
	{
		_, _, client := grpcOutbound(b, backend)
		_, err := client.Check(b.Context(), &healthpb.HealthCheckRequest{})
		require.NoError(b, err)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
}

// BenchmarkH2CThroughTheProxy: GETs of a 1 KiB answer with a
// Content-Length through an http2 outbound, one client connection,
// requests from GOMAXPROCS goroutines.
func BenchmarkH2CThroughTheProxy(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1024)
	backend := h2cBackend(b, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1024")
		_, _ = w.Write(body)
	}))
	_, _, proxy := protocolOutbound(b, "http2", backend)
	url := "http://" + proxy + "/"
	{
		tr := &http.Transport{Protocols: h2cOnly()}
		defer tr.CloseIdleConnections()
		get := func() error {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil && n != 1024 {
				err = fmt.Errorf("got %d bytes, want 1024", n)
			}
			return err
		}
		require.NoError(b, get())
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := get(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
}

// Draining sends HTTP/2 GOAWAY: a gRPC client closes its idle connection
// by itself, so the drain ends as soon as the in-flight stream is done,
// long before its deadline.
func TestGRPCDrainSendsGoAway(t *testing.T) {
	p, st, client := grpcOutbound(t, grpcBackend(t))
	ctx, cancel := context.WithCancel(t.Context())
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "sick"})
	require.NoError(t, err)
	_, err = w.Recv()
	require.NoError(t, err)

	deadline, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	drained := make(chan error, 1)
	go func() { drained <- p.Drain(deadline) }()
	require.Eventually(t, func() bool { return counter(t, st, "http.echo.downstream_cx_active") == "1" }, waitTimeout, time.Millisecond)
	stillWaiting(t, drained, 100*time.Millisecond, "the drain, with a stream in flight,")
	cancel() // the stream ends; the client leaves after the GOAWAY
	select {
	case err := <-drained:
		require.NoError(t, err)
		require.NoError(t, deadline.Err(), "ended by the client, not by the deadline")
	case <-time.After(waitTimeout):
		t.Fatal("the drain did not end after the last stream")
	}
}
