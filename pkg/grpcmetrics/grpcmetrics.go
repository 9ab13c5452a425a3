// Package grpcmetrics counts the calls a gRPC server handled, as
// grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
// (the names Prometheus' gRPC ecosystem uses), through interceptors.
package grpcmetrics

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics is one counter shared by every server of a process.
type Metrics struct {
	handled *prometheus.CounterVec
}

// New registers the counter on reg.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{handled: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_handled_total",
		Help: "gRPC calls completed on the server, by code.",
	}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"})}
	if err := reg.Register(m.handled); err != nil {
		return nil, fmt.Errorf("grpc metrics: %w", err)
	}
	return m, nil
}

// ServerOptions are the interceptors to give grpc.NewServer.
func (m *Metrics) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := h(ctx, req)
			m.observe("unary", info.FullMethod, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := h(srv, ss)
			typ := "bidi_stream"
			switch {
			case info.IsClientStream && !info.IsServerStream:
				typ = "client_stream"
			case !info.IsClientStream && info.IsServerStream:
				typ = "server_stream"
			}
			m.observe(typ, info.FullMethod, err)
			return err
		}),
	}
}

func (m *Metrics) observe(typ, fullMethod string, err error) {
	service, method := "unknown", "unknown"
	if s, meth, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/"); ok {
		service, method = s, meth
	}
	m.handled.WithLabelValues(typ, service, method, status.Code(err).String()).Inc()
}
