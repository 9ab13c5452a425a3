package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/kumametrics/mesh/pkg/stats"
)

// protocolPassthrough is the route of a redirect listener: plain TCP to
// each connection's original destination.
const protocolPassthrough = "passthrough"

// errNotRedirected: a redirect listener accepted a connection that no
// redirect rule sent there.
var errNotRedirected = errors.New("the connection was not redirected: its original destination is the redirect listener itself")

// destinedConn is a redirected connection with its original destination.
type destinedConn struct {
	net.Conn
	dst netip.AddrPort
}

// CloseWrite half-closes the connection: the TCP proxy passes the
// destination's FIN on instead of closing both ways.
func (c *destinedConn) CloseWrite() error { return closeWrite(c.Conn) }

// UnwrapTCP gives the splice fast path the redirected connection.
func (c *destinedConn) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return c.Conn, nil, nil
}

// newPassthrough returns the handler that carries a redirect listener's
// unmatched connections to their original destinations, counted in its
// cluster. The inbound one connects from 127.0.0.6, which the redirect
// rules let through.
func (p *Proxy) newPassthrough(rt route) connHandler {
	dial := dialFunc(p.dial)
	if rt.side == sideInbound {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return p.dialFrom(ctx, inboundPassthroughSource, network, addr)
		}
	}
	c := rt.cluster
	return &tcpProxy{c: c, log: p.log, panics: rt.panics, upstream: func(ctx context.Context, down net.Conn) (net.Conn, error) {
		dc, ok := down.(*destinedConn)
		if !ok {
			return nil, errNotRedirected
		}
		return c.dialTo(ctx, dial, dc.dst.String())
	}}
}
