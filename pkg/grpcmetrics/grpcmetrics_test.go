package grpcmetrics

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	require.NoError(t, err)
	opts := m.ServerOptions()
	require.Len(t, opts, 2)
	m.observe("unary", "/kuma.mesh.v1.DataplaneConfigService/Deregister", nil)
	m.observe("bidi_stream", "/kuma.mesh.v1.DataplaneConfigService/StreamProxyConfig", status.Error(codes.Unauthenticated, "no"))
	m.observe("unary", "garbage", errors.New("x"))
	require.Equal(t, 1.0, testutil.ToFloat64(m.handled.WithLabelValues("unary", "kuma.mesh.v1.DataplaneConfigService", "Deregister", "OK")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.handled.WithLabelValues("bidi_stream", "kuma.mesh.v1.DataplaneConfigService", "StreamProxyConfig", "Unauthenticated")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.handled.WithLabelValues("unary", "unknown", "unknown", "Unknown")))
	_, err = New(reg)
	require.Error(t, err, "registered twice")
	var _ grpc.ServerOption = opts[0]
}
