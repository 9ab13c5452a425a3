package controlplane

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
)

// startCP runs a control plane (testConfig, loopback callers admin) with
// cfg changed by configure; it stops with the test.
func startCP(t *testing.T, configure func(*cpconfig.Config)) map[string]string {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.APIServer.Authn.LocalhostIsAdmin = true
	if configure != nil {
		configure(&cfg)
	}
	require.NoError(t, cfg.Validate())
	addrs, _ := run(t, cfg)
	return addrs
}

func dialer(addr string) netservetest.Dial {
	return func() (net.Conn, error) { return net.Dial("tcp", addr) }
}

// Every server of the control plane applies serverLimits.
func TestEveryServerAppliesTheLimits(t *testing.T) {
	httpLimits := netserve.HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 2048}
	grpcLimits := netserve.GRPCLimits{MaxConcurrentStreams: 11, KeepaliveTime: 300 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond, KeepaliveMinTime: 100 * time.Millisecond}
	addrs := startCP(t, func(c *cpconfig.Config) {
		c.ServerLimits.HTTP = cpconfig.HTTPLimits{
			ReadHeaderTimeout: cpconfig.Duration(httpLimits.ReadHeaderTimeout), ReadTimeout: cpconfig.Duration(httpLimits.ReadTimeout),
			IdleTimeout: cpconfig.Duration(httpLimits.IdleTimeout), MaxHeaderBytes: httpLimits.MaxHeaderBytes,
		}
		c.ServerLimits.GRPC = cpconfig.GRPCLimits{
			MaxConcurrentStreams: grpcLimits.MaxConcurrentStreams, KeepaliveTime: cpconfig.Duration(grpcLimits.KeepaliveTime),
			KeepaliveTimeout: cpconfig.Duration(grpcLimits.KeepaliveTimeout), KeepaliveMinTime: cpconfig.Duration(grpcLimits.KeepaliveMinTime),
		}
	})
	t.Run("api", func(t *testing.T) {
		netservetest.CheckHTTPLimits(t, dialer(addrs["api"]), http.MethodPut, "/meshes/default", httpLimits)
	})
	t.Run("api https", func(t *testing.T) {
		netservetest.CheckHTTPLimits(t, func() (net.Conn, error) {
			return tls.Dial("tcp", addrs["api-https"], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // only the limits are checked
		}, http.MethodPut, "/meshes/default", httpLimits)
	})
	t.Run("diagnostics", func(t *testing.T) {
		netservetest.CheckHTTPLimits(t, dialer(addrs["diagnostics"]), http.MethodGet, "/healthy", httpLimits)
	})
	t.Run("mads http", func(t *testing.T) {
		netservetest.CheckHTTPLimits(t, dialer(addrs["mads"]), http.MethodPost, mads.FetchPath+"?fetch-timeout=0s", httpLimits)
	})
	t.Run("mads grpc", func(t *testing.T) { netservetest.CheckGRPCLimits(t, dialer(addrs["mads"]), grpcLimits) })
	t.Run("dp server", func(t *testing.T) {
		netservetest.CheckGRPCLimits(t, func() (net.Conn, error) {
			return tls.Dial("tcp", addrs["dp-server"], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // only the limits are checked
		}, grpcLimits)
	})
}

// The defaults refuse a head of more than 64 KiB (net/http's own limit is 1 MiB).
func TestDefaultHeadLimit(t *testing.T) {
	addrs := startCP(t, nil)
	for _, name := range []string{"api", "diagnostics"} {
		t.Run(name, func(t *testing.T) {
			netservetest.CheckHTTPHeadLimit(t, dialer(addrs[name]), http.MethodGet, "/", 64<<10)
		})
	}
}
