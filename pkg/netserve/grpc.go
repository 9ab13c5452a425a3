package netserve

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// GRPCLimits bound what one client can hold of a gRPC server.
type GRPCLimits struct {
	// MaxConcurrentStreams bounds the streams (calls) open at once on one
	// client connection; further ones wait for one to end.
	MaxConcurrentStreams uint32
	// KeepaliveTime: the server pings a connection idle this long, and
	// closes it when the ping is not answered within KeepaliveTimeout (a
	// client that vanished without closing).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// KeepaliveMinTime is the shortest ping interval allowed of a client
	// (also without an open stream); one pinging more often is sent GOAWAY
	// ENHANCE_YOUR_CALM ("too_many_pings") and disconnected.
	KeepaliveMinTime time.Duration
}

// DefaultGRPCLimits: 100 streams per connection (a proxy needs one config
// stream and a few certificate signing calls, kuma-prometheus-sd one
// stream), idle connections pinged every 30 s and closed 10 s after an
// unanswered ping, clients allowed to ping every 10 s (kuma-dp pings every
// 30 s).
var DefaultGRPCLimits = GRPCLimits{
	MaxConcurrentStreams: 100,
	KeepaliveTime:        30 * time.Second,
	KeepaliveTimeout:     10 * time.Second,
	KeepaliveMinTime:     10 * time.Second,
}

// WithDefaults takes DefaultGRPCLimits' value for every zero field.
func (limits GRPCLimits) WithDefaults() GRPCLimits {
	d := DefaultGRPCLimits
	limits.MaxConcurrentStreams = orDefault(limits.MaxConcurrentStreams, d.MaxConcurrentStreams)
	limits.KeepaliveTime = orDefault(limits.KeepaliveTime, d.KeepaliveTime)
	limits.KeepaliveTimeout = orDefault(limits.KeepaliveTimeout, d.KeepaliveTimeout)
	limits.KeepaliveMinTime = orDefault(limits.KeepaliveMinTime, d.KeepaliveMinTime)
	return limits
}

// GRPCServerOptions returns the options that apply limits (zero fields take
// DefaultGRPCLimits').
func GRPCServerOptions(limits GRPCLimits) []grpc.ServerOption {
	limits = limits.WithDefaults()
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(limits.MaxConcurrentStreams),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: limits.KeepaliveTime, Timeout: limits.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: limits.KeepaliveMinTime, PermitWithoutStream: true}),
	}
}
