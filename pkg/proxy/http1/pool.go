package http1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/kumametrics/mesh/pkg/netserve"
	"net"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Buffer sizes. A downstream connection holds one reader and one writer
// while it is open (pooled across connections); an upstream connection
// holds its own pair for its whole life, so that taking it from the idle
// pool costs nothing.
const (
	readBufSize  = 16 << 10
	writeBufSize = 8 << 10
)

// upConn is one upstream connection. It counts the bytes it moves; the
// counts are added to the cluster's statistics once per request (flush), so
// the data path does one atomic add per direction and request.
type upConn struct {
	nc      net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	ep      *endpoint
	cluster *stats.ClusterStats

	created   time.Time
	idleSince time.Time
	rxTotal   uint64 // bytes read over the connection's life
	rx, tx    uint64 // bytes not yet added to the statistics
	deadline  bool   // a read deadline is set
	stall     netserve.StallGuard
}

func (c *upConn) Read(b []byte) (int, error) {
	n, err := c.nc.Read(b)
	c.rx += uint64(n)
	c.rxTotal += uint64(n)
	return n, err
}

func (c *upConn) Write(b []byte) (int, error) {
	c.stall.Arm(c.nc)
	n, err := c.nc.Write(b)
	c.tx += uint64(n)
	return n, err
}

// flushStats adds the counted bytes to the cluster's statistics.
func (c *upConn) flushStats() {
	if c.rx > 0 {
		c.cluster.UpstreamCxRxBytesTotal.Add(c.rx)
		c.rx = 0
	}
	if c.tx > 0 {
		c.cluster.UpstreamCxTxBytesTotal.Add(c.tx)
		c.tx = 0
	}
}

// close closes the connection and records its end.
func (c *upConn) close() {
	_ = c.nc.Close()
	c.flushStats()
	c.cluster.ConnectionClosed(time.Since(c.created))
}

// setReadDeadline sets or clears (zero t) the read deadline, skipping the
// call when there is nothing to clear.
func (c *upConn) setReadDeadline(t time.Time) {
	if t.IsZero() && !c.deadline {
		return
	}
	_ = c.nc.SetReadDeadline(t)
	c.deadline = !t.IsZero()
}

// endpoint is the idle list of one upstream endpoint, most recently used
// last. An endpoint removed by RetainEndpoints is marked so that its
// connections still in use are closed instead of returned.
type endpoint struct {
	addr    string
	idle    []*upConn
	removed bool
}

// pool keeps idle upstream connections per endpoint. A request takes one
// of the endpoint the core picked for it; without a picker, taking rotates
// over the endpoints that have idle connections.
type pool struct {
	mu      sync.Mutex
	eps     map[string]*endpoint
	order   []*endpoint
	next    int
	idle    int
	closed  bool
	timer   *time.Timer
	armed   bool
	timeout func() time.Duration // current idle timeout
}

func newPool(timeout func() time.Duration) *pool {
	return &pool{eps: make(map[string]*endpoint), timeout: timeout}
}

// get returns an idle connection to addr (to any endpoint when addr is
// empty), or nil. Connections idle for longer than the idle timeout, and
// those reusable rejects, are closed on the way.
func (p *pool) get(now time.Time, addr string, reusable func(net.Conn) bool) *upConn {
	for {
		c := p.take(now, addr)
		if c == nil || reusable == nil || reusable(c.nc) {
			return c
		}
		c.close()
	}
}

