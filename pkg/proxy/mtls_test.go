package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// meshCA issues workload certificates of mesh "default".
type meshCA struct {
	t    testing.TB
	pair *pki.KeyPair
}

func newMeshCA(t testing.TB) *meshCA {
	p, err := pki.NewCA("default/ca", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	return &meshCA{t: t, pair: p}
}

func (m *meshCA) workload(service string, lifetime time.Duration) *tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(m.t, err)
	leaf, err := ca.IssueWorkload(m.pair, ca.Subject{Mesh: "default", Tags: map[string][]string{resource.ServiceTag: {service}}}, key.Public(), lifetime, time.Now())
	require.NoError(m.t, err)
	cert, err := tls.X509KeyPair(append(leaf.CertPEM, m.pair.CertPEM...), mustKeyPEM(m.t, key))
	require.NoError(m.t, err)
	return &cert
}

func mustKeyPEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	b, err := pki.EncodeKey(key)
	require.NoError(t, err)
	return b
}

// clock is a settable time for the switch windows.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time   { return time.UnixMilli(c.ms.Load()) }
func (c *clock) set(t time.Time)  { c.ms.Store(t.UnixMilli()) }
func newClock(t time.Time) *clock { c := &clock{}; c.set(t); return c }

// pair is a client proxy (outbound to "server") and a server proxy (inbound
// of "server" in front of an application).
type pair struct {
	client, server            *Proxy
	clientSt, serverSt        *stats.Store
	clientSec, serverSec      *Security
	outboundPort, inboundPort uint32
	appAddr                   string
	protocol                  string
	// via, when set, is the port the client's outbound connects to instead
	// of the inbound's (a tap in between).
	via uint32
}

func newPair(t testing.TB, m *meshCA, protocol, appAddr string, clk *clock) *pair {
	p := &pair{clientSec: NewSecurity(), serverSec: NewSecurity(), appAddr: appAddr, protocol: protocol,
		clientSt: stats.NewStore(), serverSt: stats.NewStore(), outboundPort: freePort(t), inboundPort: freePort(t)}
	p.clientSec.now, p.serverSec.now = clk.now, clk.now
	for _, s := range []*Security{p.clientSec, p.serverSec} {
		require.NoError(t, s.SetTrustBundle(m.pair.CertPEM))
	}
	p.clientSec.SetCertificate(m.workload("client", time.Hour))
	p.serverSec.SetCertificate(m.workload("server", time.Hour))
	p.client = New(p.clientSt, Options{Security: p.clientSec})
	p.server = New(p.serverSt, Options{Security: p.serverSec})
	t.Cleanup(p.client.Close)
	t.Cleanup(p.server.Close)
	return p
}

func (p *pair) apply(t testing.TB, mtls *meshv1.MTLS, allowed ...string) {
	t.Helper()
	appHost, appPort := hostPort(t, p.appAddr)
	in := &meshv1.Inbound{Address: host, Port: p.inboundPort, ServiceAddress: appHost, ServicePort: appPort,
		Tags: map[string]string{resource.ServiceTag: "server"}, Protocol: p.protocol, ClusterName: "localhost", Name: "inbound:server"}
	upstream := p.inboundPort
	if p.via != 0 {
		upstream = p.via
	}
	for _, a := range allowed {
		in.AllowedSources = append(in.AllowedSources, &meshv1.Selector{Match: map[string]string{resource.ServiceTag: a}})
	}
	require.NoError(t, p.server.Apply(&meshv1.ProxyConfig{Mesh: "default", Name: "server", Inbounds: []*meshv1.Inbound{in}, Mtls: mtls}))
	require.NoError(t, p.client.Apply(&meshv1.ProxyConfig{Mesh: "default", Name: "client", Mtls: mtls, Outbounds: []*meshv1.Outbound{{
		Address: host, Port: p.outboundPort, Service: "server", Protocol: p.protocol, ClusterName: "server", Name: "outbound:server",
		Endpoints: []*meshv1.Endpoint{{Address: host, Port: upstream}},
	}}}))
}

var mtlsOn = &meshv1.MTLS{Enabled: true}

