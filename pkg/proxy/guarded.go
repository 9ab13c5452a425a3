package proxy

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// EndpointPolicy secures an endpoint of the proxy that is not a mesh
// inbound (the metrics endpoint).
type EndpointPolicy struct {
	// Security and Allowed: mTLS with the mesh's identities, the peers
	// Allowed permits (as an inbound under the mesh's mTLS mode).
	Security *Security
	Allowed  []*meshv1.Selector
	RBAC     *stats.RBACStats
	// Provided, when set, serves TLS with this certificate to any client
	// instead (no client certificate asked).
	Provided *tls.Certificate
	// Own addresses (the dataplane's) may always connect in plain text.
	Own []net.IP
}

// GuardOptions name a guarded listener in logs and statistics; every field
// is optional.
type GuardOptions struct {
	Name string
	Log  *slog.Logger
	// Stats count its accept errors and the panics of its connections.
	Stats *stats.ListenerStats
}

// GuardListener wraps ln so that Accept returns only the connections its
// policy admits (TLS-terminated when they came with TLS); the policy can be
// replaced at any time (nil: plain text for everyone). Connections are
// admitted concurrently, so a slow client delays only itself. Temporary
// accept failures (out of file descriptors) are retried; a permanent one is
// what Accept returns from then on.
func GuardListener(ln net.Listener, p *EndpointPolicy, opts GuardOptions) *GuardedListener {
	gl := &GuardedListener{Listener: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	gl.accept = netserve.AcceptOptions{Name: opts.Name, Log: opts.Log}
	gl.panics = &netserve.Panics{Name: opts.Name, Log: opts.Log}
	if opts.Stats != nil {
		gl.accept.Errors, gl.panics.Count = opts.Stats.AcceptErrors, opts.Stats.ConnectionPanics
	}
	gl.SetPolicy(p)
	go gl.run()
	return gl
}

// SetPolicy replaces the policy for the connections accepted from now on,
// and ends the mTLS connections it no longer permits.
func (l *GuardedListener) SetPolicy(p *EndpointPolicy) {
	if p == nil {
		l.g.Store(nil)
		return
	}
	g := newEndpointGuard(*p)
	l.g.Store(g)
	l.peers.recheck(g)
}

func newEndpointGuard(p EndpointPolicy) *guard {
	g := &guard{sec: p.Security, allowed: p.Allowed, rbac: p.RBAC, provided: p.Provided, plainFrom: func(a net.Addr) bool {
		ta, ok := a.(*net.TCPAddr)
		if !ok {
			return false
		}
		for _, ip := range p.Own {
			if ip.Equal(ta.IP) {
				return true
			}
		}
		return false
	}}
	if g.sec == nil {
		g.sec = NewSecurity()
	}
	return g
}

// GuardedListener is a listener whose connections pass a policy.
type GuardedListener struct {
	net.Listener
	accept netserve.AcceptOptions
	panics *netserve.Panics
	g      atomic.Pointer[guard]
	peers  peers
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	err    error
}

func (l *GuardedListener) run() {
	err := netserve.Serve(l.Listener, l.accept, func(c net.Conn) {
		g := l.g.Load()
		go func() {
			defer l.panics.Recover(c)
			ac, ok := net.Conn(c), true
			if g != nil {
				var id *ca.Identity
				if ac, id, ok = g.admit(c); ok && id != nil {
					l.peers.add(c, id)
					ac = &forgetOnClose{Conn: ac, forget: func() { l.peers.remove(c) }}
				}
			}
			if !ok {
				_ = c.Close()
				return
			}
			select {
			case l.conns <- ac:
			case <-l.done:
				_ = c.Close()
			}
		}()
	})
	l.closeWith(err)
}

func (l *GuardedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

// forgetOnClose removes a connection from the peers when it closes.
type forgetOnClose struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (f *forgetOnClose) Close() error {
	f.once.Do(f.forget)
	return f.Conn.Close()
}

func (l *GuardedListener) close() { l.closeWith(nil) }

// closeWith ends Accept with err (written before done closes, read after).
func (l *GuardedListener) closeWith(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

// Close stops accepting.
func (l *GuardedListener) Close() error {
	l.close()
	err := l.Listener.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
