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
// scrape in plain text.
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
		if mtls == nil {
			return nil, nil
		}
		if m.rbac == nil {
			m.rbac = stats.NewRBACStats(m.st, metricsListener)
		}
		return &proxy.EndpointPolicy{Security: m.sec, Allowed: cfg.GetAllowedSources(), RBAC: m.rbac, Own: own}, nil
	default:
		return nil, nil
	}
}

// apply makes the endpoint serve cfg (nil: no endpoint).
func (m *metricsServer) apply(cfg *meshv1.Metrics, mtls *meshv1.MTLS, appAddress string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cfg == nil {
		m.stopLocked()
		return nil
	}
	ec := metricsendpoint.Config{
		Path: cfg.GetPath(), FilterRegex: cfg.GetFilterRegex(), UsedOnly: cfg.GetUsedOnly(), DefaultAppAddress: appAddress,
	}
	for _, a := range cfg.GetAggregate() {
		ec.Aggregate = append(ec.Aggregate, resource.AggregateEndpoint{Name: a.GetName(), Address: a.GetAddress(), Port: a.GetPort(), Path: a.GetPath()})
	}
	pol, err := m.policy(cfg, mtls)
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	if err := m.endpoint.Update(ec); err != nil {
		return err
	}
	addr := net.JoinHostPort(cfg.GetAddress(), portString(cfg.GetPort()))
	if addr == m.addr {
		m.ln.SetPolicy(pol)
		return nil
	}
	raw, err := m.listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint: listen on %s: %w", addr, err)
	}
	m.stopLocked()
	ln := proxy.GuardListener(raw, pol, proxy.GuardOptions{Name: metricsListener, Log: m.log, Stats: m.listener})
	// No write timeout: a scrape may take up to the scraper's timeout.
	srv := netserve.HTTPServer(m, netserve.DefaultHTTPLimits, m.log)
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
	m.addr, m.srv, m.ln = addr, srv, ln
	m.log.Info("metrics endpoint listening", "address", addr, "path", cfg.GetPath())
	return nil
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