func TestMTLSBetweenProxies(t *testing.T) {
	m := newMeshCA(t)
	echo, _ := echoServer(t, "app")
	clk := newClock(time.Now())
	p := newPair(t, m, "tcp", echo, clk)

	p.apply(t, nil, "client")
	require.Equal(t, "app:plain", dial(t, p.outboundPort).must("plain"), "no mTLS yet")

	p.apply(t, mtlsOn, "client")
	established := dial(t, p.outboundPort)
	require.Equal(t, "app:secure", established.must("secure"))
	require.Equal(t, "1", counter(t, p.clientSt, "cluster.server.ssl.handshake"))
	require.Equal(t, "1", counter(t, p.serverSt, "cluster.localhost.ssl.handshake"))
	require.Equal(t, "1", counter(t, p.serverSt, "rbac.inbound_server.allowed"))

	// Plain text straight to the inbound is refused.
	_, err := dial(t, p.inboundPort).say("sneaky")
	require.Error(t, err)

	// The permission is withdrawn: the established connection ends, new ones are denied; both count.
	p.apply(t, mtlsOn, "someone-else")
	_, err = established.say("after revocation")
	require.Error(t, err, "a withdrawn permission ends the connection")
	_, err = dial(t, p.outboundPort).say("denied")
	require.Error(t, err)
	pollCounter(t, p.serverSt, "rbac.inbound_server.denied", 2) // counted after the client saw the end

	// Permitted again. Rotation: a new certificate serves new connections; old ones continue.
	p.apply(t, mtlsOn, "client")
	established = dial(t, p.outboundPort)
	require.Equal(t, "app:again", established.must("again"))
	p.clientSec.SetCertificate(m.workload("client", time.Hour))
	require.Equal(t, "app:rotated", dial(t, p.outboundPort).must("rotated"))
	require.Equal(t, "app:old", established.must("old"))

	// A certificate of another service is not an endpoint of "server".
	p.serverSec.SetCertificate(m.workload("impostor", time.Hour))
	_, err = dial(t, p.outboundPort).say("to impostor")
	require.Error(t, err)
	require.NotEqual(t, "0", counter(t, p.clientSt, "cluster.server.upstream_cx_connect_fail"))
}

// switchPair is a TCP pair in front of an echo application, its proxies'
// clock at t0, and the mTLS block of a switch on at t0: outbounds change
// mode at t0+5 s, inbounds accept plain text until t0+15 s.
func switchPair(t *testing.T) (p *pair, clk *clock, t0 time.Time, switching *meshv1.MTLS) {
	t.Helper()
	echo, _ := echoServer(t, "app")
	t0 = time.Now()
	clk = newClock(t0)
	p = newPair(t, newMeshCA(t), "tcp", echo, clk)
	switching = &meshv1.MTLS{Enabled: true, SwitchAt: t0.Add(5 * time.Second).UnixMilli(), PermissiveUntil: t0.Add(15 * time.Second).UnixMilli()}
	return p, clk, t0, switching
}

func TestMTLSSwitchWindows(t *testing.T) {
	p, clk, t0, switching := switchPair(t)

	// Switching on: clients stay plain until switch_at, inbounds accept both until permissive_until.
	p.apply(t, switching, "client")
	require.Equal(t, "app:1", dial(t, p.outboundPort).must("1"))
	require.Equal(t, "0", counter(t, p.clientSt, "cluster.server.ssl.handshake"), "still plain before switch_at")
	require.Equal(t, "app:direct", dial(t, p.inboundPort).must("direct"), "the inbound is permissive")
	clk.set(t0.Add(6 * time.Second))
	require.Equal(t, "app:2", dial(t, p.outboundPort).must("2"))
	require.Equal(t, "1", counter(t, p.clientSt, "cluster.server.ssl.handshake"), "TLS after switch_at")
	require.Equal(t, "app:direct", dial(t, p.inboundPort).must("direct"), "still permissive")
	clk.set(t0.Add(16 * time.Second))
	_, err := dial(t, p.inboundPort).say("late")
	require.Error(t, err, "strict after the window")

	// Switching off: clients keep TLS until switch_at, inbounds accept both until permissive_until.
	t1 := t0.Add(time.Minute)
	clk.set(t1)
	off := &meshv1.MTLS{Enabled: false, SwitchAt: t1.Add(5 * time.Second).UnixMilli(), PermissiveUntil: t1.Add(15 * time.Second).UnixMilli()}
	p.apply(t, off, "client")
	require.Equal(t, "app:3", dial(t, p.outboundPort).must("3"))
	require.Equal(t, "2", counter(t, p.clientSt, "cluster.server.ssl.handshake"), "TLS until switch_at")
	clk.set(t1.Add(6 * time.Second))
	require.Equal(t, "app:4", dial(t, p.outboundPort).must("4"))
	require.Equal(t, "2", counter(t, p.clientSt, "cluster.server.ssl.handshake"), "plain after switch_at")
	clk.set(t1.Add(16 * time.Second))
	require.Equal(t, "app:5", dial(t, p.inboundPort).must("5"), "plain inbound after the window")
}

