package dpserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// tokenIssuer is an issuer with fixed keys and the given clock.
func tokenIssuer(t *testing.T, now func() time.Time) *authn.Issuer {
	t.Helper()
	iss, err := authn.NewIssuer([]byte("u-key-u-key-u-key-u-key-u-key-32"), []byte("d-key-d-key-d-key-d-key-d-key-32"), now)
	require.NoError(t, err)
	return iss
}

func dpToken(t *testing.T, iss *authn.Issuer, name string, tags map[string][]string) string {
	t.Helper()
	token, err := iss.IssueDataplane("default", name, tags, 0)
	require.NoError(t, err)
	return token
}

func services(s ...string) map[string][]string { return map[string][]string{resource.ServiceTag: s} }

// refusedOnOpen connects with dpJSON and returns the error of the stream.
func (h *harness) refusedOnOpen(t *testing.T, ctx context.Context, dpJSON string) error {
	t.Helper()
	_, err := h.connectCtx(t, ctx, dpJSON).Recv()
	require.Error(t, err)
	return err
}

func TestDataplaneTokens(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, func(o *dpserver.Options) { o.Authenticator = dpserver.DataplaneTokens{Verifier: iss} })
	web := dpToken(t, iss, "web", services("web"))
	other := dpToken(t, iss, "other", services("web"))
	user, err := iss.IssueUser("admin", []string{authn.AdminGroup}, 0)
	require.NoError(t, err)
	expired, err := tokenIssuer(t, func() time.Time { return time.Now().Add(-2 * time.Hour) }).IssueDataplane("default", "web", services("web"), time.Hour)
	require.NoError(t, err)

	for _, tc := range []struct {
		name   string
		ctx    context.Context
		code   codes.Code
		reason string
		msg    string
	}{
		{"no token", t.Context(), codes.Unauthenticated, dpserver.ReasonNoToken, "a dataplane token is required"},
		{"token of another dataplane", withToken(t.Context(), other), codes.PermissionDenied, dpserver.ReasonWrongDataplane,
			`the dataplane token is for another dataplane: it names dataplane "other" in mesh "default", not "web" in mesh "default"`},
		{"a user token", withToken(t.Context(), user), codes.Unauthenticated, dpserver.ReasonInvalidToken, "signature does not match"},
		{"garbage", withToken(t.Context(), "x.y.z"), codes.Unauthenticated, dpserver.ReasonInvalidToken, "header is not base64url"},
		{"expired", withToken(t.Context(), expired), codes.Unauthenticated, dpserver.ReasonExpiredToken, "token expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Refused(t, tc.reason)
			err := h.refusedOnOpen(t, tc.ctx, dataplaneJSON("web", "127.0.0.2", false))
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.ErrorContains(t, err, "dataplane default/web: ")
			require.ErrorContains(t, err, tc.msg)
			_, err = h.client.Deregister(tc.ctx, &meshv1.DeregisterRequest{Mesh: "default", Name: "web"})
			require.Equal(t, tc.code, status.Code(err))
			_, err = h.client.SignWorkloadCertificate(tc.ctx, &meshv1.SignRequest{Mesh: "default", Name: "web"})
			require.Equal(t, tc.code, status.Code(err))
			require.Equal(t, before+3, h.Refused(t, tc.reason), "each refused call is counted")
		})
	}
	s := h.connectCtx(t, withToken(t.Context(), web), dataplaneJSON("web", "127.0.0.2", false))
	cfg, _ := s.next()
	require.Equal(t, "web", cfg.GetName())
}

