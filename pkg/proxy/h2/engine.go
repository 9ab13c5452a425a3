package h2

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Defaults applied to zero Config fields.
const (
	DefaultIdleTimeout    = 5 * time.Minute
	DefaultConnectTimeout = 5 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
)

// Config is what the engine needs from the proxy core.
type Config struct {
	// Pick names the endpoint of the next request (the core's load
	// balancing); "" lets Dial choose.
	Pick func() string
	// Dial opens a connection to an endpoint of the cluster, starting with
	// first and trying the others on a connect failure; the connection
	// records its own statistics (connect time, bytes, length). It returns
	// the endpoint reached.
	Dial func(ctx context.Context, first string) (conn net.Conn, endpoint string, err error)
	// Reusable, when set, tells whether an upstream connection may take new
	// streams (false retires it: it closes once its streams are done).
	Reusable func(conn net.Conn) bool
	// Cluster records the upstream side; Listener the downstream side.
	Cluster  *stats.ClusterStats
	Listener *stats.HTTPConnManagerStats

	// IdleTimeout closes a connection, either side, without streams for
	// this long; it also bounds how long a write may block on a peer that
	// stopped reading.
	IdleTimeout    time.Duration
	ConnectTimeout time.Duration
	// MaxHeaderBytes bounds a request's header list
	// (SETTINGS_MAX_HEADER_LIST_SIZE; 431 past it).
	MaxHeaderBytes int

	Log *slog.Logger
	// Panics, when set, recovers a panic of a connection's goroutines,
	// which then ends only that connection.
	Panics *netserve.Panics
}

type config struct{ Config }

func newConfig(c Config) *config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	c.Cluster, c.Listener = stats.HTTPBundles(c.Cluster, c.Listener)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &config{c}
}

// Proxy forwards the streams of HTTP/2 client connections to one upstream
// cluster over multiplexed upstream connections. It is safe for concurrent
// use.
type Proxy struct {
	cfg    atomic.Pointer[config]
	ctx    context.Context // canceled by Close; bounds dials
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	draining bool
	downs    map[*downConn]struct{}
	ups      map[string][]*upConn // by the endpoint picked for them
	streams  int
	drained  chan struct{} // closed when draining and no stream is left

	// throughConn makes every connection read through net.Conn, never on
	// the socket; writerOnly makes every connection's output leave through
	// its writer goroutine (benchmarks comparing them; set before serving).
	throughConn, writerOnly bool
}

