package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/internal/loopback"
)

// gRPC between two services of the mesh, through both built proxies: the
// client's outbound and the server's inbound, with kuma.io/protocol: grpc.
// Calls, error statuses (in trailers) and server streams work, and both
// proxies count the requests.
func TestGRPCThroughTheMesh(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))

	// The greeter's application, a gRPC server, and the caller's host, where
	// its (absent) application would listen and its outbound does.
	greeterApp, callerApp := loopback.Host(), loopback.Host()
	ln, err := net.Listen("tcp", hostPort(greeterApp, appPort))
	require.NoError(t, err)
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("sick", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	server := startDataplane(t, cp, "greeter-1", fmt.Sprintf(`type: Dataplane
mesh: default
name: greeter-1
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: greeter
      kuma.io/protocol: grpc
`, loopback.Host(), inboundPort, greeterApp, appPort))
	client := startDataplane(t, cp, "caller-1", fmt.Sprintf(`type: Dataplane
mesh: default
name: caller-1
networking:
  address: %s
  inbound:
  - port: %d
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: caller
      kuma.io/protocol: grpc
  outbound:
  - address: %s
    port: %d
    tags:
      kuma.io/service: greeter
`, loopback.Host(), inboundPort, callerApp, appPort, callerApp, outboundPort))

	conn, err := grpc.NewClient(hostPort(callerApp, outboundPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	// The client's proxy learns the greeter's endpoint from the control plane.
	eventually(t, 30*time.Second, func() error {
		_, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		return err
	})
	const calls = 20
	for range calls {
		resp, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	}
	_, err = health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "unknown"})
	require.Equal(t, codes.NotFound, status.Code(err), "an error status travels in the trailers: %v", err)
	w, err := health.Watch(t.Context(), &healthpb.HealthCheckRequest{Service: "sick"})
	require.NoError(t, err)
	got, err := w.Recv()
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, got.GetStatus())

	// Every call was an HTTP/2 request with status 200 on both proxies (the
	// stream is still open, so it is not counted yet).
	atLeast := func(d *dataplane, stat string, n int) func() error {
		return func() error {
			v, err := strconv.Atoi(d.stat(t, stat))
			if err != nil || v < n {
				return fmt.Errorf("%s: %q, want at least %d", stat, d.stat(t, stat), n)
			}
			return nil
		}
	}
	eventually(t, 10*time.Second, atLeast(client, "cluster.greeter.upstream_rq_2xx", calls+1))
	eventually(t, 10*time.Second, atLeast(server, fmt.Sprintf("cluster.localhost_%d.upstream_rq_2xx", appPort), calls+1))
	require.Equal(t, "1", client.stat(t, "cluster.greeter.upstream_cx_active"), "every call on one multiplexed connection")
}