// TestTokenBindsServices is the attack of issue 9: the holder of the token
// of frontend-1 registers as kuma.io/service: payments.
func TestTokenBindsServices(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, func(o *dpserver.Options) { o.Authenticator = dpserver.DataplaneTokens{Verifier: iss} })
	ctx := withToken(t.Context(), dpToken(t, iss, "frontend-1", services("frontend")))
	payments := `{"type":"Dataplane","mesh":"default","name":"frontend-1","networking":{"address":"127.0.0.2","inbound":[` +
		`{"port":8080,"tags":{"kuma.io/service":"frontend"}},{"port":8081,"tags":{"kuma.io/service":"payments"}}]}}`
	err := h.refusedOnOpen(t, ctx, payments)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, `dataplane default/frontend-1: networking.inbound[1] has kuma.io/service "payments", but the dataplane token allows only "frontend"; `+
		`a proxy may present only what its token allows: fix the Dataplane, or have an admin issue a token that allows it `+
		`(kumactl generate dataplane-token --mesh default --name frontend-1 --tag KEY=VALUE)`, status.Convert(err).Message())
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonServiceNotAllowed))
	_, err = h.Store.Get(t.Context(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "frontend-1"})
	require.ErrorIs(t, err, store.ErrNotFound, "nothing stored")

	// Other tags the token names bind too.
	vctx := withToken(t.Context(), dpToken(t, iss, "frontend-1", map[string][]string{resource.ServiceTag: {"frontend"}, "version": {"v1"}}))
	err = h.refusedOnOpen(t, vctx, `{"type":"Dataplane","mesh":"default","name":"frontend-1","networking":{"address":"127.0.0.2","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"frontend","version":"v2"}}]}}`)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.ErrorContains(t, err, `networking.inbound[0] has version "v2", but the dataplane token allows only "v1"`)
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonTagNotAllowed))

	// What the token allows is served.
	s := h.connectCtx(t, ctx, `{"type":"Dataplane","mesh":"default","name":"frontend-1","networking":{"address":"127.0.0.2","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"frontend"}}]}}`)
	cfg, _ := s.next()
	require.Equal(t, "frontend-1", cfg.GetName())
}

// TestStoredDataplaneIsNotReplaced: a proxy whose token does not cover the
// stored Dataplane of its name neither replaces nor deregisters it.
func TestStoredDataplaneIsNotReplaced(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, func(o *dpserver.Options) { o.Authenticator = dpserver.DataplaneTokens{Verifier: iss} })
	key := resource.Key{Mesh: "default", Name: "web"}
	adminDP := mustDecode(t, `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.9","inbound":[{"port":8080,"tags":{"kuma.io/service":"payments"}}]}}`)
	_, err := h.Manager.Apply(t.Context(), adminDP, 0)
	require.NoError(t, err)

	ctx := withToken(t.Context(), dpToken(t, iss, "web", services("web")))
	err = h.refusedOnOpen(t, ctx, dataplaneJSON("web", "127.0.0.2", false))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, `dataplane default/web: a Dataplane of that name is stored that this proxy's token does not cover `+
		`(its networking.inbound[0] has kuma.io/service "payments", but the dataplane token allows only "web"), and a proxy never `+
		`replaces or removes such a Dataplane; if this proxy should take the name, an admin deletes it first (kumactl delete dataplane web --mesh default)`,
		status.Convert(err).Message())
	_, err = h.client.Deregister(ctx, &meshv1.DeregisterRequest{Mesh: "default", Name: "web"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, 2.0, h.Refused(t, dpserver.ReasonStoredDataplaneDiffers))
	have, err := h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, []string{"payments"}, have.Dataplane().Services(), "the stored Dataplane is untouched")

	// A token that covers it replaces it, and the proxy's own changes
	// (another address) are applied.
	any := withToken(t.Context(), dpToken(t, iss, "web", services("*")))
	s := h.connectCtx(t, any, dataplaneJSON("web", "127.0.0.2", false))
	s.next()
	have, err = h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, []string{"web"}, have.Dataplane().Services())
	s.cancel()
	s = h.connectCtx(t, ctx, dataplaneJSON("web", "127.0.0.3", false))
	s.next()
	have, err = h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.3", have.Dataplane().Networking.Address)
	_, err = h.client.Deregister(ctx, &meshv1.DeregisterRequest{Mesh: "default", Name: "web"})
	require.NoError(t, err)
	_, err = h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestUntaggedTokens: a token that does not constrain kuma.io/service is
