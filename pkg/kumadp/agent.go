// Package kumadp runs a data plane proxy: it connects to the control plane's
// dataplane server, presents its Dataplane (Universal) or names the one the
// control plane stores (Kubernetes), applies the proxy config the control
// plane streams (keeping the last one while the control plane is away),
// serves the metrics endpoint and the admin API, and on shutdown deregisters
// and drains.
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
	"runtime/debug"
	"strconv"
	"strings"
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
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/proxy"
	"github.com/kumametrics/mesh/pkg/residency"
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
	// Dataplane is the proxy's resource, which it presents to the control
	// plane (Universal). Nil when the control plane stores it (Kubernetes:
	// the pod controller made it): the proxy then names it by Name and Mesh
	// and gets everything from the config stream.
	Dataplane *resource.Object
	// Name and Mesh name the Dataplane; required without Dataplane (Mesh
	// defaults to "default"), and when set with one they must be its own.
	Name, Mesh string
	// Token is the token sent with every call to the control plane (the
	// first one, when TokenFile is set): a dataplane token, or on Kubernetes
	// the Pod's ServiceAccount token.
	Token string
	// TokenFile, when set, is re-read every TokenPollInterval (default
	// DefaultTokenPollInterval): a changed token is used from the next call.
	TokenFile         string
	TokenPollInterval time.Duration
	// AdminAddress serves the admin API (127.0.0.1:9901).
	AdminAddress string
	// DrainTimeout bounds a graceful shutdown.
	DrainTimeout time.Duration
	// Backoff between reconnections: from BackoffMin doubling to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MetricsCertFile and MetricsKeyFile: the certificate the metrics
	// endpoint serves in the providedTLS mode.
	MetricsCertFile, MetricsKeyFile string
	// SettleDelay is how long after the last applied config the proxy
	// returns what applying cost (see Agent.settle); 0 means
	// DefaultSettleDelay, negative never.
	SettleDelay time.Duration
	Log         *slog.Logger
}

// Defaults.
const (
	DefaultAdminAddress = "127.0.0.1:9901"
	DefaultDrainTimeout = 30 * time.Second
	DefaultSettleDelay  = 10 * time.Second
)

