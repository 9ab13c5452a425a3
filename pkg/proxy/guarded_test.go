package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// serveGuarded serves "ok" behind a guarded listener on 127.0.0.2.
func serveGuarded(t *testing.T, p *EndpointPolicy) (*GuardedListener, string) {
	t.Helper()
	raw := listenOn2(t)
	return serveGuardedOn(t, raw, p, GuardOptions{}), raw.Addr().String()
}

func listenOn2(t *testing.T) net.Listener {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	return raw
}

// serveGuardedOn serves "ok" behind ln guarded by p.
func serveGuardedOn(t *testing.T, ln net.Listener, p *EndpointPolicy, opts GuardOptions) *GuardedListener {
	t.Helper()
	gl := GuardListener(ln, p, opts)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })}
	go func() { _ = srv.Serve(gl) }()
	t.Cleanup(func() { _ = srv.Close() })
	return gl
}

// operatorCert is a server certificate for 127.0.0.2 and the CA that
// issued it (the operator's, for providedTLS).
func operatorCert(t *testing.T) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	caPair, err := pki.NewCA("operator", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	leaf, err := pki.Issue(caPair, pki.Leaf{CommonName: "metrics", IPs: []net.IP{net.ParseIP("127.0.0.2")}, Server: true, Lifetime: time.Hour}, time.Now())
	require.NoError(t, err)
	cert, err := leaf.TLS()
	require.NoError(t, err)
	return cert, caPair.Cert
}

// fetchFrom GETs url from source address src, with tlsCfg when not nil.
func fetchFrom(src string, url string, tlsCfg *tls.Config) (string, error) {
	tr := &http.Transport{TLSClientConfig: tlsCfg, DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func TestProvidedTLSEndpoint(t *testing.T) {
	cert, ca := operatorCert(t)
	_, addr := serveGuarded(t, &EndpointPolicy{Provided: &cert, Own: []net.IP{net.ParseIP("127.0.0.2")}})
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	body, err := fetchFrom("127.0.0.9", "https://"+addr+"/", &tls.Config{RootCAs: pool})
	require.NoError(t, err, "TLS with the operator's certificate, no client certificate asked")
	require.Equal(t, "ok", body)
	_, err = fetchFrom("127.0.0.9", "http://"+addr+"/", nil)
	require.Error(t, err, "plain text from elsewhere is refused")
	body, err = fetchFrom("127.0.0.2", "http://"+addr+"/", nil)
	require.NoError(t, err, "the dataplane's own address may scrape in plain text")
	require.Equal(t, "ok", body)
}

func TestMTLSEndpointPolicyChanges(t *testing.T) {
	m := newMeshCA(t)
	sec := NewSecurity()
	require.NoError(t, sec.SetTrustBundle(m.pair.CertPEM))
	sec.SetCertificate(m.workload("dataplane-metrics", time.Hour))
	sec.SetConfig("default", &meshv1.MTLS{Enabled: true})
	st := stats.NewStore()
	rbac := stats.NewRBACStats(st, "metrics")
	allow := func(svc string) *EndpointPolicy {
		return &EndpointPolicy{Security: sec, RBAC: rbac, Own: []net.IP{net.ParseIP("127.0.0.2")},
			Allowed: []*meshv1.Selector{{Match: map[string]string{resource.ServiceTag: svc}}}}
	}
	gl, addr := serveGuarded(t, allow("prometheus"))
	scraper := m.workload("prometheus", time.Hour)
	// The server's policy is under test, not the client's checks of it.
	cfg := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*scraper}} //nolint:gosec // test client.

	body, err := fetchFrom("127.0.0.9", "https://"+addr+"/", cfg)
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	_, err = fetchFrom("127.0.0.9", "https://"+addr+"/", &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test client.
	require.Error(t, err, "no client certificate")
	// The client closed its connection; once the server saw it, a policy
	// change has no served connection to end.
	require.Eventually(t, func() bool {
		gl.peers.mu.Lock()
		defer gl.peers.mu.Unlock()
		return len(gl.peers.conns) == 0
	}, waitTimeout, time.Millisecond)
	gl.SetPolicy(allow("someone-else"))
	_, err = fetchFrom("127.0.0.9", "https://"+addr+"/", cfg)
	require.Error(t, err, "not permitted any more")
	// The server counts a denial after the handshake the client saw fail.
	pollCounter(t, st, "rbac.metrics.allowed", 1)
	pollCounter(t, st, "rbac.metrics.denied", 2)
	gl.SetPolicy(nil)
	body, err = fetchFrom("127.0.0.9", "http://"+addr+"/", nil)
	require.NoError(t, err, "no policy: plain text")
	require.Equal(t, "ok", body)
}

// The metrics endpoint's listener rides out fd exhaustion too.
func TestGuardedListenerServesAgainAfterFileDescriptorExhaustion(t *testing.T) {
	raw := listenOn2(t)
	ls := stats.NewListenerStats(stats.NewStore(), "kuma:metrics:prometheus")
	serveGuardedOn(t, netservetest.FailAccepts(raw, syscall.EMFILE, 4), nil, GuardOptions{Name: "kuma:metrics:prometheus", Stats: ls})
	body, err := fetchFrom("127.0.0.9", "http://"+raw.Addr().String()+"/", nil)
	require.NoError(t, err)
	require.Equal(t, "ok", body)
	require.EqualValues(t, 4, ls.AcceptErrors.Value())
}

// A permanent accept error is what the server's Serve returns.
func TestGuardedListenerPermanentError(t *testing.T) {
	raw := listenOn2(t)
	defer raw.Close()
	gl := GuardListener(netservetest.FailAccepts(raw, syscall.EINVAL, -1), nil, GuardOptions{})
	srv := &http.Server{Handler: http.NotFoundHandler()}
	require.ErrorIs(t, srv.Serve(gl), syscall.EINVAL)
}

// panicAddrConn panics when asked its peer's address (as a bug in admitting
// a connection would).
type panicAddrConn struct{ net.Conn }

func (panicAddrConn) RemoteAddr() net.Addr { panic("injected: no remote address") }

type panicFirstListener struct {
	net.Listener
	done atomic.Bool
}

func (l *panicFirstListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.done.CompareAndSwap(false, true) {
		return panicAddrConn{c}, nil
	}
	return c, err
}

// A panic while admitting a connection ends that connection only.
func TestGuardedListenerAdmitPanic(t *testing.T) {
	cert, _ := operatorCert(t)
	raw := listenOn2(t)
	ls := stats.NewListenerStats(stats.NewStore(), "kuma:metrics:prometheus")
	// Plain text from the own address: the guard asks the peer's address.
	serveGuardedOn(t, &panicFirstListener{Listener: raw}, &EndpointPolicy{Provided: &cert, Own: []net.IP{net.ParseIP("127.0.0.2")}},
		GuardOptions{Name: "kuma:metrics:prometheus", Stats: ls})
	_, err := fetchFrom("127.0.0.2", "http://"+raw.Addr().String()+"/", nil)
	require.Error(t, err, "the panicking connection is closed")
	require.EqualValues(t, 1, ls.ConnectionPanics.Value())
	body, err := fetchFrom("127.0.0.2", "http://"+raw.Addr().String()+"/", nil)
	require.NoError(t, err, "the next connection is served")
	require.Equal(t, "ok", body)
}