// refused by default, and accepted for any service with the opt-out.
func TestUntaggedTokens(t *testing.T) {
	iss := tokenIssuer(t, nil)
	untagged := dpToken(t, iss, "web", nil)
	versionOnly := dpToken(t, iss, "web", map[string][]string{"version": {"v1"}})

	h := start(t, func(o *dpserver.Options) { o.Authenticator = dpserver.DataplaneTokens{Verifier: iss} })
	err := h.refusedOnOpen(t, withToken(t.Context(), untagged), dataplaneJSON("web", "127.0.0.2", false))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, `dataplane default/web: the dataplane token does not name the services the proxy may serve (no kuma.io/service tag), `+
		`and this control plane refuses such tokens; issue one that does: kumactl generate dataplane-token --mesh default --name web --tag kuma.io/service=web `+
		`(--tag kuma.io/service='*' allows any service; the control plane setting dpServer.authn.dpProxy.dpToken.allowUntaggedTokens accepts untagged tokens for any service)`,
		status.Convert(err).Message())
	err = h.refusedOnOpen(t, withToken(t.Context(), versionOnly), dataplaneJSON("web", "127.0.0.2", false))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, 2.0, h.Refused(t, dpserver.ReasonUntaggedToken))

	open := start(t, func(o *dpserver.Options) {
		o.Authenticator = dpserver.DataplaneTokens{Verifier: iss, AllowUntagged: true}
	})
	s := open.connectCtx(t, withToken(t.Context(), untagged), dataplaneJSON("web", "127.0.0.2", false))
	cfg, _ := s.next()
	require.Equal(t, "web", cfg.GetName(), "any service with the opt-out")
	err = open.refusedOnOpen(t, withToken(t.Context(), versionOnly), `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"web","version":"v2"}}]}}`)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "the tags a token names still bind: %v", err)
}

func csrPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// enableMTLS turns on mTLS in mesh default with the CA material (as the CA
// manager stores it).
func enableMTLS(t *testing.T, h *harness) *pki.KeyPair {
	t.Helper()
	m := resource.New("", "default", &resource.MeshSpec{MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{
		{Name: "ca-1", Type: "builtin", DpCert: &resource.DpCert{Rotation: &resource.DpCertRotation{Expiration: "2h"}}},
	}}})
	_, err := h.Manager.Apply(t.Context(), m, 0)
	require.NoError(t, err)
	pair, err := ca.NewCA("default", m.Mesh().MTLS.Backends[0], time.Now())
	require.NoError(t, err)
	for _, sec := range []*resource.Object{
		resource.NewSecret("default", ca.KeySecretName("default", "ca-1"), pair.KeyPEM),
		resource.NewSecret("default", ca.CertSecretName("default", "ca-1"), pair.CertPEM),
	} {
		_, err = h.Manager.Apply(t.Context(), sec, 0)
		require.NoError(t, err)
	}
	return pair
}