func (p *pool) take(now time.Time, addr string) *upConn {
	p.mu.Lock()
	if p.idle == 0 {
		p.mu.Unlock()
		return nil
	}
	timeout := p.timeout()
	var stale []*upConn
	var got *upConn
	take := func(ep *endpoint) {
		if len(ep.idle) == 0 {
			return
		}
		last := ep.idle[len(ep.idle)-1]
		if now.Sub(last.idleSince) >= timeout {
			// The newest is stale, so all are.
			stale = append(stale, ep.idle...)
			p.idle -= len(ep.idle)
			clear(ep.idle)
			ep.idle = ep.idle[:0]
			return
		}
		ep.idle[len(ep.idle)-1] = nil
		ep.idle = ep.idle[:len(ep.idle)-1]
		p.idle--
		got = last
	}
	if addr != "" {
		if ep := p.eps[addr]; ep != nil {
			take(ep)
		}
	} else {
		for i := 0; i < len(p.order) && got == nil; i++ {
			j := (p.next + i) % len(p.order)
			take(p.order[j])
			if got != nil {
				p.next = j + 1
			}
		}
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
	return got
}

// endpoint returns the idle list of addr, creating it.
func (p *pool) endpoint(addr string) *endpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep := p.eps[addr]
	if ep == nil {
		ep = &endpoint{addr: addr}
		p.eps[addr] = ep
		p.order = append(p.order, ep)
	}
	return ep
}

// put returns c to its endpoint's idle list, or closes it when the list is
// full, the endpoint went away or the pool is closed.
func (p *pool) put(c *upConn, now time.Time, max int) {
	c.idleSince = now
	p.mu.Lock()
	if p.closed || c.ep.removed || len(c.ep.idle) >= max {
		p.mu.Unlock()
		c.close()
		return
	}
	c.ep.idle = append(c.ep.idle, c)
	p.idle++
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.timeout(), p.sweep)
		} else {
			p.timer.Reset(p.timeout())
		}
	}
	p.mu.Unlock()
}

// sweep closes the connections that have been idle for the idle timeout. It
// runs from a timer while there are idle connections.
func (p *pool) sweep() {
	now := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	timeout := p.timeout()
	var stale []*upConn
	for _, ep := range p.order {
		k := 0
		for k < len(ep.idle) && now.Sub(ep.idle[k].idleSince) >= timeout {
			k++
		}
		if k > 0 {
			stale = append(stale, ep.idle[:k]...)
			n := copy(ep.idle, ep.idle[k:])
			clear(ep.idle[n:])
			ep.idle = ep.idle[:n]
			p.idle -= k
		}
	}
	p.armed = p.idle > 0
	if p.armed {
		p.timer.Reset(timeout / 2)
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// retain removes the endpoints keep rejects and closes their idle
// connections.
func (p *pool) retain(keep func(string) bool) {
	var gone []*upConn
	p.mu.Lock()
	order := p.order[:0]
	for _, ep := range p.order {
		if keep(ep.addr) {
			order = append(order, ep)
			continue
		}
		ep.removed = true
		delete(p.eps, ep.addr)
		gone = append(gone, ep.idle...)
		p.idle -= len(ep.idle)
		ep.idle = nil
	}
	clear(p.order[len(order):])
	p.order = order
	p.next = 0
	p.mu.Unlock()
	for _, c := range gone {
		c.close()
	}
}

// closeAll closes every idle connection; with final set the pool takes no
// connection back afterwards.
func (p *pool) closeAll(final bool) {
	var all []*upConn
	p.mu.Lock()
	if final {
		p.closed = true
		if p.timer != nil {
			p.timer.Stop()
		}
	}
	for _, ep := range p.order {
		all = append(all, ep.idle...)
		clear(ep.idle)
		ep.idle = ep.idle[:0]
	}
	p.idle = 0
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

// dial opens a new upstream connection through cfg.Dial, starting with
// endpoint first, and records it.
func (p *Proxy) dial(cfg *config, first string) (*upConn, error) {
	if cfg.Dial == nil {
		return nil, errors.New("http1: no upstream")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(p.ctx, cfg.ConnectTimeout)
	nc, addr, err := cfg.Dial(ctx, first)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("http1: connect to upstream: %w", err)
	}
	c := &upConn{
		nc:      nc,
		cluster: cfg.Cluster,
		created: time.Now(),
		stall:   netserve.StallGuard{Timeout: cfg.IdleTimeout},
	}
	c.br = bufio.NewReaderSize(c, readBufSize)
	c.bw = bufio.NewWriterSize(c, writeBufSize)
	c.ep = p.pool.endpoint(addr)
	cfg.Cluster.ConnectionOpened(c.created.Sub(start))
	return c, nil
}
