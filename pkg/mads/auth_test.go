package mads

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// tokens is the control plane's issuer with a valid token and one that
// another control plane (other keys) issued.
type tokens struct {
	issuer       *authn.Issuer
	dir          string
	valid, other string
}

func newTokens(t *testing.T) tokens {
	t.Helper()
	dir := t.TempDir()
	iss, err := authn.Load(dir, nil)
	require.NoError(t, err)
	valid, err := iss.IssueUser("prometheus", []string{"scrapers"}, time.Hour)
	require.NoError(t, err)
	otherIss, err := authn.Load(t.TempDir(), nil)
	require.NoError(t, err)
	other, err := otherIss.IssueUser("prometheus", []string{"scrapers"}, time.Hour)
	require.NoError(t, err)
	return tokens{issuer: iss, dir: dir, valid: valid, other: other}
}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

func call(t *testing.T, client *http.Client, method, url, authorization, body string) httpAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	res, err := client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return httpAnswer{status: res.StatusCode, header: res.Header, body: b}
}

// grpcFirstResponse opens a state-of-the-world stream with the given
// authorization metadata and returns its first response or error.
func grpcFirstResponse(t *testing.T, addr string, creds credentials.TransportCredentials, authorization string) (*discoveryv3.DiscoveryResponse, error) {
	t.Helper()
	ctx := t.Context()
	if authorization != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", authorization)
	}
	stream, err := grpcClient(t, addr, creds).StreamMonitoringAssignments(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: TypeURL}); err != nil {
		_, err = stream.Recv()
		return nil, err
	}
	return stream.Recv()
}

func TestTokensAreRequired(t *testing.T) {
	tok := newTokens(t)
	h := start(t, func(o *Options) { o.Tokens = tok.issuer })
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)

	fetchURL := "http://" + h.addr + FetchPath + "?fetch-timeout=0s"
	sdURL := "http://" + h.addr + HTTPSDPath
	refused := []struct {
		name, authorization, details string
	}{
		{"no token", "", "need a user token: send `Authorization: Bearer <token>`"},
		{"not a bearer token", "Basic cHJvbTpwcm9t", "the Authorization header must be `Bearer <user token>`"},
		{"token of another control plane", "Bearer " + tok.other, "the user token was refused"},
		{"garbage token", "Bearer not.a.token", "the user token was refused"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			for _, a := range []httpAnswer{
				call(t, http.DefaultClient, http.MethodPost, fetchURL, tc.authorization, requestBody("")),
				call(t, http.DefaultClient, http.MethodGet, sdURL, tc.authorization, ""),
			} {
				require.Equal(t, http.StatusUnauthorized, a.status, string(a.body))
				require.Equal(t, "application/json", a.header.Get("Content-Type"))
				require.Equal(t, `Bearer realm="kuma"`, a.header.Get("WWW-Authenticate"))
				var body errorBody
				require.NoError(t, json.Unmarshal(a.body, &body))
				require.Equal(t, "Unauthenticated", body.Title)
				require.Contains(t, body.Details, tc.details)
				require.NotContains(t, string(a.body), "web-1", "nothing of the inventory")
			}

			_, err := grpcFirstResponse(t, h.addr, insecure.NewCredentials(), tc.authorization)
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), tc.details)

			ctx := t.Context()
			if tc.authorization != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.authorization)
			}
			_, err = grpcClient(t, h.addr, insecure.NewCredentials()).FetchMonitoringAssignments(ctx, &discoveryv3.DiscoveryRequest{})
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
		})
	}

	t.Run("valid token", func(t *testing.T) {
		bearer := "Bearer " + tok.valid
		a := call(t, http.DefaultClient, http.MethodPost, fetchURL, bearer, requestBody(""))
		require.Equal(t, http.StatusOK, a.status, string(a.body))
		require.Contains(t, string(a.body), "web-1")
		a = call(t, http.DefaultClient, http.MethodGet, sdURL, bearer, "")
		require.Equal(t, http.StatusOK, a.status, string(a.body))
		var groups []TargetGroup
		require.NoError(t, json.Unmarshal(a.body, &groups))
		require.Len(t, groups, 1)
		require.Equal(t, "web-1", groups[0].Labels[MetaDataplane])

		// Prometheus' http_sd (2.42) sends `authorization: {credentials_file: F}` without its type.
		a = call(t, http.DefaultClient, http.MethodGet, sdURL, " "+tok.valid, "")
		require.Equal(t, http.StatusOK, a.status, string(a.body))

		r, err := grpcFirstResponse(t, h.addr, insecure.NewCredentials(), bearer)
		require.NoError(t, err)
		require.Len(t, r.GetResources(), 1)
		f, err := grpcClient(t, h.addr, insecure.NewCredentials()).FetchMonitoringAssignments(
			metadata.AppendToOutgoingContext(t.Context(), "authorization", bearer), &discoveryv3.DiscoveryRequest{})
		require.NoError(t, err)
		require.Len(t, f.GetResources(), 1)
	})
}

