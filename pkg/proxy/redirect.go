package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/stats"
	"github.com/kumametrics/mesh/pkg/transparentproxy"
)

// redirectSide tells which traffic a redirect listener receives.
type redirectSide uint8

const (
	sideNone redirectSide = iota
	// sideInbound: connections from outside to the workload (PREROUTING).
	sideInbound
	// sideOutbound: the workload's connections to the outside (OUTPUT).
	sideOutbound
)

// Names of a transparent proxy's redirect listeners and of the clusters
// that carry what they pass through (the reference system's listener names;
// pass_through is its outbound passthrough cluster).
const (
	InboundRedirectListener  = "inbound:passthrough:ipv4"
	OutboundRedirectListener = "outbound:passthrough:ipv4"
	InboundPassthrough       = "inbound_passthrough"
	OutboundPassthrough      = "pass_through"
)

// inboundPassthroughSource is the source address of the connections an
// inbound passthrough makes to the workload: the redirect rules let it
// through on the loopback interface, so such a connection is not
// redirected to the proxy again (as the reference system's).
var inboundPassthroughSource = netip.MustParseAddr(transparentproxy.InboundPassthroughSource)

// redirectWants are the redirect listeners of a transparent proxy: each
// binds its port on every address; their route passes through what matches
// no inbound or outbound (none: such connections are refused).
func redirectWants(tp *meshv1.TransparentProxy) []want {
	if tp == nil {
		return nil
	}
	out := want{
		name: OutboundRedirectListener, address: tp.GetAddress(), port: tp.GetRedirectPortOutbound(),
		side: sideOutbound,
	}
	if tp.GetOutboundPassthrough() {
		out.rt = route{protocol: protocolPassthrough, side: sideOutbound}
		out.clusterName = OutboundPassthrough
	}
	in := want{
		name: InboundRedirectListener, address: tp.GetAddress(), port: tp.GetRedirectPortInbound(),
		side:        sideInbound,
		rt:          route{protocol: protocolPassthrough, side: sideInbound},
		clusterName: InboundPassthrough,
	}
	return []want{in, out}
}

// redirect hands the connections a redirect listener accepts to the
// listener of their original destination.
type redirect struct {
	side  redirectSide
	l     *listener
	table atomic.Pointer[redirectTable]
	stats *stats.RedirectStats
}

// redirectTable maps original destinations to listeners without sockets.
type redirectTable struct {
	byAddr map[netip.AddrPort]*listener
	// byPort: inbound listeners by port alone (a connection may reach the
	// workload at any of its addresses).
	byPort map[uint16]*listener
}

func (t *redirectTable) lookup(dst netip.AddrPort) *listener {
	if l := t.byAddr[dst]; l != nil {
		return l
	}
	return t.byPort[dst.Port()]
}

// makeRedirect turns a new listener into a redirect listener of side.
func (p *Proxy) makeRedirect(l *listener, side redirectSide) {
	r := &redirect{side: side, l: l, stats: stats.NewRedirectStats(p.stats, envoyAddress(l.address, l.port))}
	r.table.Store(&redirectTable{})
	l.redirect = r
	l.accept = r.accept
}

// envoyAddress is a listener address as Envoy names it in statistics.
func envoyAddress(host string, port uint32) string {
	return host + "_" + strconv.FormatUint(uint64(port), 10)
}

// routeRedirects gives each redirect listener of wants (by name in ls) the
// table of the listeners without sockets of its side.
func routeRedirects(wants []want, ls map[string]*listener) {
	in := &redirectTable{byAddr: map[netip.AddrPort]*listener{}, byPort: map[uint16]*listener{}}
	out := &redirectTable{byAddr: map[netip.AddrPort]*listener{}}
	for _, w := range wants {
		if !w.virtual {
			continue
		}
		addr, _ := netip.ParseAddr(w.address) // checked by wantsOf
		dst := netip.AddrPortFrom(addr.Unmap(), uint16(w.port))
		if w.inbound != nil {
			in.byAddr[dst] = ls[w.name]
			if in.byPort[dst.Port()] == nil {
				in.byPort[dst.Port()] = ls[w.name]
			}
			continue
		}
		out.byAddr[dst] = ls[w.name]
	}
	for _, w := range wants {
		switch w.side {
		case sideInbound:
			ls[w.name].redirect.table.Store(in)
		case sideOutbound:
			ls[w.name].redirect.table.Store(out)
		}
	}
}

// accept dispatches an accepted connection on a goroutine of its own.
func (r *redirect) accept(conn net.Conn) { go r.dispatch(conn) }

// dispatch reads where conn was headed and hands it to the listener of
// that destination; what matches none passes through on the redirect
// listener's own route (with its destination), or is refused and counted
// when there is none. A connection that was not redirected (its original
// destination is the redirect port itself) is refused: passing it through
// would connect the listener to itself.
func (r *redirect) dispatch(conn net.Conn) {
	dst, err := originalDst(conn)
	if err == nil {
		if la, ok := conn.LocalAddr().(*net.TCPAddr); ok && la.IP.Equal(dst.Addr().AsSlice()) && la.Port == int(dst.Port()) {
			err = errNotRedirected
		}
	}
	if err != nil {
		r.l.log.Debug("refusing a connection that was not redirected", "listener", r.l.name, "remote", conn.RemoteAddr(), "err", err)
		r.stats.NoFilterChainMatch.Inc()
		_ = conn.Close()
		return
	}
	// The workload's own connections leave through OUTPUT: never external.
	ext := r.side == sideInbound && external(conn)
	if l := r.table.Load().lookup(dst); l != nil {
		l.take(conn, ext)
		return
	}
	if r.l.route.Load() == nil {
		r.stats.NoFilterChainMatch.Inc()
		_ = conn.Close()
		return
	}
	r.l.take(&destinedConn{Conn: conn, dst: dst}, ext)
}
