package kumadp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// metricsServer serves the metrics endpoint on the address and port of the
// effective metrics config, moving when they change (the new socket is bound
// before the old one closes) and closing when metrics are turned off.
type metricsServer struct {
	log      *slog.Logger
	endpoint *metricsendpoint.Endpoint

	mu   sync.Mutex
	addr string
	srv  *http.Server
}

func newMetricsServer(st *stats.Store, log *slog.Logger) (*metricsServer, error) {
	e, err := metricsendpoint.New(st, metricsendpoint.Options{Log: log})
	if err != nil {
		return nil, err
	}
	return &metricsServer{log: log, endpoint: e}, nil
}

// apply makes the endpoint serve cfg (nil: no endpoint).
func (m *metricsServer) apply(cfg *meshv1.Metrics, appAddress string) error {
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
	if err := m.endpoint.Update(ec); err != nil {
		return err
	}
	addr := net.JoinHostPort(cfg.GetAddress(), portString(cfg.GetPort()))
	if addr == m.addr {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint: listen on %s: %w", addr, err)
	}
	m.stopLocked()
	srv := &http.Server{Handler: m.endpoint, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	m.addr, m.srv = addr, srv
	m.log.Info("metrics endpoint listening", "address", addr, "path", cfg.GetPath())
	return nil
}

func (m *metricsServer) stopLocked() {
	if m.srv == nil {
		return
	}
	srv := m.srv
	m.srv, m.addr = nil, ""
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
