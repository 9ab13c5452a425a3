// Package proxy carries a workload's traffic: inbound listeners in front of
// the local application and outbound listeners towards the endpoints of other
// services, over TCP, HTTP/1.1 and HTTP/2 (h2c, gRPC), recording
// Envoy-compatible statistics. Configuration changes apply live: listeners
// and endpoints change without dropping established connections, and Drain
// stops accepting and lets in-flight work finish.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Proxy is the set of listeners and clusters of one data plane proxy.
type Proxy struct {
	stats *stats.Store
	log   *slog.Logger
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	sec   *Security
	// listen binds a listener.
	listen func(network, address string) (net.Listener, error)

	mu        sync.Mutex
	listeners map[string]*listener
	clusters  map[string]*cluster
	// rbac statistics by inbound listener.
	rbac     map[string]*stats.RBACStats
	draining bool
}

// Options configure a Proxy.
type Options struct {
	Log *slog.Logger
	// Dial connects to upstream endpoints (a net.Dialer by default).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Security holds the mTLS material the agent keeps current (nil: a
	// Security without material, plain text everywhere).
	Security *Security
	// Listen binds the listeners (net.Listen by default).
	Listen func(network, address string) (net.Listener, error)
}

// New returns a proxy recording into st.
func New(st *stats.Store, opts Options) *Proxy {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{}).DialContext
	}
	if opts.Security == nil {
		opts.Security = NewSecurity()
	}
	if opts.Listen == nil {
		opts.Listen = net.Listen
	}
	return &Proxy{stats: st, log: opts.Log, dial: opts.Dial, sec: opts.Security, listen: opts.Listen, listeners: map[string]*listener{}, clusters: map[string]*cluster{}, rbac: map[string]*stats.RBACStats{}}
}

// route is what a listener does with a connection.
type route struct {
	protocol string
	cluster  *cluster
	// hcm is the HTTP connection manager stats prefix (HTTP listeners).
	hcm string
	// guard admits the connections of an inbound (nil for outbounds).
	guard *guard
	// panics reports the panics of the listener's connections (set by the
	// listener).
	panics *netserve.Panics
}

// Apply makes the proxy's listeners and clusters those of cfg. New
// listeners are bound first; if one cannot be bound nothing changes and the
// error says which. Listeners that go away stop accepting and their
// connections finish on their own.
func (p *Proxy) Apply(cfg *meshv1.ProxyConfig) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return errors.New("proxy is draining")
	}
	type want struct {
		name, address string
		port          uint32
		rt            route
		endpoints     []string
		clusterName   string
		// service of an outbound's endpoints (verified under mTLS).
		service string
		inbound *meshv1.Inbound
	}
	p.sec.SetConfig(cfg.GetMesh(), cfg.GetMtls())
	var wants []want
	for _, in := range cfg.GetInbounds() {
		wants = append(wants, want{
			name: in.GetName(), address: in.GetAddress(), port: in.GetPort(),
			rt:          route{protocol: in.GetProtocol(), hcm: in.GetClusterName()},
			endpoints:   []string{net.JoinHostPort(in.GetServiceAddress(), strconv.FormatUint(uint64(in.GetServicePort()), 10))},
			clusterName: in.GetClusterName(),
			inbound:     in,
		})
	}
	for _, out := range cfg.GetOutbounds() {
		eps := make([]string, 0, len(out.GetEndpoints()))
		for _, ep := range out.GetEndpoints() {
			eps = append(eps, net.JoinHostPort(ep.GetAddress(), strconv.FormatUint(uint64(ep.GetPort()), 10)))
		}
		wants = append(wants, want{
			name: out.GetName(), address: out.GetAddress(), port: out.GetPort(),
			rt:          route{protocol: out.GetProtocol(), hcm: out.GetClusterName()},
			endpoints:   eps,
			clusterName: out.GetClusterName(),
			service:     out.GetService(),
		})
	}

	// Bind what is new before changing anything.
	bound := map[string]net.Listener{}
	for _, w := range wants {
		if l := p.listeners[w.name]; l != nil && l.address == w.address && l.port == w.port {
			continue
		}
		if _, dup := bound[w.name]; dup {
			closeAll(bound)
			return fmt.Errorf("listener %s is configured twice", w.name)
		}
		ln, err := p.listen("tcp", net.JoinHostPort(w.address, strconv.FormatUint(uint64(w.port), 10)))
		if err != nil {
			closeAll(bound)
			return fmt.Errorf("listener %s: %w", w.name, err)
		}
		bound[w.name] = ln
	}

	var changes []func()
	p.stats.Batch(func() {
		keep := map[string]bool{}
		for _, w := range wants {
			keep[w.name] = true
			c := p.clusters[w.clusterName]
			if c == nil {
				c = newCluster(w.clusterName, stats.NewClusterStats(p.stats, w.clusterName), p.dial)
				p.clusters[w.clusterName] = c
			}
			if c.setEndpoints(w.endpoints) {
				changes = append(changes, c.endpointsChanged)
			}
			if w.inbound == nil {
				c.secureAs(p.sec, w.service, alpnFor(w.rt.protocol))
			} else {
				w.rt.guard = p.guardFor(w.inbound, c)
			}
			w.rt.cluster = c
			l := p.listeners[w.name]
			if ln, ok := bound[w.name]; ok {
				// The new one first: its statistics carry on the old one's.
				nl := newListener(p, w.name, w.address, w.port, ln)
				if l != nil {
					p.removeListener(l)
				}
				l = nl
				p.listeners[w.name] = l
				changes = append(changes, l.serve)
			}
			l.setRoute(p, w.rt)
		}
		for name, l := range p.listeners {
			if !keep[name] {
				p.removeListener(l)
				delete(p.listeners, name)
			}
		}
		for name, rb := range p.rbac {
			if !keep[name] {
				rb.Release()
				delete(p.rbac, name)
			}
		}
		p.collectClusters()
	})
	for _, f := range changes {
		f()
	}
	return nil
}