func TestStreamEndsWhenItsTokenExpires(t *testing.T) {
	tok := newTokens(t)
	h := start(t, func(o *Options) { o.Tokens = tok.issuer })
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)
	// The same keys with a clock behind: an hour's token expired almost
	// authn.Leeway ago, so it is accepted for three more seconds.
	behind, err := authn.Load(tok.dir, func() time.Time { return time.Now().Add(-time.Hour - authn.Leeway - time.Second + 3*time.Second) })
	require.NoError(t, err)
	short, err := behind.IssueUser("prometheus", nil, time.Hour)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+short), waitTimeout)
	defer cancel()
	stream, err := grpcClient(t, h.addr, insecure.NewCredentials()).StreamMonitoringAssignments(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: TypeURL}))
	r, err := stream.Recv()
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), TypeUrl: TypeURL}))
	_, err = stream.Recv() // nothing changes: the next thing is the end of the stream
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "expired")

	// By then the token is refused: reconnecting needs a fresh one.
	_, err = grpcFirstResponse(t, h.addr, insecure.NewCredentials(), "Bearer "+short)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "the user token was refused")
}

// addrListener reports another address than the one it listens on.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

func TestTokensInClearOnlyOnLoopback(t *testing.T) {
	tok := newTokens(t)
	srv, err := New(Options{Views: mirror.New(memory.New(), nil), Tokens: tok.issuer})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	everywhere := addrListener{Listener: ln, addr: &net.TCPAddr{IP: net.IPv4zero, Port: 5676}}
	err = srv.Serve(t.Context(), everywhere)
	require.ErrorContains(t, err, "tokens are required but 0.0.0.0:5676 is neither TLS nor loopback-only")
}

// clientPKI is a CA whose certificates clients present, with one client's
// certificate, and a certificate of another CA.
type clientPKI struct {
	caFile         string
	good, stranger tls.Certificate
	serverCertFile string
	serverKeyFile  string
	serverRoots    *x509.CertPool
}

