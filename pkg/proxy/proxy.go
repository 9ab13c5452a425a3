// Package proxy carries a workload's traffic: inbound listeners in front of
// the local application and outbound listeners towards the endpoints of other
// services, over TCP, HTTP/1.1 and HTTP/2 (h2c, gRPC), recording
// Envoy-compatible statistics. Configuration changes apply live and whole: a
// config is prepared (checked, its new listeners bound) without touching
// what serves traffic, then committed or aborted; listeners and endpoints
// change without dropping established connections, and Drain stops
// accepting and lets in-flight work finish.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Proxy is the set of listeners and clusters of one data plane proxy.
type Proxy struct {
	stats *stats.Store
	log   *slog.Logger
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	// dialFrom connects from a given local address (inbound passthrough).
	dialFrom func(ctx context.Context, local netip.Addr, network, addr string) (net.Conn, error)
	sec      *Security
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
	// DialFrom connects from a given local address: a transparent proxy's
	// inbound passthrough, which connects to the workload from 127.0.0.6
	// (a net.Dialer with that LocalAddr by default).
	DialFrom func(ctx context.Context, local netip.Addr, network, addr string) (net.Conn, error)
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
	if opts.DialFrom == nil {
		opts.DialFrom = func(ctx context.Context, local netip.Addr, network, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}}
			return d.DialContext(ctx, network, addr)
		}
	}
	return &Proxy{stats: st, log: opts.Log, dial: opts.Dial, dialFrom: opts.DialFrom, sec: opts.Security, listen: opts.Listen,
		listeners: map[string]*listener{}, clusters: map[string]*cluster{}, rbac: map[string]*stats.RBACStats{}}
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
	// side of a redirect listener's passthrough route.
	side redirectSide
}

// want is one listener of a config, with what it routes to.
type want struct {
	name, address string
	port          uint32
	rt            route
	endpoints     []string
	clusterName   string
	// service of an outbound's endpoints (verified under mTLS).
	service string
	inbound *meshv1.Inbound
	// virtual: no socket of its own; a redirect listener hands it the
	// connections meant for its address.
	virtual bool
	// side is set on a transparent proxy's redirect listeners.
	side redirectSide
}

// Change is a config of the proxy prepared to be applied: everything that
// can fail is done (the config checked, every new listener bound) and
// nothing serves it yet. Exactly one of Commit or Abort must follow; the
// proxy takes no other change until then.
type Change struct {
	p     *Proxy
	cfg   *meshv1.ProxyConfig
	wants []want
	// reuse: the running listener whose socket a wanted listener keeps (the
	// same address as before: no rebind); bound: the sockets bound for it.
	reuse map[string]*listener
	bound map[string]net.Listener
	done  bool
}

// Apply makes the proxy's listeners and clusters those of cfg: Prepare,
// then Commit. If it fails nothing changed, and the error says why.
func (p *Proxy) Apply(cfg *meshv1.ProxyConfig) error {
	ch, err := p.Prepare(cfg)
	if err != nil {
		return err
	}
	ch.Commit()
	return nil
}

// Prepare checks cfg and binds the listeners it adds, without changing what
// serves traffic. A listener whose address is one the running config
// already listens on keeps that socket. On error nothing changed and
// nothing new stays bound.
func (p *Proxy) Prepare(cfg *meshv1.ProxyConfig) (*Change, error) {
	p.mu.Lock()
	ch, err := p.prepareLocked(cfg)
	if err != nil {
		p.mu.Unlock()
		return nil, err
	}
	return ch, nil
}

func (p *Proxy) prepareLocked(cfg *meshv1.ProxyConfig) (*Change, error) {
	if p.draining {
		return nil, errors.New("proxy is draining")
	}
	wants, err := wantsOf(cfg)
	if err != nil {
		return nil, err
	}
	ch := &Change{p: p, cfg: cfg, wants: wants, reuse: map[string]*listener{}, bound: map[string]net.Listener{}}
	// Running listeners by address, as configured and as bound (a port of
	// 0 is a new port each time: it matches by name only).
	byAddr := make(map[string]*listener, 2*len(p.listeners))
	for _, l := range p.listeners {
		if l.ln == nil {
			continue // virtual: no socket to keep
		}
		byAddr[l.ln.Addr().String()] = l
		if l.port != 0 {
			byAddr[joinHostPort(l.address, l.port)] = l
		}
	}
	claimed := make(map[*listener]bool, len(wants))
	for _, w := range wants {
		if w.virtual {
			// Kept when it was virtual before: its connections and statistics stay.
			if l := p.listeners[w.name]; l != nil && l.ln == nil {
				claimed[l] = true
				ch.reuse[w.name] = l
			}
			continue
		}
		l := p.listeners[w.name]
		if l == nil || l.address != w.address || l.port != w.port || claimed[l] {
			l = nil
			if w.port != 0 {
				l = byAddr[joinHostPort(w.address, w.port)]
			}
		}
		// A socket stays with its kind: a redirect listener's is never an
		// ordinary one's (its accept loop dispatches), nor the reverse.
		if l != nil && !claimed[l] && (l.redirect != nil) == (w.side != sideNone) {
			claimed[l] = true
			ch.reuse[w.name] = l
			continue
		}
		ln, err := p.listen("tcp", joinHostPort(w.address, w.port))
		if err != nil {
			closeAll(ch.bound)
			return nil, fmt.Errorf("listener %s: %w", w.name, err)
		}
		ch.bound[w.name] = ln
	}
	return ch, nil
}