// guardFor builds the guard of an inbound: its permissions and statistics.
func (p *Proxy) guardFor(in *meshv1.Inbound, c *cluster) *guard {
	rb := p.rbac[in.GetName()]
	if rb == nil {
		rb = stats.NewRBACStats(p.stats, in.GetName())
		p.rbac[in.GetName()] = rb
	}
	return &guard{sec: p.sec, alpn: alpnFor(in.GetProtocol()), allowed: in.GetAllowedSources(), rbac: rb, ssl: c.stats.SSLHandshake}
}

// removeListener stops a listener from accepting; its connections finish.
func (p *Proxy) removeListener(l *listener) {
	l.stopAccepting()
	l.setRoute(p, route{})
	l.stats.Release()
}

// NotAccepting tells which listeners stopped accepting connections for good
// (a permanent accept error; temporary ones such as running out of file
// descriptors are retried): nil while every listener accepts. Such a
// listener stays broken until the config moves it.
func (p *Proxy) NotAccepting() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(p.listeners)) {
		if err := p.listeners[name].notAccepting(); err != nil {
			errs = append(errs, fmt.Errorf("listener %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// collectClusters releases clusters no listener uses any more.
func (p *Proxy) collectClusters() {
	used := map[*cluster]bool{}
	for _, l := range p.listeners {
		if rt := l.route.Load(); rt != nil && rt.cluster != nil {
			used[rt.cluster] = true
		}
	}
	for name, c := range p.clusters {
		if !used[c] {
			c.stats.Release()
			delete(p.clusters, name)
		}
	}
}

// Listeners returns the names of the listeners, sorted.
func (p *Proxy) Listeners() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.listeners))
	for n := range p.listeners {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Drain stops accepting on every listener and waits until in-flight
// connections and requests are done or ctx ends; then it closes what is left.
func (p *Proxy) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	ls := make([]*listener, 0, len(p.listeners))
	for _, l := range p.listeners {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.stopAccepting()
	}
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() { defer wg.Done(); l.drain(ctx) }()
	}
	wg.Wait()
	for _, l := range ls {
		l.closeConns()
	}
	return ctx.Err()
}

// Close stops everything now.
func (p *Proxy) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Drain(ctx)
}

func closeAll(lns map[string]net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}
