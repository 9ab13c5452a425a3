// Package netfeed is a net.Listener whose connections are handed in by its
// owner instead of accepted from a socket: for serving, with a server that
// only knows listeners (net/http, gRPC), connections that were accepted and
// inspected elsewhere (sniffed for a protocol, TLS terminated, permitted).
package netfeed

import (
	"net"
	"sync"
)

// Listener is a net.Listener fed by Feed. Its zero value is not usable; make
// one with New.
type Listener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// New returns an open listener that reports addr as its address.
func New(addr net.Addr) *Listener {
	return &Listener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Feed hands c to the next Accept, waiting for it. It returns false, and
// leaves c to the caller, when the listener is closed.
func (l *Listener) Feed(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

// Accept returns the next connection fed, or net.ErrClosed once closed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and Feed; it may be called more than once.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is the address given to New.
func (l *Listener) Addr() net.Addr { return l.addr }