func newClientPKI(t *testing.T) clientPKI {
	t.Helper()
	now := time.Now()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	issue := func(ca *pki.KeyPair, leaf pki.Leaf) *pki.KeyPair {
		leaf.Lifetime = time.Hour
		kp, err := pki.Issue(ca, leaf, now)
		require.NoError(t, err)
		return kp
	}
	tlsPair := func(kp *pki.KeyPair) tls.Certificate {
		c, err := kp.TLS()
		require.NoError(t, err)
		return c
	}
	scrapers, err := pki.NewCA("scrapers", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	others, err := pki.NewCA("someone else", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	serverCA, err := pki.NewCA("mads server CA", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	server := issue(serverCA, pki.Leaf{CommonName: "mads", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	roots, err := pki.Pool(serverCA.CertPEM)
	require.NoError(t, err)
	return clientPKI{
		caFile:         write("scrapers-ca.pem", scrapers.CertPEM),
		good:           tlsPair(issue(scrapers, pki.Leaf{CommonName: "prometheus", Client: true})),
		stranger:       tlsPair(issue(others, pki.Leaf{CommonName: "prometheus", Client: true})),
		serverCertFile: write("mads.pem", server.CertPEM),
		serverKeyFile:  write("mads.key", server.KeyPEM),
		serverRoots:    roots,
	}
}

func TestClientCertificatesAreRequired(t *testing.T) {
	p := newClientPKI(t)
	h := start(t, func(o *Options) {
		o.TLSCertFile, o.TLSKeyFile, o.TLSClientCAFile = p.serverCertFile, p.serverKeyFile, p.caFile
	})
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)

	httpClient := func(certs ...tls.Certificate) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.serverRoots, Certificates: certs}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	sdURL := "https://" + h.addr + HTTPSDPath
	for name, certs := range map[string][]tls.Certificate{"no certificate": nil, "another CA's certificate": {p.stranger}} {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, sdURL, nil)
			require.NoError(t, err)
			res, err := httpClient(certs...).Do(req)
			if err == nil {
				res.Body.Close()
			}
			require.Error(t, err, "the handshake is refused")

			creds := credentials.NewTLS(&tls.Config{RootCAs: p.serverRoots, Certificates: certs})
			_, err = grpcFirstResponse(t, h.addr, creds, "")
			require.Error(t, err)
			require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		})
	}

	t.Run("a certificate of the client CA", func(t *testing.T) {
		a := call(t, httpClient(p.good), http.MethodGet, sdURL, "", "")
		require.Equal(t, http.StatusOK, a.status, string(a.body))
		require.Contains(t, string(a.body), "web-1")
		a = call(t, httpClient(p.good), http.MethodPost, "https://"+h.addr+FetchPath+"?fetch-timeout=0s", "", requestBody(""))
		require.Equal(t, http.StatusOK, a.status, string(a.body))

		r, err := grpcFirstResponse(t, h.addr, credentials.NewTLS(&tls.Config{RootCAs: p.serverRoots, Certificates: []tls.Certificate{p.good}}), "")
		require.NoError(t, err)
		require.Len(t, r.GetResources(), 1)
	})
}

func TestTLSWithTokensAndClientCertificates(t *testing.T) {
	p := newClientPKI(t)
	tok := newTokens(t)
	h := start(t, func(o *Options) {
		o.TLSCertFile, o.TLSKeyFile, o.TLSClientCAFile, o.Tokens = p.serverCertFile, p.serverKeyFile, p.caFile, tok.issuer
	})
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.serverRoots, Certificates: []tls.Certificate{p.good}}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	a := call(t, client, http.MethodGet, "https://"+h.addr+HTTPSDPath, "", "")
	require.Equal(t, http.StatusUnauthorized, a.status, "a certificate alone is not enough when tokens are required")
	a = call(t, client, http.MethodGet, "https://"+h.addr+HTTPSDPath, "Bearer "+tok.valid, "")
	require.Equal(t, http.StatusOK, a.status, string(a.body))
	require.Equal(t, 2, func() int {
		res, err := client.Post("https://"+h.addr+FetchPath+"?fetch-timeout=0s", "application/json", bytes.NewBufferString(requestBody("")))
		require.NoError(t, err)
		defer res.Body.Close()
		return res.ProtoMajor
	}(), "HTTP/2 over TLS")

	// gRPC through net/http's TLS listener.
	creds := credentials.NewTLS(&tls.Config{RootCAs: p.serverRoots, Certificates: []tls.Certificate{p.good}})
	_, err := grpcFirstResponse(t, h.addr, creds, "")
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	r, err := grpcFirstResponse(t, h.addr, creds, "Bearer "+tok.valid)
	require.NoError(t, err)
	require.Len(t, r.GetResources(), 1)
}

func TestClientCANeedsTLS(t *testing.T) {
	p := newClientPKI(t)
	_, err := New(Options{Views: mirror.New(memory.New(), nil), TLSClientCAFile: p.caFile})
	require.ErrorContains(t, err, "a client CA needs TLS")
	_, err = New(Options{Views: mirror.New(memory.New(), nil), TLSCertFile: p.serverCertFile, TLSKeyFile: p.serverKeyFile, TLSClientCAFile: "/nonexistent-ca.pem"})
	require.ErrorContains(t, err, "/nonexistent-ca.pem")
	_, err = New(Options{Views: mirror.New(memory.New(), nil), TLSCertFile: p.serverCertFile, TLSKeyFile: p.serverKeyFile, TLSClientCAFile: p.serverKeyFile})
	require.ErrorContains(t, err, "no PEM certificate")
}