// Agent is a running data plane proxy.
type Agent struct {
	cfg Config
	// key is the dataplane's mesh and name.
	key     resource.Key
	log     *slog.Logger
	target  dialTarget
	creds   credentials.TransportCredentials
	stats   *stats.Store
	server  *stats.ServerStats
	proxy   *proxy.Proxy
	sec     *proxy.Security
	certs   *certManager
	metrics *metricsServer
	admin   *adminServer
	tokens  *tokenSource

	// applyMu serializes applying configs (prepare, then commit or abort).
	applyMu sync.Mutex
	// current is the applied config and its version.
	mu      sync.Mutex
	current *meshv1.ProxyConfig
	version string

	ready atomic.Bool
	// applied gets a value (without blocking) after every applied config.
	applied chan struct{}
	// settled counts the settle passes done (tests wait for it).
	settled  atomic.Uint64
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
	key, err := cfg.dataplaneKey()
	if err != nil {
		return nil, err
	}
	target, creds, err := dialSettings(cfg)
	if err != nil {
		return nil, err
	}
	st := stats.NewStore()
	a := &Agent{cfg: cfg, key: key, log: cfg.Log, target: target, creds: creds, stats: st, applied: make(chan struct{}, 1)}
	a.server = stats.NewServerStats(st, time.Now())
	a.tokens = newTokenSource(cfg.Token, cfg.TokenFile, cfg.TokenPollInterval, key, cfg.Dataplane, st, cfg.Log.With("component", "token"))
	a.sec = proxy.NewSecurity()
	a.proxy = proxy.New(st, proxy.Options{Log: cfg.Log.With("component", "proxy"), Security: a.sec})
	if a.certs, err = newCertManager(a.sec, a.server, key.Mesh, key.Name, cfg.Log.With("component", "certs")); err != nil {
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

// dataplaneKey is the mesh and name of the proxy's Dataplane: the presented
// one's, or Name and Mesh.
func (cfg Config) dataplaneKey() (resource.Key, error) {
	if dp := cfg.Dataplane; dp != nil {
		if dp.Meta.Kind != resource.KindDataplane {
			return resource.Key{}, fmt.Errorf("the presented resource is a %s, not a Dataplane", dp.Meta.Kind)
		}
		key := dp.Meta.Key()
		if (cfg.Name != "" && cfg.Name != key.Name) || (cfg.Mesh != "" && cfg.Mesh != key.Mesh) {
			return resource.Key{}, fmt.Errorf("the Dataplane is %s, not %s/%s", key, cfg.Mesh, cfg.Name)
		}
		return key, nil
	}
	key := resource.Key{Mesh: cfg.Mesh, Name: cfg.Name}
	if key.Mesh == "" {
		key.Mesh = resource.DefaultMesh
	}
	if key.Name == "" {
		return key, errors.New("a Dataplane resource, or the name of the one the control plane stores, is required")
	}
	if err := resource.ValidateKey(resource.KindDataplane, key); err != nil {
		return key, fmt.Errorf("dataplane %s: %w", key, err)
	}
	return key, nil
}

// dialTarget is where the agent's gRPC client connects: one control plane's
// host:port, or, for several, the addresses a resolver of its own hands to
// gRPC's pick_first policy, which connects to the first that answers and,
// when that connection breaks, tries them again in order.
type dialTarget struct {
	target   string
	resolver resolver.Builder
}

// dialSettings turns the control plane addresses (comma-separated) and
// trust settings into a gRPC target and credentials.
func dialSettings(cfg Config) (dialTarget, credentials.TransportCredentials, error) {
	var addrs []resolver.Address
	for _, raw := range strings.Split(cfg.CPAddress, ",") {
		a, err := controlPlaneAddress(strings.TrimSpace(raw))
		if err != nil {
			return dialTarget{}, nil, err
		}
		addrs = append(addrs, a)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case cfg.CACertFile != "":
		pem, err := os.ReadFile(cfg.CACertFile)
		if err != nil {
			return dialTarget{}, nil, fmt.Errorf("--ca-cert-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return dialTarget{}, nil, fmt.Errorf("--ca-cert-file %s: no PEM certificate in it", cfg.CACertFile)
		}
		tlsCfg.RootCAs = pool
	case cfg.InsecureSkipVerify:
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // asked for explicitly.
	default:
		return dialTarget{}, nil, errors.New("--ca-cert-file is required to verify the control plane " +
			"(kuma-cp writes its CA to <work dir>/" + dpconfig.ServerCAFile + "); pass --insecure-skip-verify to connect without verifying it")
	}
	if len(addrs) == 1 {
		// The certificate must name the host of the target.
		tlsCfg.ServerName = addrs[0].ServerName
		return dialTarget{target: addrs[0].Addr}, credentials.NewTLS(tlsCfg), nil
	}
	// Each address's certificate must name its own host (ServerName of
	// the address; a ServerName in tlsCfg would override them all).
	r := manual.NewBuilderWithScheme("kuma-cp")
	r.InitialState(resolver.State{Addresses: addrs})
	return dialTarget{target: r.Scheme() + ":///control-planes", resolver: r}, credentials.NewTLS(tlsCfg), nil
}

// controlPlaneAddress parses one address of --cp-address.
func controlPlaneAddress(raw string) (resolver.Address, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return resolver.Address{}, fmt.Errorf("--cp-address %q: must be https://host:port (several separated by commas)", raw)
	}
	if u.Scheme != "https" && u.Scheme != "grpcs" {
		return resolver.Address{}, fmt.Errorf("--cp-address %q: the dataplane server speaks TLS only: use https://host:port", raw)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5678"
	}
	return resolver.Address{Addr: net.JoinHostPort(host, port), ServerName: host}, nil
}

// Stats is the proxy's statistics store.
func (a *Agent) Stats() *stats.Store { return a.stats }

// Run proxies until ctx is done, then deregisters and drains.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.admin.start(a.cfg.AdminAddress); err != nil {
		return err
	}
	a.server.SetLive(true)
	a.log.Info("kuma-dp started", "control_plane", a.cfg.CPAddress, "admin", a.admin.addr(),
		"presents_dataplane", a.cfg.Dataplane != nil)

	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(a.creds),
		grpc.WithPerRPCCredentials(a.tokens),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	if a.target.resolver != nil {
		opts = append(opts, grpc.WithResolvers(a.target.resolver))
	}
	conn, err := grpc.NewClient(a.target.target, opts...)
	if err != nil {
		return fmt.Errorf("control plane client: %w", err)
	}
	defer conn.Close()
	client := meshv1.NewDataplaneConfigServiceClient(conn)

	streamCtx, stopStream := context.WithCancel(context.Background())
	tokensDone := make(chan struct{})
	go func() { defer close(tokensDone); a.tokens.run(streamCtx) }()
	streamDone := make(chan struct{})
	go func() { defer close(streamDone); a.follow(streamCtx, client) }()
	go a.settle(streamCtx)
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
	if _, err := client.Deregister(dctx, &meshv1.DeregisterRequest{Mesh: a.key.Mesh, Name: a.key.Name}); err != nil {
		a.log.Warn("deregistering failed", "err", err)
	}
	cancel()
	stopStream()
	<-streamDone
	<-certsDone
	<-tokensDone
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

// follow keeps a config stream open, reconnecting with backoff, until ctx
// ends. A new dataplane token cuts the wait short.
func (a *Agent) follow(ctx context.Context, client meshv1.DataplaneConfigServiceClient) {
	delay := a.cfg.BackoffMin
	lastRefusal := ""
	for ctx.Err() == nil {
		got, err := a.stream(ctx, client)
		a.server.SetControlPlaneConnected(false)
		if ctx.Err() != nil {
			return
		}
		if got {
			delay, lastRefusal = a.cfg.BackoffMin, ""
		}
		wait := delay/2 + rand.N(delay/2+1)
		a.reportStreamEnd(err, &lastRefusal, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-a.tokens.changed:
			a.log.Info("reconnecting to the control plane with the new dataplane token")
		}
		delay = min(delay*2, a.cfg.BackoffMax)
	}
}

// reportStreamEnd logs why a config stream ended. A refusal of the control
// plane (Unauthenticated, PermissionDenied) is an error said once, with
// what to do, until it changes; a Dataplane the control plane does not
// have yet (NotFound) is a warning said once; other ends are warnings, and
// "the last config stays applied" only when one was applied.
func (a *Agent) reportStreamEnd(err error, lastRefusal *string, wait time.Duration) {
	retry := wait.Round(time.Millisecond)
	if code := status.Code(err); code == codes.Unauthenticated || code == codes.PermissionDenied {
		a.tokens.setRefused(true)
		msg := status.Convert(err).Message()
		if msg == *lastRefusal {
			a.log.Debug("the control plane still refuses this proxy", "code", code.String(), "retry_in", retry)
			return
		}
		*lastRefusal = msg
		a.log.Error("the control plane refused this proxy", "code", code.String(), "reason", msg, "fix", a.tokens.fix(), "retry_in", retry)
		return
	}
	if status.Code(err) == codes.NotFound {
		// The control plane has no Dataplane of this name yet (on
		// Kubernetes the pod controller makes it): said once, retried.
		msg := status.Convert(err).Message()
		if msg == *lastRefusal {
			a.log.Debug("the control plane still has no Dataplane for this proxy", "retry_in", retry)
			return
		}
		*lastRefusal = msg
		a.log.Warn("the control plane has no Dataplane for this proxy yet; retrying", "reason", msg, "retry_in", retry)
		return
	}
	*lastRefusal = ""
	if cfg, _ := a.Current(); cfg != nil {
		a.log.Warn("control plane stream ended; the last config stays applied", "err", err, "retry_in", retry)
		return
	}
	a.log.Warn("control plane stream ended before any config was received", "err", err, "retry_in", retry)
}

// node is how the proxy introduces itself: node.id names its dataplane
// ("<mesh>/<name>"), and the metadata carries the Dataplane it presents, if
// any.
func (a *Agent) node() (*corev3.Node, error) {
	node := &corev3.Node{Id: a.key.String()}
	if a.cfg.Dataplane == nil {
		return node, nil
	}
	js, err := a.cfg.Dataplane.MarshalJSON()
	if err != nil {
		return nil, err
	}
	if node.Metadata, err = structpb.NewStruct(map[string]any{dpconfig.MetadataDataplane: string(js)}); err != nil {
		return nil, err
	}
	return node, nil
}

// stream runs one config stream; it reports whether a response was received.
func (a *Agent) stream(ctx context.Context, client meshv1.DataplaneConfigServiceClient) (bool, error) {
	node, err := a.node()
	if err != nil {
		return false, err
	}
	s, err := client.StreamProxyConfig(ctx)
	if err != nil {
		return false, err
	}
	// No version_info: the control plane answers at once, even with the
	// config already applied (re-applying it changes nothing), which tells
	// the proxy the stream is up.
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: dpconfig.TypeURL}); err != nil {
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
			a.tokens.setRefused(false)
			a.server.SetControlPlaneConnected(true)
			a.log.Info("connected to the control plane", "address", peerAddr(s.Context()))
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

// apply applies a config response all or nothing: everything that can fail
// is prepared first (the trust bundle parsed, new listeners and the metrics
// endpoint's new address bound, the metrics config compiled) while the
// running config keeps serving; only when every part is ready do they all
// switch. On error the prepared parts are discarded (what was bound for
// them closes) and the running config stays, whole.
func (a *Agent) apply(resp *discoveryv3.DiscoveryResponse) error {
	if len(resp.GetResources()) != 1 {
		return fmt.Errorf("expected one ProxyConfig, got %d resources", len(resp.GetResources()))
	}
	cfg := &meshv1.ProxyConfig{}
	if err := resp.GetResources()[0].UnmarshalTo(cfg); err != nil {
		return fmt.Errorf("decode ProxyConfig: %w", err)
	}
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if a.draining.Load() {
		return errors.New("draining")
	}
	certs, err := a.certs.prepare(cfg.GetMtls())
	if err != nil {
		return err
	}
	change, err := a.proxy.Prepare(cfg)
	if err != nil {
		return err
	}
	defer change.Abort() // nothing once committed
	metrics, err := a.metrics.prepare(cfg.GetMetrics(), cfg.GetMtls(), defaultAppAddress(cfg))
	if err != nil {
		return err
	}
	// Trust first: inbounds may turn to mTLS with this config.
	a.certs.commit(certs)
	change.Commit()
	a.metrics.commit(metrics)
	a.mu.Lock()
	a.current, a.version = cfg, resp.GetVersionInfo()
	a.mu.Unlock()
	a.ready.Store(true)
	select {
	case a.applied <- struct{}{}:
	default:
	}
	a.log.Info("config applied", "version", resp.GetVersionInfo(), "inbounds", len(cfg.GetInbounds()), "outbounds", len(cfg.GetOutbounds()))
	return nil
}

// settle gives back, once a config has been applied and SettleDelay has
// passed without another, what starting and applying cost and the traffic
// does not need: the heap's garbage goes back to the OS, and the pages of
// the executable that only start-up and config decoding touched are
// unmapped (package residency; docs/2026-12-06-kuma-dp-memory.md).
func (a *Agent) settle(ctx context.Context) {
	delay := a.cfg.SettleDelay
	if delay == 0 {
		delay = DefaultSettleDelay
	}
	if delay < 0 {
		return
	}
	timer := time.NewTimer(delay)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-a.applied:
			timer.Reset(delay)
		case <-timer.C:
			debug.FreeOSMemory()
			n, err := residency.DropStartupPages()
			if err != nil {
				a.log.Warn("could not unmap the start-up pages", "err", err)
			} else {
				a.log.Debug("settled: unmapped the executable's start-up pages", "bytes", n)
			}
			a.settled.Add(1)
		}
	}
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

// peerAddr is the address of the control plane a stream is connected to.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}