func TestSignWorkloadCertificate(t *testing.T) {
	h := start(t)
	s := h.connect(t, `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.2","advertisedAddress":"192.0.2.7","inbound":[{"port":8080,"tags":{"kuma.io/service":"web","version":"v1"}}]}}`)
	s.next()
	req := &meshv1.SignRequest{Mesh: "default", Name: "web", Csr: csrPEM(t)}

	_, err := h.client.SignWorkloadCertificate(t.Context(), req)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "no mTLS in the mesh: %v", err)

	pair := enableMTLS(t, h)
	var resp *meshv1.SignResponse
	require.Eventually(t, func() bool {
		resp, err = h.client.SignWorkloadCertificate(t.Context(), req)
		return err == nil
	}, waitTimeout, 5*time.Millisecond, "%v", err)
	block, _ := pem.Decode(resp.GetCertChain())
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	id, err := ca.IdentityOf(cert)
	require.NoError(t, err)
	require.Equal(t, "default", id.Mesh)
	require.Equal(t, []string{"web"}, id.Tags[resource.ServiceTag])
	require.Equal(t, []string{"v1"}, id.Tags["version"])
	require.NoError(t, cert.VerifyHostname("127.0.0.2"))
	require.NoError(t, cert.VerifyHostname("192.0.2.7"))
	require.WithinDuration(t, time.Now().Add(2*time.Hour), cert.NotAfter, time.Minute, "dpCert.rotation.expiration")
	require.Equal(t, pair.CertPEM, resp.GetTrustBundle())
	require.NotEmpty(t, resp.GetCaVersion())

	_, err = h.client.SignWorkloadCertificate(t.Context(), &meshv1.SignRequest{Mesh: "default", Name: "web", Csr: []byte("nope")})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = h.client.SignWorkloadCertificate(t.Context(), &meshv1.SignRequest{Mesh: "default", Name: "ghost", Csr: csrPEM(t)})
	require.Equal(t, codes.NotFound, status.Code(err))
}

// certificateFor asks for a certificate until the control plane's view
// allows an answer other than NotFound/FailedPrecondition (the Dataplane or
// the CA not seen yet).
func certificateFor(t *testing.T, h *harness, ctx context.Context, name string) (*meshv1.SignResponse, error) {
	t.Helper()
	var (
		resp *meshv1.SignResponse
		err  error
	)
	require.Eventually(t, func() bool {
		resp, err = h.client.SignWorkloadCertificate(ctx, &meshv1.SignRequest{Mesh: "default", Name: name, Csr: csrPEM(t)})
		c := status.Code(err)
		return c != codes.NotFound && c != codes.FailedPrecondition && c != codes.Unavailable
	}, waitTimeout, 5*time.Millisecond, "%v", err)
	return resp, err
}

// TestSignNeverCertifiesWhatTheTokenDoesNotAllow: the certificate's
// identities come from the stored Dataplane, and only when the proxy's token
// allows every inbound tag of it.
func TestSignNeverCertifiesWhatTheTokenDoesNotAllow(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, func(o *dpserver.Options) { o.Authenticator = dpserver.DataplaneTokens{Verifier: iss} })
	enableMTLS(t, h)
	ctx := withToken(t.Context(), dpToken(t, iss, "web", services("web")))
	s := h.connectCtx(t, ctx, dataplaneJSON("web", "127.0.0.2", false))
	s.next()
	resp, err := certificateFor(t, h, ctx, "web")
	require.NoError(t, err)
	block, _ := pem.Decode(resp.GetCertChain())
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	id, err := ca.IdentityOf(cert)
	require.NoError(t, err)
	require.Equal(t, []string{"web"}, id.Tags[resource.ServiceTag])

	// An admin makes the stored Dataplane web serve payments: the token of
	// web gets no certificate for it.
	_, err = h.Manager.Apply(t.Context(), mustDecode(t, `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.2","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"web"}},{"port":8081,"tags":{"kuma.io/service":"payments"}}]}}`), 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err = h.client.SignWorkloadCertificate(ctx, &meshv1.SignRequest{Mesh: "default", Name: "web", Csr: csrPEM(t)})
		return status.Code(err) == codes.PermissionDenied
	}, waitTimeout, 5*time.Millisecond, "%v", err)
	require.Equal(t, `dataplane default/web: no certificate: in the stored Dataplane, networking.inbound[1] has kuma.io/service "payments", `+
		`but the dataplane token allows only "web"`, status.Convert(err).Message())
	require.GreaterOrEqual(t, h.Refused(t, dpserver.ReasonServiceNotAllowed), 1.0)

	// An untagged token gets none either; with the opt-out it does.
	untagged := withToken(t.Context(), dpToken(t, iss, "web", nil))
	_, err = h.client.SignWorkloadCertificate(untagged, &meshv1.SignRequest{Mesh: "default", Name: "web", Csr: csrPEM(t)})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonUntaggedToken))
}
