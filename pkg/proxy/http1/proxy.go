package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Defaults applied to zero Config fields.
const (
	DefaultMaxIdlePerEndpoint    = 64
	DefaultIdleTimeout           = 60 * time.Second
	DefaultRequestHeaderTimeout  = 30 * time.Second
	DefaultResponseHeaderTimeout = 15 * time.Second
	DefaultConnectTimeout        = 5 * time.Second
	DefaultMaxHeaderBytes        = 64 << 10
)

// expectContinueWait is how long the proxy waits for the upstream to answer
// an Expect: 100-continue before it sends the body anyway (RFC 9110 §10.1.1
// lets a client proceed without waiting indefinitely).
const expectContinueWait = time.Second

// Config is what the engine needs from the proxy core. Zero limits and
// timeouts take the Default… values.
type Config struct {
	// Pick names the endpoint of the next request: the core's load
	// balancing (round robin over the healthy endpoints). The request takes
	// an idle connection to that endpoint, or Dial opens one. A nil Pick
	// lets any idle connection serve.
	Pick func() string
	// Dial opens a connection to an upstream endpoint of the cluster,
	// starting with first (the picked one; "" lets the core choose) and
	// trying the next ones on a connect failure, and returns the address
	// of the endpoint it reached (idle connections are pooled per
	// endpoint). A nil Dial means no upstream: every request is answered 503.
	Dial func(ctx context.Context, first string) (conn net.Conn, endpoint string, err error)
	// Reusable, when set, tells whether a pooled upstream connection may
	// serve another request (false: it is closed and another is taken; the
	// core uses it to retire connections of a superseded security mode).
	Reusable func(conn net.Conn) bool
	// Cluster records the upstream side; Listener the downstream side
	// (including downstream_cx_total/active of the connections given to
	// ServeConn). Nil bundles record into a private store.
	Cluster  *stats.ClusterStats
	Listener *stats.HTTPConnManagerStats

	// MaxIdlePerEndpoint bounds the idle upstream connections kept per endpoint.
	MaxIdlePerEndpoint int
	// IdleTimeout closes idle upstream connections and idle downstream
	// keep-alive connections. It also bounds each wait for request body
	// bytes, and how long a write may block on a peer (client or upstream)
	// that stopped reading: then that connection is given up.
	IdleTimeout time.Duration
	// RequestHeaderTimeout bounds reading a request head once its first byte
	// arrived (408 when it passes).
	RequestHeaderTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the upstream's response head
	// after the request was sent (504 and upstream_rq_timeout when it passes).
	ResponseHeaderTimeout time.Duration
	// ConnectTimeout bounds one Dial.
	ConnectTimeout time.Duration
	// MaxHeaderBytes bounds a request or response head and a trailer
	// section (431 for a request).
	MaxHeaderBytes int

	Log *slog.Logger
	// Panics, when set, recovers and reports a panic of a session's
	// goroutines, which then ends only that connection. When nil, a panic
	// of ServeConn's goroutine goes on to the caller (after the session's
	// bookkeeping ran).
	Panics *netserve.Panics
}

// config is a Config with its defaults applied; it is immutable once stored.
type config struct{ Config }

