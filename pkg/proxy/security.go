package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/proxy/sock"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Security is the mTLS material and mode of a proxy: the workload
// certificate and the trusted CAs (both replaced live, without touching
// established connections) and the mesh's mTLS state with its switch
// windows. The agent keeps it current; the proxy reads it per connection.
type Security struct {
	cert      atomic.Pointer[tls.Certificate]
	certReady chan struct{}
	readyOnce atomicOnce
	pool      atomic.Pointer[x509.CertPool]
	state     atomic.Pointer[mtlsState]
	now       func() time.Time

	// plain holds the plain-text connections inbounds admitted while the
	// mesh had no mTLS: switching mTLS on ends them with the switch
	// window, as those admitted during it (the reference's listeners drain
	// the connections of their old filter chains).
	plainMu sync.Mutex
	plain   map[*plainConn]struct{}
}

type mtlsState struct {
	mesh            string
	enabled         bool
	switchAt        time.Time
	permissiveUntil time.Time
}

// atomicOnce closes a channel once.
type atomicOnce struct{ done atomic.Bool }

// NewSecurity returns a Security without material: plain text everywhere.
func NewSecurity() *Security {
	return &Security{certReady: make(chan struct{}), now: time.Now}
}

// SetCertificate makes c the certificate of new handshakes.
func (s *Security) SetCertificate(c *tls.Certificate) {
	s.cert.Store(c)
	if s.readyOnce.done.CompareAndSwap(false, true) {
		close(s.certReady)
	}
}

// Certificate is the current workload certificate, or nil.
func (s *Security) Certificate() *tls.Certificate { return s.cert.Load() }

// SetTrustBundle makes the CAs of a PEM bundle the trusted ones. An empty
// bundle keeps the current pool (mTLS being switched off still needs it
// during the switch window). A bundle with any certificate that does not
// parse changes nothing.
func (s *Security) SetTrustBundle(bundle []byte) error {
	pool, err := ParseTrustBundle(bundle)
	if err != nil {
		return err
	}
	s.SetTrustPool(pool)
	return nil
}

// ParseTrustBundle reads the CAs of a PEM bundle, every one of which must
// parse; an empty bundle gives a nil pool.
func ParseTrustBundle(bundle []byte) (*x509.CertPool, error) {
	if len(bundle) == 0 {
		return nil, nil
	}
	pool, err := pki.Pool(bundle)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return pool, nil
}

// SetTrustPool makes pool the trusted CAs of new handshakes (nil keeps the
// current ones).
func (s *Security) SetTrustPool(pool *x509.CertPool) {
	if pool != nil {
		s.pool.Store(pool)
	}
}

// SetConfig takes the mesh's mTLS block (nil: no mTLS).
func (s *Security) SetConfig(mesh string, m *meshv1.MTLS) {
	if m == nil {
		s.state.Store(nil)
		return
	}
	st := &mtlsState{mesh: mesh, enabled: m.GetEnabled()}
	if m.GetSwitchAt() > 0 {
		st.switchAt = time.UnixMilli(m.GetSwitchAt())
	}
	if m.GetPermissiveUntil() > 0 {
		st.permissiveUntil = time.UnixMilli(m.GetPermissiveUntil())
	}
	old := s.state.Swap(st)
	if st.enabled && (old == nil || !old.enabled) {
		s.endPlain(st.permissiveUntil)
	}
}

// trackPlain admits a plain-text connection while the mesh has no mTLS:
// it ends when mTLS is switched on (endPlain). When mTLS was switched on
// meanwhile, the switch may have missed it: it ends with the window then,
// as the connections the switch found.
func (s *Security) trackPlain(conn net.Conn) net.Conn {
	c := &plainConn{Conn: conn, s: s}
	s.plainMu.Lock()
	if s.plain == nil {
		s.plain = map[*plainConn]struct{}{}
	}
	s.plain[c] = struct{}{}
	s.plainMu.Unlock()
	if st := s.state.Load(); st != nil && st.enabled {
		s.closeAt(st.permissiveUntil, []*plainConn{c})
	}
	return c
}

// endPlain closes the tracked plain-text connections at until.
func (s *Security) endPlain(until time.Time) {
	s.plainMu.Lock()
	conns := make([]*plainConn, 0, len(s.plain))
	for c := range s.plain {
		conns = append(conns, c)
	}
	s.plainMu.Unlock()
	s.closeAt(until, conns)
}

