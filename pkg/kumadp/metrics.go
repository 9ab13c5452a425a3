package kumadp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/proxy"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// metricsServer serves the metrics endpoint on the address and port of the
// effective metrics config, moving when they change (the new socket is bound
// before the old one closes) and closing when metrics are turned off.
type metricsServer struct {
	log      *slog.Logger
	endpoint *metricsendpoint.Endpoint
	st       *stats.Store
	sec      *proxy.Security
	provided *tls.Certificate
	rbac     *stats.RBACStats

	// listen binds the endpoint (net.Listen; tests wrap it).
	listen func(network, address string) (net.Listener, error)
	// listener counts the endpoint's accept errors and panics, wherever it
	// moves.
	listener *stats.ListenerStats
	panics   *netserve.Panics

	mu   sync.Mutex
	addr string
	srv  *http.Server
	ln   *proxy.GuardedListener
	// failed is why the current server stopped accepting, if it did.
	failed error
}

// metricsListener names the metrics endpoint in statistics (rbac).
const metricsListener = "kuma:metrics:prometheus"

func newMetricsServer(st *stats.Store, sec *proxy.Security, provided *tls.Certificate, log *slog.Logger) (*metricsServer, error) {
	e, err := metricsendpoint.New(st, metricsendpoint.Options{Log: log})
	if err != nil {
		return nil, err
	}
	ls := stats.NewListenerStats(st, metricsListener)
	return &metricsServer{
		log: log, endpoint: e, st: st, sec: sec, provided: provided, listener: ls, listen: net.Listen,
		panics: &netserve.Panics{Name: metricsListener, Log: log, Count: ls.ConnectionPanics},
	}, nil
}

// ServeHTTP serves the endpoint; a panic fails only its scrape, counted.
func (m *metricsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer m.panics.RecoverHTTP()
	m.endpoint.ServeHTTP(w, r)
}

// notAccepting is why the endpoint stopped accepting scrapes, nil while it
// accepts (or is off).
func (m *metricsServer) notAccepting() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed != nil {
		return fmt.Errorf("listener %s on %s: %w", metricsListener, m.addr, m.failed)
	}
	return nil
}

// policy is how the endpoint is secured: mTLS with the mesh's permissions
// (activeMTLSBackend under the mesh's mTLS), the operator's certificate
// (providedTLS), or plain text. The dataplane's own addresses may always
// scrape in plain text. The permissions' statistics are bound at commit.
func (m *metricsServer) policy(cfg *meshv1.Metrics, mtls *meshv1.MTLS) (*proxy.EndpointPolicy, error) {
	var own []net.IP
	for _, a := range cfg.GetAddresses() {
		if ip := net.ParseIP(a); ip != nil {
			own = append(own, ip)
		}
	}
	switch cfg.GetTlsMode() {
	case resource.TLSModeProvidedTLS:
		if m.provided == nil {
			return nil, errors.New("tls.mode providedTLS needs the proxy's --metrics-cert-path and --metrics-key-path")
		}
		return &proxy.EndpointPolicy{Provided: m.provided, Own: own}, nil
	case resource.TLSModeActiveMTLSBackend:
		// Also while the mesh has no mTLS (plain text for everyone then):
		// the connections admitted so end when mTLS is switched on.
		return &proxy.EndpointPolicy{Security: m.sec, Allowed: cfg.GetAllowedSources(), Own: own}, nil
	default:
		return nil, nil
	}
}

// metricsPlan is a metrics config prepared to be served.
type metricsPlan struct {
	// off: no endpoint.
	off      bool
	endpoint *metricsendpoint.Prepared
	policy   *proxy.EndpointPolicy
	addr     string
	path     string
	// ln is bound for a new address (nil: the running socket stays).
	ln net.Listener
}

// prepare checks cfg (nil: no endpoint), compiles it and binds its address
// when it is a new one, without changing what is served. It is the last
// part of a config the agent prepares, so nothing it bound needs undoing;
// the agent serializes prepare and commit.
func (m *metricsServer) prepare(cfg *meshv1.Metrics, mtls *meshv1.MTLS, appAddress string) (*metricsPlan, error) {
	if cfg == nil {
		return &metricsPlan{off: true}, nil
	}
	ec := metricsendpoint.Config{
		Path: cfg.GetPath(), FilterRegex: cfg.GetFilterRegex(), UsedOnly: cfg.GetUsedOnly(), DefaultAppAddress: appAddress,
	}
	for _, a := range cfg.GetAggregate() {
		ec.Aggregate = append(ec.Aggregate, resource.AggregateEndpoint{Name: a.GetName(), Address: a.GetAddress(), Port: a.GetPort(), Path: a.GetPath()})
	}
	pol, err := m.policy(cfg, mtls)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint: %w", err)
	}
	prepared, err := metricsendpoint.Prepare(ec) // its errors name it
	if err != nil {
		return nil, err
	}
	plan := &metricsPlan{endpoint: prepared, policy: pol, addr: net.JoinHostPort(cfg.GetAddress(), portString(cfg.GetPort())), path: cfg.GetPath()}
	m.mu.Lock()
	same := plan.addr == m.addr
	m.mu.Unlock()
	if !same {
		if plan.ln, err = m.listen("tcp", plan.addr); err != nil {
			return nil, fmt.Errorf("metrics endpoint: listen on %s: %w", plan.addr, err)
		}
	}
	return plan, nil
}

// commit serves a prepared config: the new config at once, on the new
// socket when the address changed (the old one closes, its scrapes in
// flight finish).
func (m *metricsServer) commit(p *metricsPlan) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.off {
		m.stopLocked()
		return
	}
	if p.policy != nil && p.policy.Security != nil {
		if m.rbac == nil {
			m.rbac = stats.NewRBACStats(m.st, metricsListener)
		}
		p.policy.RBAC = m.rbac
	}
	if err := m.endpoint.Commit(p.endpoint); err != nil {
		// Only after close, which runs once the config stream ended.
		m.log.Warn("metrics endpoint: config not applied", "err", err)
	}
	if p.ln == nil {
		m.ln.SetPolicy(p.policy)
		return
	}
	m.stopLocked()
	ln := proxy.GuardListener(p.ln, p.policy, proxy.GuardOptions{Name: metricsListener, Log: m.log, Stats: m.listener})
	// No write timeout: a scrape may take up to the scraper's timeout.
	srv := netserve.HTTPServer(m, netserve.DefaultHTTPLimits, m.log)
	addr := p.addr
	go func() {
		err := srv.Serve(ln)
		if err == nil || errors.Is(err, http.ErrServerClosed) {
			return
		}
		m.log.Error("the metrics endpoint stopped accepting connections: the proxy is not ready", "address", addr, "err", err)
		m.mu.Lock()
		if m.srv == srv {
			m.failed = err
		}
		m.mu.Unlock()
	}()
	m.addr, m.srv, m.ln = p.addr, srv, ln
	m.log.Info("metrics endpoint listening", "address", p.addr, "path", p.path)
}

// boundAddr is the address the endpoint listens on, or nil.
func (m *metricsServer) boundAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

func (m *metricsServer) stopLocked() {
	if m.srv == nil {
		return
	}
	srv := m.srv
	m.srv, m.addr, m.ln, m.failed = nil, "", nil, nil
	// In-flight scrapes finish in the background.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
}

func (m *metricsServer) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked()
	m.endpoint.Close()
}
