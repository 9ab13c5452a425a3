package dpserver

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
	"github.com/kumametrics/mesh/pkg/resource"
)

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func TestDataplaneTokens(t *testing.T) {
	iss, err := authn.NewIssuer([]byte("u-key-u-key-u-key-u-key-u-key-32"), []byte("d-key-d-key-d-key-d-key-d-key-32"), nil)
	require.NoError(t, err)
	h := start(t, func(o *Options) { o.Tokens = iss })
	web, err := iss.IssueDataplane("default", "web", 0)
	require.NoError(t, err)
	other, err := iss.IssueDataplane("default", "other", 0)
	require.NoError(t, err)
	user, err := iss.IssueUser("admin", []string{authn.AdminGroup}, 0)
	require.NoError(t, err)

	for name, ctx := range map[string]context.Context{
		"no token":                   t.Context(),
		"token of another dataplane": withToken(t.Context(), other),
		"a user token":               withToken(t.Context(), user),
		"garbage":                    withToken(t.Context(), "x.y.z"),
	} {
		t.Run(name, func(t *testing.T) {
			s := h.connectCtx(t, ctx, dataplaneJSON("web", "127.0.0.2", false))
			_, err := s.Recv()
			require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
			_, err = h.client.Deregister(ctx, &meshv1.DeregisterRequest{Mesh: "default", Name: "web"})
			require.Equal(t, codes.Unauthenticated, status.Code(err))
			_, err = h.client.SignWorkloadCertificate(ctx, &meshv1.SignRequest{Mesh: "default", Name: "web"})
			require.Equal(t, codes.Unauthenticated, status.Code(err))
		})
	}
	s := h.connectCtx(t, withToken(t.Context(), web), dataplaneJSON("web", "127.0.0.2", false))
	cfg, _ := s.next()
	require.Equal(t, "web", cfg.GetName())
}

func csrPEM(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignWorkloadCertificate(t *testing.T) {
	h := start(t)
	s := h.connect(t, `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.2","advertisedAddress":"192.0.2.7","inbound":[{"port":8080,"tags":{"kuma.io/service":"web","version":"v1"}}]}}`)
	s.next()
	req := &meshv1.SignRequest{Mesh: "default", Name: "web", Csr: csrPEM(t)}

	_, err := h.client.SignWorkloadCertificate(t.Context(), req)
	require.Equal(t, codes.FailedPrecondition, status.Code(err), "no mTLS in the mesh: %v", err)

	// mTLS on, with the CA material (as the CA manager stores it).
	m := resource.New("", "default", &resource.MeshSpec{MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{
		{Name: "ca-1", Type: "builtin", DpCert: &resource.DpCert{Rotation: &resource.DpCertRotation{Expiration: "2h"}}},
	}}})
	_, err = h.mgr.Apply(t.Context(), m, 0)
	require.NoError(t, err)
	pair, err := ca.NewCA("default", m.Mesh().MTLS.Backends[0], time.Now())
	require.NoError(t, err)
	for _, sec := range []*resource.Object{
		resource.NewSecret("default", ca.KeySecretName("default", "ca-1"), pair.KeyPEM),
		resource.NewSecret("default", ca.CertSecretName("default", "ca-1"), pair.CertPEM),
	} {
		_, err = h.mgr.Apply(t.Context(), sec, 0)
		require.NoError(t, err)
	}
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
