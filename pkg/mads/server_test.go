package mads

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const waitTimeout = 10 * time.Second

type harness struct {
	mgr     *manager.Manager
	srv     *Server
	addr    string
	reg     *prometheus.Registry
	metrics *xds.Metrics
}

func start(t testing.TB, configure func(*Options)) *harness {
	t.Helper()
	return startOn(t, configure, nil)
}

// startOn starts a server on a listener wrap returns (nil: as it is).
func startOn(t testing.TB, configure func(*Options), wrap func(net.Listener) net.Listener) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := memory.New()
	h := &harness{mgr: manager.New(st, nil), reg: prometheus.NewRegistry()}
	require.NoError(t, h.mgr.EnsureDefaultMesh(ctx))
	mir := mirror.New(st, nil, resource.KindMesh, resource.KindDataplane)
	var err error
	h.metrics, err = xds.NewMetrics(h.reg)
	require.NoError(t, err)
	opts := Options{Views: mir, XDSMetrics: h.metrics, Registerer: h.reg, Debounce: 5 * time.Millisecond}
	if configure != nil {
		configure(&opts)
	}
	h.srv, err = New(opts)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h.addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = mir.Run(ctx) }()
	go func() { defer wg.Done(); h.srv.Reconcile(ctx) }()
	go func() { defer wg.Done(); _ = h.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	h.apply(t, metricsMesh("default", nil))
	return h
}

func (h *harness) apply(t testing.TB, o *resource.Object) {
	t.Helper()
	_, err := h.mgr.Apply(t.Context(), o, 0)
	require.NoError(t, err)
}

func (h *harness) addDataplane(t testing.TB, name, addr string) {
	t.Helper()
	h.apply(t, dp("default", name, resource.Networking{Address: addr, Inbound: []resource.Inbound{inbound(resource.ServiceTag, "web")}}, nil))
}

// waitVersion waits until the server serves a snapshot with n assignments.
func (h *harness) waitAssignments(t testing.TB, n int) *xds.Snapshot {
	t.Helper()
	var snap *xds.Snapshot
	require.Eventually(t, func() bool {
		snap = h.srv.Current()
		return snap != nil && snap.Len() == n
	}, waitTimeout, time.Millisecond)
	return snap
}

type fetchResult struct {
	status int
	body   []byte
	resp   *discoveryv3.DiscoveryResponse
}

