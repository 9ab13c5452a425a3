package dpserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/dpserver/dpservertest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

// harness is a real dataplane server and a client of it.
type harness struct {
	*dpservertest.Server
	client meshv1.DataplaneConfigServiceClient
	// tls reaches the server (at Addr).
	tls *tls.Config
}

// insight reads a dataplane's insight from the store (empty when none).
func (h *harness) insight(t *testing.T, key resource.Key) *resource.DataplaneInsightSpec {
	t.Helper()
	o, err := h.Store.Get(t.Context(), resource.KindDataplaneInsight, key)
	if errors.Is(err, store.ErrNotFound) {
		return &resource.DataplaneInsightSpec{}
	}
	require.NoError(t, err)
	return o.DataplaneInsight()
}

// online tells whether a dataplane's newest subscription is open.
func online(in *resource.DataplaneInsightSpec) bool {
	l := in.Latest()
	return l != nil && l.DisconnectTime == nil
}

func start(t *testing.T, configure ...func(*dpserver.Options)) *harness {
	t.Helper()
	srv := dpservertest.Start(t, nil, func(o *dpserver.Options) {
		for _, c := range configure {
			c(o)
		}
	})
	ca, err := os.ReadFile(srv.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &harness{Server: srv, client: meshv1.NewDataplaneConfigServiceClient(conn), tls: tlsCfg}
}

func dataplaneJSON(name, addr string, outbound bool) string {
	out := ""
	if outbound {
		out = `,"outbound":[{"port":10001,"tags":{"kuma.io/service":"backend"}}]`
	}
	return `{"type":"Dataplane","mesh":"default","name":"` + name + `","networking":{"address":"` + addr +
		`","inbound":[{"port":8080,"tags":{"kuma.io/service":"` + name + `"}}]` + out + `}}`
}

type proxyStream struct {
	t *testing.T
	grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
}

func (h *harness) connect(t *testing.T, dpJSON string) *proxyStream {
	t.Helper()
	return h.connectCtx(t, t.Context(), dpJSON)
}

func (h *harness) connectCtx(t *testing.T, parent context.Context, dpJSON string) *proxyStream {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	s, err := h.client.StreamProxyConfig(ctx)
	require.NoError(t, err)
	md, err := structpb.NewStruct(map[string]any{dpconfig.MetadataDataplane: dpJSON})
	require.NoError(t, err)
	require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "x", Metadata: md}, TypeUrl: dpconfig.TypeURL}))
	t.Cleanup(cancel)
	return &proxyStream{t: t, BidiStreamingClient: s, cancel: cancel}
}

// next receives a config and ACKs it.
func (p *proxyStream) next() (*meshv1.ProxyConfig, *discoveryv3.DiscoveryResponse) {
	p.t.Helper()
	resp, err := p.Recv()
	require.NoError(p.t, err)
	require.Len(p.t, resp.GetResources(), 1)
	cfg := &meshv1.ProxyConfig{}
	require.NoError(p.t, resp.GetResources()[0].UnmarshalTo(cfg))
	require.NoError(p.t, p.Send(&discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), TypeUrl: dpconfig.TypeURL}))
	return cfg, resp
}

func endpoints(cfg *meshv1.ProxyConfig) []string {
	var out []string
	for _, o := range cfg.GetOutbounds() {
		for _, e := range o.GetEndpoints() {
			out = append(out, e.GetAddress())
		}
	}
	return out
}

func TestRegistrationErrors(t *testing.T) {
	h := start(t)
	cases := []struct {
		name     string
		metadata map[string]any
		code     codes.Code
		msg      string
	}{
		{"no dataplane", map[string]any{}, codes.InvalidArgument, dpconfig.MetadataDataplane},
		{"not JSON", map[string]any{dpconfig.MetadataDataplane: "{"}, codes.InvalidArgument, "invalid Dataplane"},
		{"not a dataplane", map[string]any{dpconfig.MetadataDataplane: `{"type":"Mesh","name":"x"}`}, codes.InvalidArgument, "not a Dataplane"},
		{"invalid field", map[string]any{dpconfig.MetadataDataplane: `{"type":"Dataplane","mesh":"default","name":"a","networking":{"address":"127.0.0.1","inbound":[{"port":70000,"tags":{"kuma.io/service":"a"}}]}}`}, codes.InvalidArgument, "networking.inbound[0].port"},
		{"unknown mesh", map[string]any{dpconfig.MetadataDataplane: `{"type":"Dataplane","mesh":"nope","name":"a","networking":{"address":"127.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"a"}}]}}`}, codes.InvalidArgument, `mesh "nope" does not exist`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := h.client.StreamProxyConfig(t.Context())
			require.NoError(t, err)
			md, err := structpb.NewStruct(tc.metadata)
			require.NoError(t, err)
			require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Metadata: md}, TypeUrl: dpconfig.TypeURL}))
			_, err = s.Recv()
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, tc.msg)
		})
	}
}

