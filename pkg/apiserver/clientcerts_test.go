package apiserver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// clientCerts issues a client certificate for each common name, all of one CA.
func clientCerts(t *testing.T, names ...string) []*pki.KeyPair {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("operators", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	var out []*pki.KeyPair
	for _, cn := range names {
		kp, err := pki.Issue(ca, pki.Leaf{CommonName: cn, Client: true, Lifetime: time.Hour}, now)
		require.NoError(t, err)
		out = append(out, kp)
	}
	return out
}

func TestLoadClientCerts(t *testing.T) {
	kps := clientCerts(t, "a", "b")
	a, b := kps[0], kps[1]

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "both.pem"), append(append([]byte{}, a.CertPEM...), b.CertPEM...), 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	certs, err := apiserver.LoadClientCerts(dir)
	require.NoError(t, err)
	require.Len(t, certs, 2, "every certificate of a bundle")

	_, err = apiserver.LoadClientCerts(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "missing")
	_, err = apiserver.LoadClientCerts(t.TempDir())
	require.ErrorContains(t, err, "holds no PEM certificate")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem"), a.KeyPEM, 0o600))
	_, err = apiserver.LoadClientCerts(dir)
	require.ErrorContains(t, err, filepath.Join(dir, "key.pem")+": no PEM certificate found")
}

func TestClientCertificateIdentity(t *testing.T) {
	kps := clientCerts(t, "ops", "ops")
	admin, other := kps[0], kps[1]

	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	dir := t.TempDir()
	iss, err := authn.Load(dir, nil)
	require.NoError(t, err)
	dev, err := iss.IssueUser("dev", []string{"developers"}, time.Hour)
	require.NoError(t, err)
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr, Tokens: iss, AdminClientCerts: []*x509.Certificate{admin.Cert}})
	require.NoError(t, err)

	do := func(cert *x509.Certificate, token string) (int, string) {
		req := httptest.NewRequest("GET", "/meshes/default/secrets", nil)
		req.RemoteAddr = remoteAddr
		if cert != nil {
			req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	code, _ := do(admin.Cert, "")
	require.Equal(t, 200, code, "the admin's certificate")
	code, _ = do(admin.Cert, dev)
	require.Equal(t, 200, code, "a certificate and a valid token: the certificate makes an admin")
	code, body := do(admin.Cert, "forged.token.x")
	require.Equal(t, 401, code, "an invalid token is refused even with a certificate")
	require.Contains(t, body, "the user token was refused")
	code, body = do(other.Cert, "")
	require.Equal(t, 401, code, "same subject and CA, another certificate")
	require.Contains(t, body, "apiServer.auth.clientCertsDir")
	code, _ = do(nil, dev)
	require.Equal(t, 403, code)

	cfg := api.TLSConfig(tls.Certificate{})
	require.Equal(t, tls.RequestClientCert, cfg.ClientAuth, "asked, not required: tokens work over HTTPS too")
	require.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	plain, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr})
	require.NoError(t, err)
	require.Equal(t, tls.NoClientCert, plain.TLSConfig(tls.Certificate{}).ClientAuth, "no certificates configured, none asked")

	api.Handle("GET /whoami", apiserver.Public, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := apiserver.UserFrom(r.Context())
		_, _ = io.WriteString(w, u.Name+" "+strings.Join(u.Groups, ","))
	}))
	req := httptest.NewRequest("GET", "/whoami", nil)
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{admin.Cert}}
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, req)
	require.Equal(t, apiserver.ClientCertUserPrefix+"ops "+authn.AdminGroup+","+authn.AuthenticatedGroup, rec.Body.String())
}
