package proxy

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// connHandler serves the connections of one route.
type connHandler interface {
	// ServeConn serves one downstream connection until it is done.
	ServeConn(conn net.Conn, external bool)
	// Drain finishes in-flight work and stops keep-alive, until ctx ends.
	Drain(ctx context.Context)
	// Close ends everything now.
	Close()
}

// routed is a route and the handler built for it.
type routed struct {
	route
	handler connHandler
}

// listener accepts connections on one address and hands them to the
// handler of its current route. A virtual listener (ln nil) has no socket:
// a redirect listener hands it the connections meant for its address.
type listener struct {
	name    string
	address string
	port    uint32
	ln      net.Listener
	// accept takes each accepted connection (acceptRouted, or a redirect
	// listener's dispatch).
	accept func(net.Conn)
	// redirect is set on a transparent proxy's redirect listeners.
	redirect *redirect
	log      *slog.Logger
	stats    *stats.ListenerStats
	// panics recovers a panic of a connection's goroutines: logged, counted,
	// only that connection ends.
	panics *netserve.Panics
	// failed is the error that made the listener stop accepting for good.
	failed atomic.Pointer[error]

	route atomic.Pointer[routed]

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	retired []connHandler
	active  sync.WaitGroup
	stopped bool
	// peers are the identities of the mTLS connections being served.
	peers peers
}

func newListener(p *Proxy, name, address string, port uint32, ln net.Listener) *listener {
	st := stats.NewListenerStats(p.stats, name)
	l := &listener{
		name: name, address: address, port: port, ln: ln, log: p.log, stats: st,
		panics: &netserve.Panics{Name: name, Log: p.log, Count: st.ConnectionPanics},
		conns:  map[net.Conn]struct{}{},
	}
	l.accept = l.acceptRouted
	return l
}

// setRoute switches the listener to rt. Connections already accepted stay
// with the handler they started on.
func (l *listener) setRoute(p *Proxy, rt route) {
	rt.panics = l.panics
	cur := l.route.Load()
	if cur != nil && cur.protocol == rt.protocol && cur.cluster == rt.cluster && cur.hcm == rt.hcm {
		// Same handler; the permissions may have changed: they apply to new
		// connections, and end the served ones they no longer allow.
		if rt.guard != nil || cur.guard != nil {
			l.route.Store(&routed{route: rt, handler: cur.handler})
			if rt.guard != nil {
				l.peers.recheck(rt.guard)
			}
		}
		return
	}
	var next *routed
	if rt.cluster != nil {
		next = &routed{route: rt, handler: p.newHandler(rt)}
	}
	l.route.Store(next)
	if cur != nil {
		l.mu.Lock()
		l.retired = append(l.retired, cur.handler)
		l.mu.Unlock()
	}
}

// serve accepts connections until the listener is stopped. Temporary
// failures (out of file descriptors) are retried with backoff; a permanent
// one ends accepting: it is logged and kept in failed (the proxy is then
// not ready).
func (l *listener) serve() {
	go func() {
		err := netserve.Serve(l.ln, netserve.AcceptOptions{Name: l.name, Log: l.log, Errors: l.stats.AcceptErrors}, l.accept)
		if err == nil {
			return
		}
		l.mu.Lock()
		stopped := l.stopped
		l.mu.Unlock()
		if !stopped {
			l.log.Error("listener stopped accepting connections: the proxy is not ready", "listener", l.name, "err", err)
			l.failed.Store(&err)
		}
	}()
}

// acceptRouted hands an accepted connection to the listener's route, on a
// goroutine of its own.
func (l *listener) acceptRouted(conn net.Conn) {
	rt := l.route.Load()
	if rt == nil || !l.track(conn) {
		_ = conn.Close()
		return
	}
	go l.serveConn(rt, conn, external(conn))
}

// take serves a connection another listener accepted (a redirect listener
// handing over the connections meant for this one), on the caller's
// goroutine, as if this listener had accepted it.
func (l *listener) take(conn net.Conn, external bool) {
	rt := l.route.Load()
	if rt == nil || !l.track(conn) {
		_ = conn.Close()
		return
	}
	l.serveConn(rt, conn, external)
}

// serveConn serves one accepted connection until it is done; external
// says whether it came from outside the proxy's host.
func (l *listener) serveConn(rt *routed, conn net.Conn, external bool) {
	defer l.untrack(conn)
	defer l.panics.Recover(conn)
	served := net.Conn(conn)
	if rt.guard != nil {
		s, id, ok := rt.guard.admit(conn)
		if !ok {
			return
		}
		// What admit wrapped around conn ends with it too (a tracked
		// plain-text connection leaves the tracking); a handler need not
		// close what it serves (the TCP proxy does not).
		defer s.Close()
		served = s
		l.peers.add(conn, id)
		defer l.peers.remove(conn)
	}
	rt.handler.ServeConn(served, external)
}

// notAccepting is the error that stopped the listener, nil while it accepts.
func (l *listener) notAccepting() error {
	if e := l.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// external tells whether a connection comes from outside the proxy's host:
// from another address than the one it reached.
func external(c net.Conn) bool {
	ra, ok1 := c.RemoteAddr().(*net.TCPAddr)
	la, ok2 := c.LocalAddr().(*net.TCPAddr)
	return ok1 && ok2 && !ra.IP.Equal(la.IP)
}

func (l *listener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	l.conns[c] = struct{}{}
	l.active.Add(1)
	return true
}

func (l *listener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	_ = c.Close()
	l.active.Done()
}

// stopAccepting closes the listening socket.
func (l *listener) stopAccepting() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
}

// drain lets the handlers finish in-flight work and waits for the
// connections to end, until ctx ends.
func (l *listener) drain(ctx context.Context) {
	l.mu.Lock()
	handlers := append([]connHandler(nil), l.retired...)
	l.mu.Unlock()
	if rt := l.route.Load(); rt != nil {
		handlers = append(handlers, rt.handler)
	}
	for _, h := range handlers {
		h.Drain(ctx)
	}
	done := make(chan struct{})
	go func() { l.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// closeConns closes every connection still open.
func (l *listener) closeConns() {
	l.mu.Lock()
	handlers := append([]connHandler(nil), l.retired...)
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	if rt := l.route.Load(); rt != nil {
		handlers = append(handlers, rt.handler)
	}
	for _, h := range handlers {
		h.Close()
	}
}
