package mads

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/latest"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/xds"
)

// Views gives the current view of the store and a signal of its next change.
type Views = mirror.Views

// Options configure a Server.
type Options struct {
	// Views is where assignments are generated from.
	Views Views
	// TLSCertFile and TLSKeyFile, when both set, make the server speak
	// https and grpcs only.
	TLSCertFile, TLSKeyFile string
	// TLSClientCAFile (with TLS) makes every client present a certificate
	// signed by one of the CAs of this PEM bundle.
	TLSClientCAFile string
	// Tokens, when set, makes every request carry a user token that it
	// verifies (`Authorization: Bearer <token>`): HTTP requests without a
	// valid one get 401, gRPC calls Unauthenticated. Serve then refuses a
	// plain-text listener that is not loopback-only, so that tokens never
	// cross the network in clear.
	Tokens UserTokens
	// DefaultFetchTimeout holds long polls that do not say fetch-timeout.
	DefaultFetchTimeout time.Duration
	// MaxFetchTimeout caps the fetch-timeout a long poll asks for (default
	// DefaultMaxFetchTimeout); it must not be below DefaultFetchTimeout.
	MaxFetchTimeout time.Duration
	// MaxHeldLongPolls bounds the long polls held at once (default
	// DefaultMaxHeldLongPolls); one more is answered 503 with Retry-After.
	MaxHeldLongPolls int
	// HTTPLimits bound the HTTP side (zero fields: netserve's defaults; no
	// write timeout, as long polls last up to fetch-timeout).
	HTTPLimits netserve.HTTPLimits
	// GRPCLimits bound the gRPC side (zero fields: netserve's defaults).
	GRPCLimits netserve.GRPCLimits
	// AcceptErrors counts the accepts that failed temporarily (may be nil).
	AcceptErrors netserve.Counter
	// Debounce is how long a change waits for more changes before the
	// assignments are regenerated (default 50ms; at most 4× that under
	// continuous change).
	Debounce time.Duration
	// XDSMetrics are the control plane's shared xds_* metrics (may be nil).
	XDSMetrics *xds.Metrics
	// Registerer takes the server's HTTP metrics (may be nil).
	Registerer prometheus.Registerer
	// GRPCOptions are added to the gRPC server's (interceptors).
	GRPCOptions []grpc.ServerOption
	Log         *slog.Logger
}

// Defaults of Options.
const (
	DefaultFetchTimeout = 30 * time.Second
	// DefaultMaxFetchTimeout is well above Prometheus' fetch-timeout (2m by
	// default; its client gives up 15s after it).
	DefaultMaxFetchTimeout = 5 * time.Minute
	// DefaultMaxHeldLongPolls: each Prometheus holds one long poll per
	// kuma_sd_configs entry; a held poll costs ~40 KB (measured with
	// bench/cpfaults), so 1000 bound the flood's memory to ~40 MB.
	DefaultMaxHeldLongPolls = 1000
)

// Server generates and serves monitoring assignments.
type Server struct {
	opts    Options
	log     *slog.Logger
	current latest.Value[*published]
	xds     *xds.Server
	grpc    *grpc.Server
	http    *http.Server
	tls     *tls.Config
	// held counts long polls waiting for a change; rejected those refused
	// because MaxHeldLongPolls were held.
	held     atomic.Int64
	rejected atomic.Int64

	// gen is used by Reconcile only.
	gen generator

	// stopPolls ends held long polls at shutdown.
	pollCtx   context.Context
	stopPolls context.CancelFunc
}

