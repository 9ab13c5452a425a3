package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/pkg/proxy/sock"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Passive health: an endpoint that failed to connect this many times in a
// row is ejected for ejectBase × the number of ejections so far (capped).
const (
	ejectAfter = 3
	ejectBase  = 5 * time.Second
	ejectMax   = 5 * time.Minute
	// connectTimeout bounds one connection attempt.
	connectTimeout = 5 * time.Second
)

// errNoEndpoint is returned when a cluster has no endpoint at all.
var errNoEndpoint = errors.New("no healthy upstream")

// endpoint is one upstream address of a cluster.
type endpoint struct {
	addr string
	// consecutive connect failures, ejections so far, ejected until (unix nanos).
	failures     atomic.Int32
	ejections    atomic.Int32
	ejectedUntil atomic.Int64
}

func (e *endpoint) ejected(now int64) bool { return e.ejectedUntil.Load() > now }

// cluster is a set of upstream endpoints and their statistics. Its endpoints
// change atomically; dialing never takes a lock.
type cluster struct {
	name    string
	stats   *stats.ClusterStats
	dialNet func(ctx context.Context, network, addr string) (net.Conn, error)

	endpoints atomic.Pointer[[]*endpoint]
	next      atomic.Uint64
	// tls says how connections to the endpoints are secured (outbound
	// clusters; nil for an inbound's local application).
	tls atomic.Pointer[clusterTLS]
	// pipes counts which path the TCP proxy took (tests).
	pipes pipePaths

	// watchers are told when the endpoint set changed (HTTP engines close
	// pooled connections to endpoints that went away).
	watchMu  sync.Mutex
	watchers []func(keep func(endpoint string) bool)
}

// clusterTLS is how an outbound cluster's connections use mTLS.
type clusterTLS struct {
	sec     *Security
	service string
	alpn    []string
}

// secureAs makes the cluster's new connections use mTLS when sec says so,
// verifying the endpoints as service.
func (c *cluster) secureAs(sec *Security, service string, alpn []string) {
	c.tls.Store(&clusterTLS{sec: sec, service: service, alpn: alpn})
}

// useTLS tells whether new connections of the cluster use mTLS now.
func (c *cluster) useTLS() bool {
	ct := c.tls.Load()
	return ct != nil && ct.sec.outboundTLS()
}

// reusable tells whether a pooled connection may serve another request: its
// security is still the one new connections get (after a switch, pooled
// connections of the old mode retire).
func (c *cluster) reusable(conn net.Conn) bool {
	if c.tls.Load() == nil {
		return true
	}
	_, isTLS := conn.(*tls.Conn)
	return isTLS == c.useTLS()
}

// handshake secures a new connection when mTLS is in use.
func (c *cluster) handshake(ctx context.Context, conn net.Conn) (net.Conn, error) {
	return c.handshakeIf(ctx, conn, c.useTLS())
}

// handshakeIf secures a new connection with mTLS when on is set.
func (c *cluster) handshakeIf(ctx context.Context, conn net.Conn, on bool) (net.Conn, error) {
	ct := c.tls.Load()
	if ct == nil || !on {
		return conn, nil
	}
	// The relays read and write the socket below TLS (sock.Conn).
	tc := tls.Client(sock.NewConn(conn), ct.sec.clientConfig(ct.service, ct.alpn))
	hctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		// The connection could not be established as required.
		c.stats.UpstreamCxConnectFail.Inc()
		_ = conn.Close()
		return nil, fmt.Errorf("mTLS handshake: %w", err)
	}
	c.stats.SSLHandshake.Inc()
	return tc, nil
}

// watchEndpoints registers f to run after the endpoint set changed.
func (c *cluster) watchEndpoints(f func(keep func(endpoint string) bool)) {
	c.watchMu.Lock()
	c.watchers = append(c.watchers, f)
	c.watchMu.Unlock()
}

func (c *cluster) endpointsChanged() {
	c.watchMu.Lock()
	ws := append([]func(func(string) bool){}, c.watchers...)
	c.watchMu.Unlock()
	for _, w := range ws {
		w(c.has)
	}
}