// closeAt closes conns at until (at once when it has passed).
func (s *Security) closeAt(until time.Time, conns []*plainConn) {
	if len(conns) == 0 {
		return
	}
	time.AfterFunc(max(until.Sub(s.now()), 0), func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
}

// plainConn is a tracked plain-text connection; it leaves the tracking
// when closed. ReadFrom and WriteTo keep those of the connection for the
// copies of an HTTP/1.1 upgrade tunnel (the TCP proxy hides them to count
// every byte).
type plainConn struct {
	net.Conn
	s    *Security
	once sync.Once
}

func (c *plainConn) Close() error {
	c.once.Do(func() {
		c.s.plainMu.Lock()
		delete(c.s.plain, c)
		c.s.plainMu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes when the connection supports it.
func (c *plainConn) CloseWrite() error { return closeWrite(c.Conn) }

// UnwrapTCP gives the splice fast path the tracked connection (Close stays
// the wrapper's).
func (c *plainConn) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return c.Conn, nil, nil
}

func (c *plainConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

func (c *plainConn) WriteTo(w io.Writer) (int64, error) { return io.Copy(w, c.Conn) }

// outboundTLS tells whether a new outbound connection uses mTLS: when mTLS
// is on (from its switch time on), or off but not yet at the switch time;
// and only with a certificate.
func (s *Security) outboundTLS() bool {
	st := s.state.Load()
	if st == nil || s.cert.Load() == nil || s.pool.Load() == nil {
		return false
	}
	now := s.now()
	if st.enabled {
		return !now.Before(st.switchAt)
	}
	return now.Before(st.switchAt)
}

// inbound modes.
type inboundMode int

const (
	inboundPlain inboundMode = iota
	// inboundPermissive accepts both mTLS and plain text.
	inboundPermissive
	// inboundStrict accepts mTLS only.
	inboundStrict
)

func (s *Security) inboundMode() inboundMode {
	st := s.state.Load()
	if st == nil {
		return inboundPlain
	}
	inWindow := s.now().Before(st.permissiveUntil)
	switch {
	case st.enabled && !inWindow:
		return inboundStrict
	case st.enabled || inWindow:
		return inboundPermissive
	default:
		return inboundPlain
	}
}

// plainDeadline is when plain-text connections admitted now must end: the
// end of the window while mTLS is being switched on.
func (s *Security) plainDeadline() (time.Time, bool) {
	st := s.state.Load()
	if st == nil || !st.enabled || !s.now().Before(st.permissiveUntil) {
		return time.Time{}, false
	}
	return st.permissiveUntil, true
}

func (s *Security) mesh() string {
	if st := s.state.Load(); st != nil {
		return st.mesh
	}
	return ""
}

// verifyPeer verifies a peer's chain against the trusted CAs and returns
// its identity, which must be of this proxy's mesh.
func (s *Security) verifyPeer(rawCerts [][]byte, usage x509.ExtKeyUsage) (ca.Identity, error) {
	pool := s.pool.Load()
	if pool == nil || len(rawCerts) == 0 {
		return ca.Identity{}, errors.New("no trusted CA or no peer certificate")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return ca.Identity{}, fmt.Errorf("peer certificate: %w", err)
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return ca.Identity{}, fmt.Errorf("peer certificate: %w", err)
	}
	id, err := ca.IdentityOf(certs[0])
	if err != nil {
		return ca.Identity{}, err
	}
	if m := s.mesh(); m != "" && id.Mesh != m {
		return ca.Identity{}, fmt.Errorf("peer belongs to mesh %q, not %q", id.Mesh, m)
	}
	return id, nil
}

// clientConfig is the TLS of a connection to an endpoint of service.
func (s *Security) clientConfig(service string, alpn []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: alpn,
		// Full records from the first byte: no browser waits on the first
		// one, and a bulk flow's records each cost a write.
		DynamicRecordSizingDisabled: true,
		// The peer is verified by its SPIFFE identity, not a host name.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyPeerCertificate.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := s.cert.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no workload certificate yet")
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := s.verifyPeer(raw, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if service != "" && !slices.Contains(id.Tags[resource.ServiceTag], service) {
				return fmt.Errorf("peer is not an endpoint of %q (it is %v)", service, id.Tags[resource.ServiceTag])
			}
			return nil
		},
	}
}

// certWait bounds how long a handshake waits for the first certificate.
const certWait = 10 * time.Second

// serverConfig is the TLS of an inbound connection: a client certificate of
// the mesh is required.
func (s *Security) serverConfig(alpn []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: alpn,
		// Full records from the first byte: no browser waits on the first
		// one, and a bulk flow's records each cost a write.
		DynamicRecordSizingDisabled: true,
		ClientAuth:                  tls.RequireAnyClientCert,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.cert.Load(); c != nil {
				return c, nil
			}
			select {
			case <-s.certReady:
				return s.cert.Load(), nil
			case <-hello.Context().Done():
				return nil, hello.Context().Err()
			case <-time.After(certWait):
				return nil, errors.New("no workload certificate yet")
			}
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := s.verifyPeer(raw, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// alpnFor is the ALPN of a protocol: HTTP/2 needs "h2" over TLS.
func alpnFor(protocol string) []string {
	switch protocol {
	case dpconfig.ProtocolHTTP2, dpconfig.ProtocolGRPC:
		return []string{"h2"}
	case dpconfig.ProtocolHTTP:
		return []string{"http/1.1"}
	}
	return nil
}

// handshakeTimeout bounds sniffing and the TLS handshake of a connection.
const handshakeTimeout = 10 * time.Second

// guard admits inbound connections: mTLS with a permitted identity, plain
// text when the mode allows it, or nothing.
type guard struct {
	sec     *Security
	alpn    []string
	allowed []*meshv1.Selector
	rbac    *stats.RBACStats
	ssl     *stats.Counter
	// plainFrom, when set, admits plain text from these addresses whatever
	// the mode (the metrics endpoint: the dataplane's own scrapes).
	plainFrom func(net.Addr) bool
	// provided, when set, is served to every TLS client without asking for
	// a client certificate (the metrics endpoint's providedTLS mode).
	provided *tls.Certificate
}

// admit returns the connection to serve (TLS-terminated when it came with
// TLS) and, for mTLS, the peer's identity; false when it must be closed.
func (g *guard) admit(conn net.Conn) (net.Conn, *ca.Identity, bool) {
	mode := g.sec.inboundMode()
	if g.provided != nil {
		mode = inboundPermissive
	}
	if mode == inboundPlain {
		if g.plainFrom != nil && g.plainFrom(conn.RemoteAddr()) {
			return conn, nil, true // the dataplane's own: plain whatever the mode
		}
		return g.sec.trackPlain(conn), nil, true
	}
	_ = conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(conn, 512)
	first, err := br.Peek(1)
	if err != nil {
		return nil, nil, false
	}
	pc := &peekedConn{Conn: conn, r: br}
	if first[0] != 0x16 { // not a TLS handshake record
		_ = conn.SetReadDeadline(time.Time{})
		if g.plainFrom != nil && g.plainFrom(conn.RemoteAddr()) {
			return pc, nil, true
		}
		if mode != inboundPermissive || g.provided != nil {
			return nil, nil, false
		}
		// Admitted while mTLS is being switched on: plain text ends with the
		// window, and is refused when the window ended while the first
		// bytes came (the mode was read at accept).
		if until, ok := g.sec.plainDeadline(); ok {
			time.AfterFunc(until.Sub(g.sec.now()), func() { _ = conn.Close() })
		} else if g.sec.inboundMode() == inboundStrict {
			return nil, nil, false
		}
		return pc, nil, true
	}
	var cfg *tls.Config
	if g.provided != nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: g.alpn, Certificates: []tls.Certificate{*g.provided}}
	} else {
		cfg = g.sec.serverConfig(g.alpn)
	}
	tc := tls.Server(sock.NewConn(pc), cfg) // the relays read and write the socket below TLS
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if g.rbac != nil && g.provided == nil {
			g.rbac.Record(false)
		}
		return nil, nil, false
	}
	_ = conn.SetReadDeadline(time.Time{})
	if g.ssl != nil {
		g.ssl.Inc()
	}
	if g.provided != nil {
		return tc, nil, true
	}
	peer := tc.ConnectionState().PeerCertificates
	id, err := ca.IdentityOf(peer[0])
	allowed := err == nil && g.permits(&id)
	if g.rbac != nil {
		g.rbac.Record(allowed)
	}
	if !allowed {
		_ = tc.Close()
		return nil, nil, false
	}
	return tc, &id, true
}

// permits tells whether a peer identity may connect under this guard.
func (g *guard) permits(id *ca.Identity) bool {
	return dpconfig.Allowed(g.allowed, id.Tags)
}

// peers remembers the identities of admitted mTLS connections, so that a
// change of permissions also ends the connections it no longer allows.
type peers struct {
	mu    sync.Mutex
	conns map[net.Conn]*ca.Identity
}

func (p *peers) add(c net.Conn, id *ca.Identity) {
	if id == nil {
		return
	}
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[net.Conn]*ca.Identity{}
	}
	p.conns[c] = id
	p.mu.Unlock()
}

func (p *peers) remove(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// recheck closes the connections g no longer permits, counting them denied.
func (p *peers) recheck(g *guard) {
	p.mu.Lock()
	var gone []net.Conn
	for c, id := range p.conns {
		if g == nil || !g.permits(id) {
			gone = append(gone, c)
			delete(p.conns, c)
		}
	}
	p.mu.Unlock()
	for _, c := range gone {
		if g != nil && g.rbac != nil {
			g.rbac.Record(false)
		}
		_ = c.Close()
	}
}

// peekedConn reads first what was peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes when the connection supports it.
func (c *peekedConn) CloseWrite() error { return closeWrite(c.Conn) }

// UnwrapTCP gives the splice fast path the connection below; what was
// peeked is handed on first (ReadAhead).
func (c *peekedConn) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return c.Conn, nil, nil
}

// ReadAhead is how many peeked bytes Read still hands out.
func (c *peekedConn) ReadAhead() int { return c.r.Buffered() }
