// Package kumadp runs a data plane proxy: it connects to the control plane's
// dataplane server, presents its Dataplane, applies the proxy config the
// control plane streams (keeping the last one while the control plane is
// away), serves the metrics endpoint and the admin API, and on shutdown
// deregisters and drains.
package kumadp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/structpb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/proxy"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Config of a data plane proxy.
type Config struct {
	// CPAddress is the dataplane server, https://host:5678.
	CPAddress string
	// CACertFile verifies the control plane; InsecureSkipVerify must be set
	// explicitly to connect without it.
	CACertFile         string
	InsecureSkipVerify bool
	// Dataplane is the proxy's resource.
	Dataplane *resource.Object
	// Token is the dataplane token sent with every call to the control plane.
	Token string
	// AdminAddress serves the admin API (127.0.0.1:9901).
	AdminAddress string
	// DrainTimeout bounds a graceful shutdown.
	DrainTimeout time.Duration
	// Backoff between reconnections: from BackoffMin doubling to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MetricsCertFile and MetricsKeyFile: the certificate the metrics
	// endpoint serves in the providedTLS mode.
	MetricsCertFile, MetricsKeyFile string
	Log                             *slog.Logger
}

// Defaults.
const (
	DefaultAdminAddress = "127.0.0.1:9901"
	DefaultDrainTimeout = 30 * time.Second
)

// Agent is a running data plane proxy.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	target  string
	creds   credentials.TransportCredentials
	stats   *stats.Store
	server  *stats.ServerStats
	proxy   *proxy.Proxy
	sec     *proxy.Security
	certs   *certManager
	metrics *metricsServer
	admin   *adminServer

	// current is the applied config and its version.
	mu      sync.Mutex
	current *meshv1.ProxyConfig
	version string

	ready    atomic.Bool
	draining atomic.Bool
}

// New checks cfg and prepares an agent; nothing is dialed or bound yet.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.AdminAddress == "" {
		cfg.AdminAddress = DefaultAdminAddress
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 500 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Dataplane == nil || cfg.Dataplane.Meta.Kind != resource.KindDataplane {
		return nil, errors.New("a Dataplane resource is required")
	}
	target, creds, err := dialSettings(cfg)
	if err != nil {
		return nil, err
	}
	st := stats.NewStore()
	a := &Agent{cfg: cfg, log: cfg.Log, target: target, creds: creds, stats: st}
	a.server = stats.NewServerStats(st, time.Now())
	a.sec = proxy.NewSecurity()
	a.proxy = proxy.New(st, proxy.Options{Log: cfg.Log.With("component", "proxy"), Security: a.sec})
	dpKey := cfg.Dataplane.Meta.Key()
	if a.certs, err = newCertManager(a.sec, a.server, dpKey.Mesh, dpKey.Name, cfg.Log.With("component", "certs")); err != nil {
		return nil, err
	}
	var provided *tls.Certificate
	if cfg.MetricsCertFile != "" || cfg.MetricsKeyFile != "" {
		c, err := tls.LoadX509KeyPair(cfg.MetricsCertFile, cfg.MetricsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--metrics-cert-path / --metrics-key-path: %w", err)
		}
		provided = &c
	}
	a.metrics, err = newMetricsServer(st, a.sec, provided, cfg.Log.With("component", "metrics"))
	if err != nil {
		return nil, err
	}
	a.admin = newAdminServer(a)
	return a, nil
}

// dialSettings turns the control plane address and trust settings into a
// gRPC target and credentials.
func dialSettings(cfg Config) (string, credentials.TransportCredentials, error) {
	u, err := url.Parse(cfg.CPAddress)
	if err != nil || u.Host == "" {
		return "", nil, fmt.Errorf("--cp-address %q: must be https://host:port", cfg.CPAddress)
	}
	if u.Scheme != "https" && u.Scheme != "grpcs" {
		return "", nil, fmt.Errorf("--cp-address %q: the dataplane server speaks TLS only: use https://host:port", cfg.CPAddress)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5678"
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	switch {
	case cfg.CACertFile != "":
		pem, err := os.ReadFile(cfg.CACertFile)
		if err != nil {
			return "", nil, fmt.Errorf("--ca-cert-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, fmt.Errorf("--ca-cert-file %s: no PEM certificate in it", cfg.CACertFile)
		}
		tlsCfg.RootCAs = pool
	case cfg.InsecureSkipVerify:
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // asked for explicitly.
	default:
		return "", nil, errors.New("--ca-cert-file is required to verify the control plane " +
			"(kuma-cp writes its CA to <work dir>/" + dpserver.CAFile + "); pass --insecure-skip-verify to connect without verifying it")
	}
	return net.JoinHostPort(host, port), credentials.NewTLS(tlsCfg), nil
}

// Stats is the proxy's statistics store.
func (a *Agent) Stats() *stats.Store { return a.stats }

// Run proxies until ctx is done, then deregisters and drains.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.admin.start(a.cfg.AdminAddress); err != nil {
		return err
	}
	a.server.SetLive(true)
	a.log.Info("kuma-dp started", "control_plane", a.cfg.CPAddress, "admin", a.admin.addr())

	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(a.creds)}
	if a.cfg.Token != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearer(a.cfg.Token)))
	}
	conn, err := grpc.NewClient(a.target, append(dialOpts,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	)...)
	if err != nil {
		return fmt.Errorf("control plane client: %w", err)
	}
	defer conn.Close()
	client := meshv1.NewDataplaneConfigServiceClient(conn)

	streamCtx, stopStream := context.WithCancel(context.Background())
	streamDone := make(chan struct{})
	go func() { defer close(streamDone); a.follow(streamCtx, client) }()
	certsDone := make(chan struct{})
	go func() {
		defer close(certsDone)
		a.certs.run(streamCtx, func(ctx context.Context, req *meshv1.SignRequest) (*meshv1.SignResponse, error) {
			return client.SignWorkloadCertificate(ctx, req)
		})
	}()

	<-ctx.Done()
	a.log.Info("shutting down: deregistering and draining", "drain_timeout", a.cfg.DrainTimeout)
	a.draining.Store(true)
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if _, err := client.Deregister(dctx, &meshv1.DeregisterRequest{Mesh: a.cfg.Dataplane.Meta.Mesh, Name: a.cfg.Dataplane.Meta.Name}); err != nil {
		a.log.Warn("deregistering failed", "err", err)
	}
	cancel()
	stopStream()
	<-streamDone
	<-certsDone
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
	defer cancelDrain()
	if err := a.proxy.Drain(drainCtx); err != nil {
		a.log.Warn("drain timed out; closing the remaining connections")
	}
	a.metrics.close()
	a.admin.close()
	a.server.SetLive(false)
	a.log.Info("kuma-dp stopped")
	return nil
}