func TestMTLSForHTTPAndGRPC(t *testing.T) {
	m := newMeshCA(t)
	clk := newClock(time.Now())
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello") }))
	defer web.Close()
	ph := newPair(t, m, "http", web.Listener.Addr().String(), clk)
	ph.apply(t, mtlsOn, "client")
	for range 3 {
		res, err := http.Get("http://" + addr(ph.outboundPort))
		require.NoError(t, err)
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, "hello", string(b))
	}
	require.Equal(t, "1", counter(t, ph.clientSt, "cluster.server.ssl.handshake"), "one pooled mTLS connection")

	pg := newPair(t, m, "grpc", grpcBackend(t), clk)
	pg.apply(t, mtlsOn, "client")
	conn, err := grpc.NewClient(addr(pg.outboundPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	require.Equal(t, healthpb.HealthCheckResponse_SERVING, resp.GetStatus())
	require.Equal(t, "1", counter(t, pg.serverSt, "rbac.inbound_server.allowed"))
}

// TestMTLSSwitchOnEndsPlainConnections: a plain-text connection an inbound
// admitted while the mesh had no mTLS ends when mTLS is switched on, at the
// end of the permissive window (a client keeping it open, such as a
// scraper's keep-alive, would otherwise go on in plain text past it).
func TestMTLSSwitchOnEndsPlainConnections(t *testing.T) {
	p, clk, t0, switching := switchPair(t)
	p.apply(t, nil, "client")
	established := dial(t, p.inboundPort)
	require.Equal(t, "app:plain", established.must("plain"))

	// Switched on with the window ending 200 ms after the proxies' now.
	clk.set(t0.Add(15*time.Second - 200*time.Millisecond))
	p.apply(t, switching, "client")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := established.say("still?"); err != nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the plain connection outlived the switch window")
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPlainConnectionsLeaveTrackingWhenClosed: the plain-text connections an
// inbound admits while the mesh has no mTLS are tracked (for the switch)
// only while they are open: a mesh without mTLS serving many short TCP
// connections does not accumulate them.
func TestPlainConnectionsLeaveTrackingWhenClosed(t *testing.T) {
	m := newMeshCA(t)
	echo, _ := echoServer(t, "app")
	p := newPair(t, m, "tcp", echo, newClock(time.Now()))
	p.apply(t, nil, "client")
	for i := range 5 {
		c := dial(t, p.inboundPort)
		require.Equal(t, fmt.Sprintf("app:%d", i), c.must(fmt.Sprint(i)))
		require.NoError(t, c.c.Close())
	}
	tracked := func() int {
		p.serverSec.plainMu.Lock()
		defer p.serverSec.plainMu.Unlock()
		return len(p.serverSec.plain)
	}
	require.Eventually(t, func() bool { return tracked() == 0 }, waitTimeout, time.Millisecond,
		"closed plain connections still tracked: %d", tracked())
}

// TestMTLSWindowEndingBeforeTheFirstBytes: a plain-text connection the
// inbound accepted inside the permissive window whose first bytes come
// after the window ended is refused (it was admitted without an end, for
// good, when the mode read at accept decided alone).
func TestMTLSWindowEndingBeforeTheFirstBytes(t *testing.T) {
	p, clk, t0, switching := switchPair(t)
	var asked atomic.Int64 // the server's reads of its clock
	p.serverSec.now = func() time.Time { asked.Add(1); return clk.now() }
	clk.set(t0.Add(10 * time.Second)) // inside the window (5 s – 15 s)
	p.apply(t, switching, "client")

	before := asked.Load()
	c := dial(t, p.inboundPort)
	// The inbound read its mode (permissive) at accept and waits for the
	// first bytes; the window ends meanwhile.
	require.Eventually(t, func() bool { return asked.Load() > before }, waitTimeout, time.Millisecond)
	clk.set(t0.Add(16 * time.Second))
	_, err := c.say("late")
	require.Error(t, err, "plain text admitted after the window")
}