func (h *harness) fetch(t *testing.T, ctx context.Context, query, body string) fetchResult {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.addr+FetchPath+query, bytes.NewBufferString(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	out := fetchResult{status: res.StatusCode, body: b}
	if res.StatusCode == http.StatusOK {
		out.resp = &discoveryv3.DiscoveryResponse{}
		require.NoError(t, protojson.Unmarshal(b, out.resp))
	}
	return out
}

func requestBody(version string) string {
	// As Prometheus' client sends it (proto names; whitespace varies).
	if version == "" {
		return `{"node": {"id": "prometheus-1"}, "type_url": "` + TypeURL + `", "resource_names": []}`
	}
	return `{"version_info":"` + version + `","response_nonce":"` + version + `","node":{"id":"prometheus-1"},"type_url":"` + TypeURL + `"}`
}

func TestFetchLongPoll(t *testing.T) {
	h := start(t, nil)
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)

	// First request, no version: answered at once, in proto names, every resource typed.
	first := h.fetch(t, t.Context(), "?fetch-timeout=2m", requestBody(""))
	require.Equal(t, http.StatusOK, first.status)
	var raw map[string]any
	require.NoError(t, json.Unmarshal(first.body, &raw))
	require.Contains(t, raw, "version_info")
	require.Equal(t, TypeURL, raw["type_url"])
	require.Len(t, raw["resources"], 1)
	require.Equal(t, TypeURL, raw["resources"].([]any)[0].(map[string]any)["@type"])
	a := &observabilityv1.MonitoringAssignment{}
	require.NoError(t, first.resp.GetResources()[0].UnmarshalTo(a))
	require.Equal(t, "web-1", a.GetTargets()[0].GetName())
	version := first.resp.GetVersionInfo()

	// Same version, fetch-timeout=0s: 304 at once.
	require.Equal(t, http.StatusNotModified, h.fetch(t, t.Context(), "?fetch-timeout=0s", requestBody(version)).status)

	// Same version: held until the timeout, then 304 with an empty body.
	began := time.Now()
	held := h.fetch(t, t.Context(), "?fetch-timeout=300ms", requestBody(version))
	require.Equal(t, http.StatusNotModified, held.status)
	require.Empty(t, held.body)
	require.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond, "a current client is held until its fetch-timeout")

	// Same version, held: a new dataplane answers it with the new version.
	got := make(chan fetchResult, 1)
	go func() { got <- h.fetch(t, t.Context(), "?fetch-timeout=1m", requestBody(version)) }()
	h.waitHeld(t, 1)
	h.addDataplane(t, "web-2", "10.0.0.2")
	select {
	case r := <-got:
		require.Equal(t, http.StatusOK, r.status)
		require.Len(t, r.resp.GetResources(), 2)
		require.NotEqual(t, version, r.resp.GetVersionInfo())
	case <-time.After(waitTimeout):
		t.Fatal("held request not answered after a change")
	}

	// Prometheus writes durations like 1d; a wrong type_url is ignored.
	r := h.fetch(t, t.Context(), "?fetch-timeout=1d", `{"type_url":"type.googleapis.com/something.Else"}`)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, TypeURL, r.resp.GetTypeUrl())
	require.Len(t, r.resp.GetResources(), 2)

	// No fetch-timeout: the server default.
	r = h.fetch(t, t.Context(), "", requestBody(""))
	require.Equal(t, http.StatusOK, r.status)
}

func (h *harness) waitHeld(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return h.srv.held.Load() == int64(n) }, waitTimeout, time.Millisecond)
}

func TestFetchBadInput(t *testing.T) {
	h := start(t, nil)
	h.waitAssignments(t, 0)
	cases := []struct {
		name, method, query, body string
		status                    int
		details                   string
	}{
		{"unparsable fetch-timeout", http.MethodPost, "?fetch-timeout=soon", requestBody(""), 400, "fetch-timeout"},
		{"malformed JSON", http.MethodPost, "", `{"version_info": `, 400, "not a JSON DiscoveryRequest"},
		{"wrong field type", http.MethodPost, "", `{"version_info": 7}`, 400, "field versionInfo"},
		{"not JSON at all", http.MethodPost, "", `<xml/>`, 400, "not a JSON DiscoveryRequest"},
		{"too large", http.MethodPost, "", `{"version_info":"` + string(bytes.Repeat([]byte("x"), maxRequestBody)) + `"}`, 413, "at most"},
		{"GET", http.MethodGet, "", "", 405, "POST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, "http://"+h.addr+FetchPath+tc.query, bytes.NewBufferString(tc.body))
			require.NoError(t, err)
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, tc.status, res.StatusCode)
			require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			var e errorBody
			require.NoError(t, json.NewDecoder(res.Body).Decode(&e))
			require.NotEmpty(t, e.Title)
			require.Contains(t, e.Details, tc.details)
		})
	}
}

func TestFetchClientLeavingWhileHeld(t *testing.T) {
	h := start(t, nil)
	snap := h.waitAssignments(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.addr+FetchPath+"?fetch-timeout=5m", bytes.NewBufferString(requestBody(snap.Version())))
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	h.waitHeld(t, 1)
	cancel()
	<-done
	h.waitHeld(t, 0) // the server let go of it
	require.Eventually(t, func() bool {
		return testutil.CollectAndCount(h.reg, "mads_server_http_request_duration_seconds") > 0
	}, waitTimeout, time.Millisecond)
}