// follow keeps a config stream open, reconnecting with backoff, until ctx ends.
func (a *Agent) follow(ctx context.Context, client meshv1.DataplaneConfigServiceClient) {
	delay := a.cfg.BackoffMin
	for ctx.Err() == nil {
		got, err := a.stream(ctx, client)
		a.server.SetControlPlaneConnected(false)
		if ctx.Err() != nil {
			return
		}
		if got {
			delay = a.cfg.BackoffMin
		}
		wait := delay/2 + rand.N(delay/2+1)
		a.log.Warn("control plane stream ended; the last config stays applied", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(delay*2, a.cfg.BackoffMax)
	}
}

// stream runs one config stream; it reports whether a response was received.
func (a *Agent) stream(ctx context.Context, client meshv1.DataplaneConfigServiceClient) (bool, error) {
	js, err := a.cfg.Dataplane.MarshalJSON()
	if err != nil {
		return false, err
	}
	s, err := client.StreamProxyConfig(ctx)
	if err != nil {
		return false, err
	}
	md, err := structpb.NewStruct(map[string]any{dpserver.MetadataDataplane: string(js)})
	if err != nil {
		return false, err
	}
	// No version_info: the control plane answers at once, even with the
	// config already applied (re-applying it changes nothing), which tells
	// the proxy the stream is up.
	if err := s.Send(&discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: a.cfg.Dataplane.Meta.Key().String(), Metadata: md},
		TypeUrl: dpconfig.TypeURL,
	}); err != nil {
		return false, err
	}
	got := false
	for {
		resp, err := s.Recv()
		if err != nil {
			return got, err
		}
		if !got {
			got = true
			a.server.SetControlPlaneConnected(true)
			a.log.Info("connected to the control plane")
		}
		req := &discoveryv3.DiscoveryRequest{TypeUrl: dpconfig.TypeURL, ResponseNonce: resp.GetNonce()}
		if err := a.apply(resp); err != nil {
			a.log.Error("rejecting a config", "version", resp.GetVersionInfo(), "err", err)
			a.mu.Lock()
			req.VersionInfo = a.version
			a.mu.Unlock()
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		} else {
			req.VersionInfo = resp.GetVersionInfo()
		}
		if err := s.Send(req); err != nil {
			return got, err
		}
	}
}

// apply applies a config response.
func (a *Agent) apply(resp *discoveryv3.DiscoveryResponse) error {
	if len(resp.GetResources()) != 1 {
		return fmt.Errorf("expected one ProxyConfig, got %d resources", len(resp.GetResources()))
	}
	cfg := &meshv1.ProxyConfig{}
	if err := resp.GetResources()[0].UnmarshalTo(cfg); err != nil {
		return fmt.Errorf("decode ProxyConfig: %w", err)
	}
	if a.draining.Load() {
		return errors.New("draining")
	}
	// Trust first: inbounds may turn to mTLS with this config.
	if err := a.certs.configure(cfg.GetMtls()); err != nil {
		return err
	}
	if err := a.proxy.Apply(cfg); err != nil {
		return err
	}
	if err := a.metrics.apply(cfg.GetMetrics(), cfg.GetMtls(), defaultAppAddress(cfg)); err != nil {
		return err
	}
	a.mu.Lock()
	a.current, a.version = cfg, resp.GetVersionInfo()
	a.mu.Unlock()
	a.ready.Store(true)
	a.log.Info("config applied", "version", resp.GetVersionInfo(), "inbounds", len(cfg.GetInbounds()), "outbounds", len(cfg.GetOutbounds()))
	return nil
}

// defaultAppAddress is where the workload listens: the first inbound's
// service address.
func defaultAppAddress(cfg *meshv1.ProxyConfig) string {
	for _, in := range cfg.GetInbounds() {
		if in.GetServiceAddress() != "" {
			return in.GetServiceAddress()
		}
	}
	return resource.DefaultServiceAddress
}

// notAccepting tells which of the proxy's listeners (traffic and metrics)
// stopped accepting connections for good; nil while all accept.
func (a *Agent) notAccepting() error {
	return errors.Join(a.proxy.NotAccepting(), a.metrics.notAccepting())
}

// Current returns the applied config and its version.
func (a *Agent) Current() (*meshv1.ProxyConfig, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current, a.version
}

func portString(p uint32) string { return strconv.FormatUint(uint64(p), 10) }

// bearer sends the dataplane token with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