// New builds a server; Run serves it.
func New(opts Options) (*Server, error) {
	if opts.Views == nil {
		return nil, errors.New("mads: Views is required")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultFetchTimeout <= 0 {
		opts.DefaultFetchTimeout = DefaultFetchTimeout
	}
	if opts.MaxFetchTimeout <= 0 {
		opts.MaxFetchTimeout = max(DefaultMaxFetchTimeout, opts.DefaultFetchTimeout)
	}
	if opts.DefaultFetchTimeout > opts.MaxFetchTimeout {
		return nil, fmt.Errorf("mads: the default fetch-timeout %s exceeds the maximum %s", opts.DefaultFetchTimeout, opts.MaxFetchTimeout)
	}
	if opts.MaxHeldLongPolls <= 0 {
		opts.MaxHeldLongPolls = DefaultMaxHeldLongPolls
	}
	opts.HTTPLimits.WriteTimeout = 0 // long polls
	opts.GRPCLimits = opts.GRPCLimits.WithDefaults()
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	s := &Server{opts: opts, log: opts.Log}
	s.pollCtx, s.stopPolls = context.WithCancel(context.Background())
	if (opts.TLSCertFile == "") != (opts.TLSKeyFile == "") {
		return nil, errors.New("mads: TLS needs both a certificate file and a key file")
	}
	if opts.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("mads: load TLS certificate %s and key %s: %w", opts.TLSCertFile, opts.TLSKeyFile, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	}
	if opts.TLSClientCAFile != "" {
		if s.tls == nil {
			return nil, errors.New("mads: a client CA needs TLS (a certificate and a key file)")
		}
		bundle, err := os.ReadFile(opts.TLSClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("mads: client CA: %w", err)
		}
		pool, err := pki.Pool(bundle)
		if err != nil {
			return nil, fmt.Errorf("mads: client CA %s: %w", opts.TLSClientCAFile, err)
		}
		s.tls.ClientCAs = pool
		s.tls.ClientAuth = tls.RequireAndVerifyClientCert
	}
	s.xds = xds.NewServer(TypeURL, s, opts.XDSMetrics, opts.Log)
	s.grpc = grpc.NewServer(append(append(netserve.GRPCServerOptions(opts.GRPCLimits), opts.GRPCOptions...), s.grpcAuthOptions()...)...)
	observabilityv1.RegisterMonitoringAssignmentDiscoveryServiceServer(s.grpc, &grpcService{s: s})
	h, err := s.httpHandler(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s.http = netserve.HTTPServer(h, opts.HTTPLimits, opts.Log)
	// gRPC over TLS goes through net/http's HTTP/2: the same stream limit.
	s.http.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(opts.GRPCLimits.MaxConcurrentStreams)}
	return s, nil
}

// Watch implements xds.Source: every client gets the same assignments.
func (s *Server) Watch(context.Context, *corev3.Node) (*xds.Snapshot, <-chan struct{}, error) {
	p, ch := s.current.Get()
	if p == nil {
		return nil, ch, nil
	}
	return p.snap, ch, nil
}

// Current returns the current snapshot, nil before the first generation.
func (s *Server) Current() *xds.Snapshot {
	if p := s.current.Load(); p != nil {
		return p.snap
	}
	return nil
}

// Reconcile regenerates the assignments whenever the store changes, until
// ctx is done.
func (s *Server) Reconcile(ctx context.Context) {
	mirror.Follow(ctx, s.opts.Views, nil, s.opts.Debounce, s.generate)
}

func (s *Server) generate(view *mirror.View) {
	start := time.Now()
	p, err := s.gen.generate(view.List(resource.KindMesh, ""), view.List(resource.KindDataplane, ""))
	ms := float64(time.Since(start).Microseconds()) / 1000
	s.opts.XDSMetrics.ObserveGeneration(TypeURL, ms, err)
	if err != nil {
		// Keep serving the last good snapshot.
		s.log.Error("generating monitoring assignments failed", "err", err)
		return
	}
	if cur := s.current.Load(); cur != nil && cur.snap.Version() == p.snap.Version() {
		return
	}
	s.current.Set(p)
	s.log.Info("monitoring assignments changed", "version", p.snap.Version(), "assignments", p.snap.Len(), "took_ms", ms)
}

// Serve serves HTTP and gRPC on ln until ctx is done, then stops gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.opts.Tokens != nil && s.tls == nil && !loopback.IsAddr(ln.Addr().String()) {
		_ = ln.Close()
		return fmt.Errorf("mads: tokens are required but %s is neither TLS nor loopback-only: tokens would cross the network in clear", ln.Addr())
	}
	errc := make(chan error, 3)
	if s.tls != nil {
		// One TLS listener: HTTP/1.1 and HTTP/2 through net/http, gRPC
		// requests (HTTP/2, application/grpc) handed to the gRPC server.
		s.http.TLSConfig = s.tls
		ln := netserve.Listen(ln, netserve.AcceptOptions{Name: "mads", Log: s.log, Errors: s.opts.AcceptErrors})
		go func() { errc <- s.http.ServeTLS(ln, "", "") }()
	} else {
		// Plain text: connections opening with the HTTP/2 preface go to the
		// native gRPC server, the rest to net/http.
		sp := newSplitter(ln, netserve.AcceptOptions{Name: "mads", Log: s.log, Errors: s.opts.AcceptErrors})
		go func() { errc <- sp.run() }()
		go func() { errc <- s.grpc.Serve(sp.grpc) }()
		go func() { errc <- s.http.Serve(sp.http) }()
		defer sp.close()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		// A server ended before ctx: the listener failed for good (logged
		// and returned, so the control plane stops and says why, rather
		// than keep running without discovery), or it was closed.
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, net.ErrClosed) {
			err = nil
		}
	}
	s.stopPolls()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		// Streams last as long as their clients: give them a moment, then cut.
		<-sctx.Done()
		s.grpc.Stop()
	}()
	_ = s.http.Shutdown(sctx)
	s.grpc.GracefulStop()
	if err != nil {
		return fmt.Errorf("mads: %w", err)
	}
	return nil
}

// grpcHandler routes gRPC requests that arrived through net/http (TLS).
func (s *Server) grpcHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

type grpcService struct {
	observabilityv1.UnimplementedMonitoringAssignmentDiscoveryServiceServer
	s *Server
}

func (g *grpcService) StreamMonitoringAssignments(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	return g.s.xds.StreamSotW(stream, g.s.streamCallbacks("sotw"))
}

func (g *grpcService) DeltaMonitoringAssignments(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	return g.s.xds.StreamDelta(stream, g.s.streamCallbacks("delta"))
}

// FetchMonitoringAssignments answers at once with the current assignments.
func (g *grpcService) FetchMonitoringAssignments(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	p, err := g.s.await(ctx)
	if err != nil {
		return nil, err
	}
	return &discoveryv3.DiscoveryResponse{VersionInfo: p.snap.Version(), Resources: p.snap.Bodies(), TypeUrl: TypeURL, Nonce: p.snap.Version()}, nil
}

func (s *Server) streamCallbacks(kind string) xds.Callbacks {
	return xds.Callbacks{
		OnOpen: func(node *corev3.Node) error {
			s.log.Info("discovery client connected", "stream", kind, "client", node.GetId())
			return nil
		},
	}
}

// await returns the current generation, waiting for the first one.
func (s *Server) await(ctx context.Context) (*published, error) {
	for {
		p, ch := s.current.Get()
		if p != nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}