func TestProxyLifecycle(t *testing.T) {
	h := start(t)
	key := resource.Key{Mesh: "default", Name: "frontend"}

	front := h.connect(t, dataplaneJSON("frontend", "127.0.0.2", true))
	cfg, resp := front.next()
	require.Equal(t, "frontend", cfg.GetName())
	require.Empty(t, endpoints(cfg), "no backend yet")
	require.Eventually(t, func() bool {
		in := h.insight(t, key)
		l := in.Latest()
		return online(in) && l.ConfigVersion == resp.GetVersionInfo() && l.Status.Total.ResponsesAcknowledged == 1 && l.ControlPlaneInstanceID == dpservertest.InstanceID
	}, waitTimeout, time.Millisecond, "online, with the acknowledged version")

	// A backend registers: the frontend gets its endpoint.
	back := h.connect(t, dataplaneJSON("backend", "127.0.0.3", false))
	back.next()
	cfg, _ = front.next()
	require.Equal(t, []string{"127.0.0.3"}, endpoints(cfg))

	// A dataplane of another service changes nothing for the frontend: the
	// next push it gets is the one about its backend.
	other := h.connect(t, dataplaneJSON("other", "127.0.0.9", false))
	other.next()
	_, err := h.Manager.Apply(t.Context(), mustDecode(t, `{"type":"Dataplane","mesh":"default","name":"backend-b","networking":{"address":"127.0.0.5","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]}}`), 0)
	require.NoError(t, err)
	cfg, _ = front.next()
	require.Equal(t, []string{"127.0.0.3", "127.0.0.5"}, endpoints(cfg))

	// A NACK is counted.
	_, err = h.Manager.Apply(t.Context(), mustDecode(t, `{"type":"Dataplane","mesh":"default","name":"backend-c","networking":{"address":"127.0.0.6","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]}}`), 0)
	require.NoError(t, err)
	resp, err = front.Recv()
	require.NoError(t, err)
	require.NoError(t, front.Send(&discoveryv3.DiscoveryRequest{ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Message: "port in use"}}))
	require.Eventually(t, func() bool { return h.insight(t, key).Latest().Status.Total.ResponsesRejected == 1 }, waitTimeout, time.Millisecond)

	// The stream ends: offline. Deregistering deletes the dataplane.
	front.cancel()
	require.Eventually(t, func() bool { return !online(h.insight(t, key)) }, waitTimeout, time.Millisecond)
	_, err = h.client.Deregister(t.Context(), &meshv1.DeregisterRequest{Mesh: "default", Name: "frontend"})
	require.NoError(t, err)
	require.Empty(t, h.insight(t, key).Subscriptions, "the insight went with the Dataplane")
	_, err = h.client.Deregister(t.Context(), &meshv1.DeregisterRequest{Mesh: "default"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
}

func TestReconnectReplacesTheOlderStream(t *testing.T) {
	h := start(t)
	first := h.connect(t, dataplaneJSON("web", "127.0.0.2", false))
	first.next()
	second := h.connect(t, dataplaneJSON("web", "127.0.0.2", false))
	second.next()
	_, err := first.Recv()
	require.Equal(t, codes.Aborted, status.Code(err), "%v", err)
	require.Eventually(t, func() bool {
		in := h.insight(t, resource.Key{Mesh: "default", Name: "web"})
		return online(in) && len(in.Subscriptions) == 2 && in.Subscriptions[0].DisconnectTime != nil
	}, waitTimeout, time.Millisecond)
}

func mustDecode(t *testing.T, js string) *resource.Object {
	t.Helper()
	o, err := resource.DecodeJSON([]byte(js))
	require.NoError(t, err)
	return o
}

func TestServerCertificateIsKeptAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c1, err := dpserver.ServerCertificate(dir, "", "", now)
	require.NoError(t, err)
	ca1, err := os.ReadFile(filepath.Join(dir, dpconfig.ServerCAFile))
	require.NoError(t, err)
	c2, err := dpserver.ServerCertificate(dir, "", "", now.Add(time.Hour))
	require.NoError(t, err)
	ca2, err := os.ReadFile(filepath.Join(dir, dpconfig.ServerCAFile))
	require.NoError(t, err)
	require.Equal(t, ca1, ca2, "proxies keep trusting the control plane")
	require.Equal(t, c1.Certificate[0], c2.Certificate[0])
	info, err := os.Stat(filepath.Join(dir, "dp-server-ca.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	// Close to expiry: a new leaf from the same CA.
	c3, err := dpserver.ServerCertificate(dir, "", "", now.Add(360*24*time.Hour))
	require.NoError(t, err)
	require.NotEqual(t, c1.Certificate[0], c3.Certificate[0])
	ca3, _ := os.ReadFile(filepath.Join(dir, dpconfig.ServerCAFile))
	require.Equal(t, ca1, ca3)

	// The server listens on another loopback address: the certificate is
	// reissued to name it too, from the same CA.
	other := net.ParseIP("127.51.7.9")
	leaf := func(c tls.Certificate) *x509.Certificate {
		x, err := x509.ParseCertificate(c.Certificate[0])
		require.NoError(t, err)
		return x
	}
	require.Error(t, leaf(c3).VerifyHostname(other.String()))
	c4, err := dpserver.ServerCertificate(dir, "", "", now.Add(time.Hour), other, net.IPv4zero)
	require.NoError(t, err)
	require.NoError(t, leaf(c4).VerifyHostname(other.String()))
	require.NoError(t, leaf(c4).VerifyHostname("127.0.0.1"))
	ca4, _ := os.ReadFile(filepath.Join(dir, dpconfig.ServerCAFile))
	require.Equal(t, ca1, ca4)
	c5, err := dpserver.ServerCertificate(dir, "", "", now.Add(2*time.Hour), other)
	require.NoError(t, err)
	require.Equal(t, c4.Certificate[0], c5.Certificate[0], "kept while it names every address")

	_, err = dpserver.ServerCertificate(dir, "only-cert.pem", "", now)
	require.ErrorContains(t, err, "both")
	_, err = dpserver.ServerCertificate(dir, "/missing.pem", "/missing.key", now)
	require.ErrorContains(t, err, "/missing.pem")
}