func newConfig(c Config) *config {
	if c.MaxIdlePerEndpoint <= 0 {
		c.MaxIdlePerEndpoint = DefaultMaxIdlePerEndpoint
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.RequestHeaderTimeout <= 0 {
		c.RequestHeaderTimeout = DefaultRequestHeaderTimeout
	}
	if c.ResponseHeaderTimeout <= 0 {
		c.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
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

// Proxy forwards HTTP/1.1 requests from downstream connections to one
// upstream cluster. It is safe for concurrent use.
type Proxy struct {
	cfg    atomic.Pointer[config]
	pool   *pool
	ctx    context.Context // canceled by Close; bounds dials
	cancel context.CancelFunc

	draining atomic.Bool
	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
	drained  chan struct{} // closed when draining and no session is left
}

// New returns a proxy for cfg.
func New(cfg Config) *Proxy {
	p := &Proxy{sessions: make(map[*session]struct{})}
	p.cfg.Store(newConfig(cfg))
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.pool = newPool(func() time.Duration { return p.cfg.Load().IdleTimeout })
	return p
}

// Update replaces the configuration. Requests in flight finish with what
// they use; later requests use cfg. Pooled connections stay pooled (call
// RetainEndpoints to drop those of endpoints that went away).
func (p *Proxy) Update(cfg Config) { p.cfg.Store(newConfig(cfg)) }

// RetainEndpoints closes the idle upstream connections of every endpoint
// keep rejects; connections of such endpoints still in use are closed when
// their request ends.
func (p *Proxy) RetainEndpoints(keep func(endpoint string) bool) { p.pool.retain(keep) }

// Drain stops taking requests: idle keep-alive connections close at once,
// busy ones after their current request (answered with Connection: close),
// and connections given to ServeConn later are closed unserved. It returns
// when no downstream connection is left or ctx is done. Upgraded
// connections (WebSocket) last until they end or Close.
func (p *Proxy) Drain(ctx context.Context) error {
	p.draining.Store(true)
	p.mu.Lock()
	for s := range p.sessions {
		s.poke()
	}
	if len(p.sessions) == 0 {
		p.mu.Unlock()
		p.pool.closeAll(false)
		return nil
	}
	if p.drained == nil {
		p.drained = make(chan struct{})
	}
	done := p.drained
	p.mu.Unlock()
	select {
	case <-done:
		p.pool.closeAll(false)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every downstream and idle upstream connection now. Requests
// in flight fail; their ServeConn calls return soon after.
func (p *Proxy) Close() {
	p.draining.Store(true)
	p.cancel()
	p.mu.Lock()
	p.closed = true
	for s := range p.sessions {
		_ = s.conn.Close()
	}
	p.mu.Unlock()
	p.pool.closeAll(true)
}

// session is one downstream connection being served. Sessions are pooled
// with their buffers.
type session struct {
	p        *Proxy
	conn     net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	req      message
	resp     message
	external bool
	served   int
	linger   bool // close gracefully: the client may still be sending
	stall    netserve.StallGuard

	mu   sync.Mutex // guards idle against Drain's poke
	idle bool
}

var sessionPool = sync.Pool{New: func() any {
	return &session{
		br: bufio.NewReaderSize(nil, readBufSize),
		bw: bufio.NewWriterSize(nil, writeBufSize),
	}
}}

// poke wakes a session that waits for its next request, so that it sees
// the drain and closes.
func (s *session) poke() {
	s.mu.Lock()
	if s.idle {
		_ = s.conn.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
}

// ServeConn serves one downstream connection until it closes, fails, or the
// proxy drains; it closes conn before it returns. external tells whether
// the client is outside the proxy's host (external_upstream_rq_xx versus
// internal_upstream_rq_xx).
func (p *Proxy) ServeConn(conn net.Conn, external bool) {
	s := sessionPool.Get().(*session)
	s.p, s.conn, s.external, s.served, s.linger = p, conn, external, 0, false
	p.mu.Lock()
	if p.closed || p.draining.Load() {
		p.mu.Unlock()
		_ = conn.Close()
		s.p, s.conn = nil, nil
		sessionPool.Put(s)
		return
	}
	p.sessions[s] = struct{}{}
	p.mu.Unlock()

	cfg := p.cfg.Load()
	lst := cfg.Listener
	lst.ConnectionOpened()
	s.stall = netserve.StallGuard{Timeout: cfg.IdleTimeout}
	s.br.Reset(conn)
	s.bw.Reset(s)
	completed := false
	defer func() {
		// Also when serving panicked: the connection ends, and only it.
		_ = conn.Close()
		lst.ConnectionClosed()
		p.mu.Lock()
		delete(p.sessions, s)
		if len(p.sessions) == 0 && p.drained != nil {
			close(p.drained)
			p.drained = nil
		}
		p.mu.Unlock()
		if !completed {
			return // a session left in an unknown state is not reused
		}
		s.br.Reset(nil)
		s.bw.Reset(nil)
		s.p, s.conn = nil, nil
		sessionPool.Put(s)
	}()
	if cfg.Panics != nil {
		defer cfg.Panics.Recover(conn) // before the bookkeeping above
	}
	s.serve()
	if s.linger {
		lingerClose(conn)
	}
	completed = true
}

// Write writes to the client, bounded by the stall guard (the session's
// buffered writer writes through it).
func (s *session) Write(b []byte) (int, error) {
	s.stall.Arm(s.conn)
	return s.conn.Write(b)
}

// serve runs the request loop of a session.
//
// yieldBeforeRead: before a read that usually has to wait (the client's next
// request, the upstream's response head) a session yields to the other
// runnable sessions. Go tries a read before it parks a goroutine in the
// network poller, so reading at once mostly costs a read that fails with
// EAGAIN, a park and a wake-up. After the yield the bytes are mostly there:
// at saturation this removed ~0.95 failed read per request (strace: 2.94 →
// 2.00 reads per request, as haproxy's 2 recvfrom) and cut the proxy's CPU
// per request by ~10%. With nothing else runnable the yield returns at once.
func (s *session) serve() {
	p := s.p
	for {
		if s.br.Buffered() == 0 {
			// Wait for the next request, as an idle keep-alive connection.
			s.mu.Lock()
			if p.draining.Load() {
				s.mu.Unlock()
				return
			}
			s.idle = true
			s.mu.Unlock()
			_ = s.conn.SetReadDeadline(time.Now().Add(p.cfg.Load().IdleTimeout))
			// The next request is rarely there yet: let the other sessions run
			// first (see yieldBeforeRead).
			runtime.Gosched()
			_, err := s.br.Peek(1)
			s.mu.Lock()
			s.idle = false
			s.mu.Unlock()
			if err != nil {
				return
			}
		} else if p.draining.Load() {
			return // a pipelined request after draining began
		}
		// The configuration in force when the request arrived serves it.
		cfg := p.cfg.Load()
		start := time.Now()
		if !headComplete(s.br) {
			_ = s.conn.SetReadDeadline(start.Add(cfg.RequestHeaderTimeout))
		}
		err := readHead(s.br, &s.req, cfg.MaxHeaderBytes)
		if err == nil {
			err = parseRequest(&s.req)
		}
		if err != nil {
			s.headError(cfg, err, start)
			return
		}
		s.served++
		if !s.forward(cfg, start) {
			return
		}
	}
}

// headError answers a request head that could not be read or parsed, when
// the client is still there to read the answer.
func (s *session) headError(cfg *config, err error, start time.Time) {
	var status int
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		status = 408
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return
	default:
		var pe *parseError
		if !errors.As(err, &pe) {
			return // the connection failed
		}
		status = pe.status
	}
	if cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		cfg.Log.Debug("rejected request", "status", status, "err", err)
	}
	s.linger = true
	cfg.Listener.RequestDone(status, time.Since(start))
	s.writeLocal(status, "", true)
	_ = s.bw.Flush()
}

// Bounds of the graceful close after an error answer.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerBytes   = 256 << 10
)

// lingerClose half-closes conn and reads what the client still sends for a
// moment, so that closing with unread input does not reset the connection
// before the client read the error answer.
func lingerClose(conn net.Conn) {
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, conn, lingerBytes)
}