// New returns a proxy for cfg.
func New(cfg Config) *Proxy {
	p := &Proxy{downs: make(map[*downConn]struct{}), ups: make(map[string][]*upConn)}
	p.cfg.Store(newConfig(cfg))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// ServeConn serves one client connection (HTTP/2 with prior knowledge)
// until it ends, and closes it. external tells whether the client is
// outside the proxy's host.
func (p *Proxy) ServeConn(nc net.Conn, external bool) {
	cfg := p.cfg.Load()
	d := &downConn{p: p, external: external}
	d.conn.init(nc, downConnWindow, cfg.IdleTimeout)
	if !p.throughConn {
		d.socketReads(nc)
	}
	if !p.writerOnly {
		d.socketWrites(nc)
	}
	p.mu.Lock()
	if p.closed || p.draining {
		p.mu.Unlock()
		_ = nc.Close()
		return
	}
	p.downs[d] = struct{}{}
	p.mu.Unlock()
	cfg.Listener.ConnectionOpened()
	_ = nc.SetReadDeadline(time.Now().Add(cfg.IdleTimeout))
	var err error
	defer func() {
		d.end(err)
		cfg.Listener.ConnectionClosed()
		p.mu.Lock()
		delete(p.downs, d)
		p.mu.Unlock()
	}()
	if cfg.Panics != nil {
		defer cfg.Panics.Recover(nil) // before end: the connection ends, and only it
	}
	err = d.serve()
}

// end closes a client connection after serve returned: a protocol error is
// reported with GOAWAY, and every stream still open is reset upstream.
func (d *downConn) end(err error) {
	var ce connError
	d.mu.Lock()
	if errors.As(err, &ce) {
		d.out = appendGoAway(d.out, d.lastID, ce.code, ce.reason)
	} else if errors.Is(err, errIdle) {
		d.out = appendGoAway(d.out, d.lastID, http2.ErrCodeNo, "")
	}
	open := make([]*stream, 0, len(d.streams))
	for _, h := range d.streams {
		open = append(open, h.s)
	}
	d.mu.Unlock()
	d.batch.flush()
	d.close()
	var b batch
	for _, s := range open {
		s.txReset.Store(s.done.Load()&doneResp == 0)
		d.mu.Lock()
		s.toDown.sent = true
		s.reqEnd = true
		d.mu.Unlock()
		s.resetUp(&b, http2.ErrCodeCancel)
		s.markDone(doneBoth)
	}
	b.flush()
	d.waitWriter()
	_ = d.nc.Close()
}

// open starts a proxied stream for a new request and gives it to an
// upstream connection.
func (p *Proxy) open(d *downConn, id uint32, fields []hpack.HeaderField, clen int64, end bool) {
	cfg := p.cfg.Load()
	s := &stream{p: p, down: d, clen: clen, began: time.Now(), external: d.external}
	s.toDown = half{c: &d.conn, s: s, id: id}
	s.toUp = half{s: s}
	s.head = fields
	p.mu.Lock()
	p.streams++
	p.mu.Unlock()
	cfg.Cluster.UpstreamRqActive.Inc()
	d.mu.Lock()
	s.toDown.window = d.initWindow
	s.downIn.left = streamWindow
	s.reqEnd = end
	d.streams[id] = &s.toDown
	if d.active == 0 {
		_ = d.nc.SetReadDeadline(time.Time{})
	}
	d.active++
	d.mu.Unlock()
	u := p.upstreamFor(cfg)
	s.up = u
	s.toUp.c = &u.conn
	u.attach(&d.batch, s, end)
}

// streamEnded counts a stream off, for Drain.
func (p *Proxy) streamEnded() {
	p.mu.Lock()
	p.streams--
	if p.streams == 0 && p.drained != nil {
		close(p.drained)
		p.drained = nil
	}
	p.mu.Unlock()
}

// Drain tells every client with GOAWAY that no new stream is taken, and
// waits until the streams in flight are done (their connections then
// close) or ctx ends.
func (p *Proxy) Drain(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	downs := make([]*downConn, 0, len(p.downs))
	for d := range p.downs {
		downs = append(downs, d)
	}
	var done chan struct{}
	if p.streams > 0 {
		if p.drained == nil {
			p.drained = make(chan struct{})
		}
		done = p.drained
	}
	p.mu.Unlock()
	for _, d := range downs {
		d.drain()
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, d := range downs {
		d.close()
	}
	p.closeIdleUpstreams(func(string) bool { return false })
	return nil
}

// Close closes every connection now; streams in flight fail.
func (p *Proxy) Close() {
	p.cancel()
	p.mu.Lock()
	p.closed = true
	p.draining = true
	downs := make([]*downConn, 0, len(p.downs))
	for d := range p.downs {
		downs = append(downs, d)
	}
	var ups []*upConn
	for _, list := range p.ups {
		ups = append(ups, list...)
	}
	p.mu.Unlock()
	for _, d := range downs {
		d.closeNow()
	}
	for _, u := range ups {
		u.closeNow()
	}
}

// RetainEndpoints retires the upstream connections of every endpoint keep
// rejects: they take no new streams and close once theirs are done.
func (p *Proxy) RetainEndpoints(keep func(endpoint string) bool) {
	p.closeIdleUpstreams(keep)
}

func (p *Proxy) closeIdleUpstreams(keep func(string) bool) {
	p.mu.Lock()
	var retire []*upConn
	for ep, list := range p.ups {
		for _, u := range list {
			if !keep(ep) || !keep(u.endpoint) {
				retire = append(retire, u)
			}
		}
	}
	p.mu.Unlock()
	for _, u := range retire {
		u.retire()
	}
}