func TestThousandLongPolls(t *testing.T) {
	h := start(t, nil)
	snap := h.waitAssignments(t, 0)
	const clients = 1000
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	results := make(chan string, clients)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+h.addr+FetchPath+"?fetch-timeout=2m", bytes.NewBufferString(requestBody(snap.Version())))
			res, err := client.Do(req)
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			defer res.Body.Close()
			resp := &discoveryv3.DiscoveryResponse{}
			b, _ := io.ReadAll(res.Body)
			if err := protojson.Unmarshal(b, resp); err != nil || res.StatusCode != http.StatusOK {
				results <- fmt.Sprintf("status %d: %v", res.StatusCode, err)
				return
			}
			results <- resp.GetVersionInfo()
		}()
	}
	h.waitHeld(t, clients)
	h.addDataplane(t, "web-1", "10.0.0.1")
	wg.Wait()
	close(results)
	next := h.srv.Current().Version()
	n := 0
	for r := range results {
		require.Equal(t, next, r)
		n++
	}
	require.Equal(t, clients, n)
}

func TestHTTPSDMatchesPrometheusKumaLabels(t *testing.T) {
	h := start(t, nil)
	h.apply(t, dp("default", "web-1", resource.Networking{Address: "10.0.0.1", AdvertisedAddress: "192.0.2.1", Inbound: []resource.Inbound{
		inbound(resource.ServiceTag, "web", "version", "v1"),
		func() resource.Inbound {
			in := inbound(resource.ServiceTag, "web-admin", "version", "v1")
			in.Port = 9090
			return in
		}(),
	}}, nil))
	h.waitAssignments(t, 1)
	res, err := http.Get("http://" + h.addr + HTTPSDPath)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	var groups []TargetGroup
	require.NoError(t, json.NewDecoder(res.Body).Decode(&groups))
	require.Equal(t, []TargetGroup{{
		Targets: []string{"192.0.2.1:5670"},
		Labels: map[string]string{
			"__meta_kuma_mesh":                   "default",
			"__meta_kuma_service":                "web",
			"__meta_kuma_dataplane":              "web-1",
			"__meta_kuma_label_kuma_io_service":  "web",
			"__meta_kuma_label_kuma_io_services": ",web,web-admin,",
			"__meta_kuma_label_version":          "v1",
			"__meta_kuma_label_versions":         ",v1,",
			"instance":                           "web-1",
			"__scheme__":                         "http",
			"__metrics_path__":                   "/metrics",
		},
	}}, groups)

	res2, err := http.Post("http://"+h.addr+HTTPSDPath, "application/json", nil)
	require.NoError(t, err)
	res2.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, res2.StatusCode)
}

func TestVersionChangesOnlyWithContent(t *testing.T) {
	h := start(t, nil)
	h.addDataplane(t, "web-1", "10.0.0.1")
	before := h.waitAssignments(t, 1)
	// A mesh change that does not touch assignments, and a rewrite of the same dataplane.
	m := metricsMesh("default", nil)
	m.Mesh().MTLS = &resource.MTLS{Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}}
	h.apply(t, m)
	h.addDataplane(t, "web-1", "10.0.0.1")
	// Then a real change; between them the version must not have moved.
	h.addDataplane(t, "web-1", "10.0.0.9")
	var versions []string
	require.Eventually(t, func() bool {
		cur := h.srv.Current()
		if len(versions) == 0 || versions[len(versions)-1] != cur.Version() {
			versions = append(versions, cur.Version())
		}
		tg, _ := cur.Get("default/web-1")
		a := &observabilityv1.MonitoringAssignment{}
		return tg.Body.UnmarshalTo(a) == nil && a.GetTargets()[0].GetAddress() == "10.0.0.9:5670"
	}, waitTimeout, time.Millisecond)
	require.Equal(t, before.Version(), versions[0])
	require.LessOrEqual(t, len(versions), 2, "no intermediate versions")
}