func newCluster(name string, st *stats.ClusterStats, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *cluster {
	c := &cluster{name: name, stats: st, dialNet: dial}
	c.endpoints.Store(&[]*endpoint{})
	return c
}

// setEndpoints replaces the endpoint set, keeping the health state of
// endpoints that stay. It reports whether the set changed.
func (c *cluster) setEndpoints(addrs []string) bool {
	old := *c.endpoints.Load()
	byAddr := make(map[string]*endpoint, len(old))
	for _, e := range old {
		byAddr[e.addr] = e
	}
	next := make([]*endpoint, 0, len(addrs))
	changed := len(addrs) != len(old)
	for i, a := range addrs {
		e := byAddr[a]
		if e == nil {
			e = &endpoint{addr: a}
		}
		if !changed && old[i].addr != a {
			changed = true
		}
		next = append(next, e)
	}
	c.endpoints.Store(&next)
	c.stats.MembershipTotal.Set(int64(len(next)))
	c.updateHealthy()
	return changed
}

func (c *cluster) has(addr string) bool {
	for _, e := range *c.endpoints.Load() {
		if e.addr == addr {
			return true
		}
	}
	return false
}

func (c *cluster) updateHealthy() {
	now := time.Now().UnixNano()
	healthy, ejected := 0, 0
	for _, e := range *c.endpoints.Load() {
		if e.ejected(now) {
			ejected++
		} else {
			healthy++
		}
	}
	c.stats.MembershipHealthy.Set(int64(healthy))
	c.stats.OutlierDetectionEjectionsActive.Set(int64(ejected))
	c.stats.HealthCheckHealthy.Set(int64(healthy))
}

// Dial connects to an endpoint: round robin over the endpoints that are not
// ejected (all of them when every one is), trying the next one after a
// connect failure. It returns the endpoint it connected to. The connection
// records its statistics (connect time, bytes, length) into the cluster.
func (c *cluster) Dial(ctx context.Context) (net.Conn, string, error) { return c.dial(ctx, true, "") }

// DialFrom is Dial for a caller that picked the endpoint itself (first; the
// others are tried after it) and records the connection's statistics
// itself (the HTTP/1.1 engine); connect failures are still counted here.
func (c *cluster) DialFrom(ctx context.Context, first string) (net.Conn, string, error) {
	return c.dial(ctx, false, first)
}

// DialCounted is DialFrom for a caller that leaves the connection's
// statistics to the cluster (the HTTP/2 engine).
func (c *cluster) DialCounted(ctx context.Context, first string) (net.Conn, string, error) {
	return c.dial(ctx, true, first)
}

// Pick names the next endpoint in round robin ("" when there is none).
func (c *cluster) Pick() string {
	if e := c.pick(); e != nil {
		return e.addr
	}
	return ""
}

func (c *cluster) dial(ctx context.Context, counted bool, first string) (net.Conn, string, error) {
	eps := *c.endpoints.Load()
	if len(eps) == 0 {
		c.stats.UpstreamCxConnectFail.Inc()
		return nil, "", fmt.Errorf("cluster %s: %w", c.name, errNoEndpoint)
	}
	now := time.Now().UnixNano()
	start := -1
	if first != "" {
		for i, e := range eps {
			if e.addr == first {
				start = i
				break
			}
		}
	}
	if start < 0 {
		start = int(c.next.Add(1) - 1)
	}
	var lastErr error
	tried := 0
	for pass := 0; pass < 2 && tried < len(eps); pass++ {
		for i := range eps {
			e := eps[(start+i)%len(eps)]
			// First pass: healthy endpoints only (and the picked one);
			// second pass: the ejected ones too.
			if e.ejected(now) != (pass == 1) && !(pass == 0 && i == 0 && first != "") {
				continue
			}
			tried++
			conn, err := c.connectRaw(ctx, e)
			if err == nil && counted {
				conn = c.counted(conn)
			}
			if err == nil {
				conn, err = c.handshake(ctx, conn)
			}
			if err == nil {
				return conn, e.addr, nil
			}
			lastErr = err
			if ctx.Err() != nil {
				return nil, "", ctx.Err()
			}
		}
	}
	return nil, "", fmt.Errorf("cluster %s: upstream connect error: %w", c.name, lastErr)
}

// pick returns the next endpoint in round robin, skipping ejected ones
// unless all are; nil when the cluster has none.
func (c *cluster) pick() *endpoint {
	eps := *c.endpoints.Load()
	if len(eps) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	start := int(c.next.Add(1) - 1)
	for i := range eps {
		if e := eps[(start+i)%len(eps)]; !e.ejected(now) {
			return e
		}
	}
	return eps[start%len(eps)]
}

// lookup finds an endpoint by address.
func (c *cluster) lookup(addr string) *endpoint {
	for _, e := range *c.endpoints.Load() {
		if e.addr == addr {
			return e
		}
	}
	return nil
}

// connect connects to one endpoint, recording the connection's statistics,
// with mTLS when useTLS is set.
func (c *cluster) connect(ctx context.Context, e *endpoint, useTLS bool) (net.Conn, error) {
	conn, err := c.connectRaw(ctx, e)
	if err != nil {
		return nil, err
	}
	return c.handshakeIf(ctx, c.counted(conn), useTLS)
}

// counted wraps a new connection so that it records into the cluster.
func (c *cluster) counted(conn net.Conn) net.Conn {
	ct := conn.(*timedConn)
	c.stats.ConnectionOpened(ct.took)
	return &countingConn{Conn: ct.Conn, c: c, opened: ct.opened}
}

// dialFunc connects to an address.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// timedConn carries how long a connection took to open.
type timedConn struct {
	net.Conn
	opened time.Time
	took   time.Duration
}

// connectRaw connects to one endpoint, keeping its health: connect
// failures are counted and a repeatedly failing endpoint is ejected.
func (c *cluster) connectRaw(ctx context.Context, e *endpoint) (net.Conn, error) {
	conn, err := c.open(ctx, c.dialNet, e.addr)
	if err != nil {
		if e.failures.Add(1) >= ejectAfter {
			n := e.ejections.Add(1)
			d := min(ejectBase*time.Duration(n), ejectMax)
			e.ejectedUntil.Store(time.Now().Add(d).UnixNano())
			e.failures.Store(0)
			c.updateHealthy()
		}
		return nil, err
	}
	if e.failures.Load() != 0 || e.ejectedUntil.Load() != 0 {
		e.failures.Store(0)
		e.ejections.Store(0)
		e.ejectedUntil.Store(0)
		c.updateHealthy()
	}
	return conn, nil
}

// open connects to addr within the connect timeout, counting a failure
// (and a timeout) into the cluster; the connection knows how long it took.
func (c *cluster) open(ctx context.Context, dial dialFunc, addr string) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	began := time.Now()
	conn, err := dial(dctx, "tcp", addr)
	if err != nil {
		c.stats.UpstreamCxConnectFail.Inc()
		if errors.Is(dctx.Err(), context.DeadlineExceeded) {
			c.stats.UpstreamCxConnectTimeout.Inc()
		}
		return nil, err
	}
	return &timedConn{Conn: conn, opened: began, took: time.Since(began)}, nil
}