// wantsOf lists the listeners of cfg, refusing names or addresses used
// twice and protocols the proxy does not speak.
func wantsOf(cfg *meshv1.ProxyConfig) ([]want, error) {
	var wants []want
	for _, in := range cfg.GetInbounds() {
		wants = append(wants, want{
			name: in.GetName(), address: in.GetAddress(), port: in.GetPort(),
			rt:          route{protocol: in.GetProtocol(), hcm: in.GetClusterName()},
			endpoints:   []string{joinHostPort(in.GetServiceAddress(), in.GetServicePort())},
			clusterName: in.GetClusterName(),
			inbound:     in,
			virtual:     in.GetTransparent(),
		})
	}
	for _, out := range cfg.GetOutbounds() {
		eps := make([]string, 0, len(out.GetEndpoints()))
		for _, ep := range out.GetEndpoints() {
			eps = append(eps, joinHostPort(ep.GetAddress(), ep.GetPort()))
		}
		wants = append(wants, want{
			name: out.GetName(), address: out.GetAddress(), port: out.GetPort(),
			rt:          route{protocol: out.GetProtocol(), hcm: out.GetClusterName()},
			endpoints:   eps,
			clusterName: out.GetClusterName(),
			service:     out.GetService(),
			virtual:     out.GetTransparent(),
		})
	}
	wants = append(wants, redirectWants(cfg.GetTransparentProxy())...)
	names := make(map[string]bool, len(wants))
	addrs := make(map[string]string, len(wants))
	for _, w := range wants {
		if names[w.name] {
			return nil, fmt.Errorf("listener %s is configured twice", w.name)
		}
		names[w.name] = true
		switch w.rt.protocol {
		case "", dpconfig.ProtocolTCP, dpconfig.ProtocolHTTP, dpconfig.ProtocolHTTP2, dpconfig.ProtocolGRPC, protocolPassthrough:
		default:
			return nil, fmt.Errorf("listener %s: protocol %q is not supported (tcp, http, http2, grpc)", w.name, w.rt.protocol)
		}
		if w.virtual {
			if _, err := netip.ParseAddr(w.address); err != nil || w.port == 0 || w.port > 65535 {
				return nil, fmt.Errorf("listener %s: %s:%d is not an IP address and port a redirect can reach", w.name, w.address, w.port)
			}
		}
		if w.port == 0 {
			continue
		}
		addr := joinHostPort(w.address, w.port)
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("listeners %s and %s both listen on %s", other, w.name, addr)
		}
		addrs[addr] = w.name
	}
	return wants, nil
}

// Commit makes the prepared config the proxy's: the mesh's mTLS mode,
// clusters and routes switch, new listeners start accepting, and listeners
// the config no longer has stop accepting (their connections finish on
// their own). Established connections of listeners that stay are kept.
func (ch *Change) Commit() {
	if ch.done {
		return
	}
	ch.done = true
	p := ch.p
	defer p.mu.Unlock()
	p.sec.SetConfig(ch.cfg.GetMesh(), ch.cfg.GetMtls())
	var changes []func()
	p.stats.Batch(func() {
		next := make(map[string]*listener, len(ch.wants))
		kept := make(map[*listener]bool, len(ch.wants))
		for _, w := range ch.wants {
			if w.clusterName != "" {
				c := p.clusters[w.clusterName]
				if c == nil {
					c = newCluster(w.clusterName, stats.NewClusterStats(p.stats, w.clusterName), p.dial)
					p.clusters[w.clusterName] = c
				}
				if c.setEndpoints(w.endpoints) {
					changes = append(changes, c.endpointsChanged)
				}
				switch {
				case w.inbound != nil:
					w.rt.guard = p.guardFor(w.inbound, c)
				case w.side == sideNone:
					c.secureAs(p.sec, w.service, alpnFor(w.rt.protocol))
				}
				w.rt.cluster = c
			}
			l := ch.reuse[w.name]
			if l == nil {
				l = newListener(p, w.name, w.address, w.port, ch.bound[w.name])
				if w.side != sideNone {
					p.makeRedirect(l, w.side)
				}
				if !w.virtual {
					changes = append(changes, l.serve)
				}
			}
			kept[l] = true
			next[w.name] = l
			l.setRoute(p, w.rt)
		}
		routeRedirects(ch.wants, next)
		for _, l := range p.listeners {
			if !kept[l] {
				p.removeListener(l)
			}
		}
		p.listeners = next
		for name, rb := range p.rbac {
			if next[name] == nil {
				rb.Release()
				delete(p.rbac, name)
			}
		}
		p.collectClusters()
	})
	for _, f := range changes {
		f()
	}
}

// Abort discards the prepared config: the listeners bound for it close and
// the running config stays as it was. It does nothing after Commit.
func (ch *Change) Abort() {
	if ch.done {
		return
	}
	ch.done = true
	closeAll(ch.bound)
	ch.p.mu.Unlock()
}

// joinHostPort is host:port.
func joinHostPort(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
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
	if l.redirect != nil {
		l.redirect.stats.Release()
	}
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

// Addr is the address listener name is bound to, or nil when there is no
// such listener or it has no socket of its own (a transparent proxy's
// inbounds and virtual outbounds).
func (p *Proxy) Addr(name string) net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.listeners[name]; l != nil && l.ln != nil {
		return l.ln.Addr()
	}
	return nil
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