func grpcClient(t *testing.T, addr string, creds credentials.TransportCredentials) observabilityv1.MonitoringAssignmentDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return observabilityv1.NewMonitoringAssignmentDiscoveryServiceClient(conn)
}

func TestGRPCStreams(t *testing.T) {
	h := start(t, nil)
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)
	client := grpcClient(t, h.addr, insecure.NewCredentials())
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	sotw, err := client.StreamMonitoringAssignments(ctx)
	require.NoError(t, err)
	require.NoError(t, sotw.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: TypeURL}))
	r1, err := sotw.Recv()
	require.NoError(t, err)
	require.Len(t, r1.GetResources(), 1)
	require.NoError(t, sotw.Send(&discoveryv3.DiscoveryRequest{VersionInfo: r1.GetVersionInfo(), ResponseNonce: r1.GetNonce(), TypeUrl: TypeURL}))

	delta, err := client.DeltaMonitoringAssignments(ctx)
	require.NoError(t, err)
	require.NoError(t, delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: TypeURL}))
	d1, err := delta.Recv()
	require.NoError(t, err)
	require.Len(t, d1.GetResources(), 1)
	require.Equal(t, "default/web-1", d1.GetResources()[0].GetName())
	require.NoError(t, delta.Send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: d1.GetNonce(), TypeUrl: TypeURL}))

	h.addDataplane(t, "web-2", "10.0.0.2")
	r2, err := sotw.Recv()
	require.NoError(t, err)
	require.Len(t, r2.GetResources(), 2, "state of the world: everything")
	d2, err := delta.Recv()
	require.NoError(t, err)
	require.Len(t, d2.GetResources(), 1, "delta: only the change")
	require.Equal(t, "default/web-2", d2.GetResources()[0].GetName())

	require.NoError(t, h.mgr.Delete(t.Context(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "web-1"}, 0))
	d3, err := delta.Recv()
	require.NoError(t, err)
	require.Equal(t, []string{"default/web-1"}, d3.GetRemovedResources())
	require.Empty(t, d3.GetResources())

	f, err := client.FetchMonitoringAssignments(ctx, &discoveryv3.DiscoveryRequest{})
	require.NoError(t, err)
	require.Len(t, f.GetResources(), 1)
	require.Equal(t, 2.0, sum(t, h.reg, "xds_streams_active"), "two streams active")
}

// sum adds up the samples of a gauge or counter family in reg.
func sum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the cert and key file paths.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mads-test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	h := start(t, func(o *Options) { o.TLSCertFile, o.TLSKeyFile = certFile, keyFile })
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Post("https://"+h.addr+FetchPath+"?fetch-timeout=0s", "application/json", bytes.NewBufferString(requestBody("")))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	require.Equal(t, 2, res.ProtoMajor, "HTTP/2 over TLS works for the HTTP API too")

	// Plain HTTP is refused on a TLS port.
	if plain, err := http.Post("http://"+h.addr+FetchPath, "application/json", bytes.NewBufferString("{}")); err == nil {
		plain.Body.Close()
		require.Equal(t, http.StatusBadRequest, plain.StatusCode)
	}

	client := grpcClient(t, h.addr, credentials.NewTLS(&tls.Config{RootCAs: pool}))
	stream, err := client.StreamMonitoringAssignments(t.Context())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: TypeURL}))
	r, err := stream.Recv()
	require.NoError(t, err)
	require.Len(t, r.GetResources(), 1)
}

func TestTLSNeedsBothFiles(t *testing.T) {
	_, err := New(Options{Views: mirror.New(memory.New(), nil), TLSCertFile: "x.pem"})
	require.ErrorContains(t, err, "both")
	_, err = New(Options{Views: mirror.New(memory.New(), nil), TLSCertFile: "/nonexistent.pem", TLSKeyFile: "/nonexistent.key"})
	require.ErrorContains(t, err, "/nonexistent.pem")
}