// dialTo connects to addr, which is no endpoint of the cluster (a
// passthrough's original destination), recording the connection into the
// cluster's statistics as Dial does.
func (c *cluster) dialTo(ctx context.Context, dial dialFunc, addr string) (net.Conn, error) {
	conn, err := c.open(ctx, dial, addr)
	if err != nil {
		return nil, err
	}
	return c.counted(conn), nil
}

// countingConn counts an upstream connection's bytes and closes it into the
// cluster's statistics once.
type countingConn struct {
	net.Conn
	c      *cluster
	opened time.Time
	once   sync.Once
}

func (cc *countingConn) Read(b []byte) (int, error) {
	n, err := cc.Conn.Read(b)
	if n > 0 {
		cc.c.stats.UpstreamCxRxBytesTotal.Add(uint64(n))
	}
	return n, err
}

func (cc *countingConn) Write(b []byte) (int, error) {
	n, err := cc.Conn.Write(b)
	if n > 0 {
		cc.c.stats.UpstreamCxTxBytesTotal.Add(uint64(n))
	}
	return n, err
}

func (cc *countingConn) Close() error {
	cc.once.Do(func() { cc.c.stats.ConnectionClosed(time.Since(cc.opened)) })
	return cc.Conn.Close()
}

// CloseWrite half-closes the upstream connection when it supports it.
func (cc *countingConn) CloseWrite() error { return closeWrite(cc.Conn) }

// UnwrapTCP gives the splice fast path the connection and the counters.
func (cc *countingConn) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return cc.Conn, cc.c.stats.UpstreamCxRxBytesTotal, cc.c.stats.UpstreamCxTxBytesTotal
}
