package apiserver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
)

func scraperCSR(t *testing.T) string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	require.NoError(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestScraperCertificate(t *testing.T) {
	e := newEnv(t)
	csr := scraperCSR(t)
	body := func(service, csr, validFor string) string {
		b, _ := json.Marshal(map[string]string{"service": service, "csr": csr, "validFor": validFor})
		return string(b)
	}
	mgr := manager.New(e.store, nil)
	ctx := t.Context()

	// No mTLS yet, bad input, unknown mesh.
	cases := []struct {
		name, path, body string
		status           int
		details          string
		field            string
	}{
		{"mesh without mTLS", "/meshes/default/scraper-certificate", body("prometheus", csr, ""), 400, "no mTLS", ""},
		{"unknown mesh", "/meshes/nope/scraper-certificate", body("prometheus", csr, ""), 404, `mesh "nope" does not exist`, ""},
		{"no service", "/meshes/default/scraper-certificate", body("", csr, ""), 400, "", "service"},
		{"not a CSR", "/meshes/default/scraper-certificate", body("prometheus", "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", ""), 400, "", "csr"},
		{"bad validFor", "/meshes/default/scraper-certificate", body("prometheus", csr, "forever"), 400, "", "validFor"},
		{"unknown field", "/meshes/default/scraper-certificate", `{"service":"p","csr":"x","ttl":"1h"}`, 400, "", "ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(t, http.MethodPost, tc.path, tc.body)
			require.Equal(t, tc.status, res.status, string(res.body))
			eb := decode[errorBody](t, res.body)
			require.Contains(t, eb.Details, tc.details)
			if tc.field != "" {
				var fields []string
				for _, c := range eb.Causes {
					fields = append(fields, c.Field)
				}
				require.Contains(t, fields, tc.field)
			}
		})
	}

	// mTLS on with its CA: a client certificate of spiffe://default/prometheus.
	m := resource.New("", "default", &resource.MeshSpec{MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}}})
	_, err := mgr.Apply(ctx, m, 0)
	require.NoError(t, err)
	pair, err := ca.NewCA("default", m.Mesh().MTLS.Backends[0], time.Now())
	require.NoError(t, err)
	for _, s := range []*resource.Object{
		resource.NewSecret("default", ca.KeySecretName("default", "ca-1"), pair.KeyPEM),
		resource.NewSecret("default", ca.CertSecretName("default", "ca-1"), pair.CertPEM),
	} {
		_, err = mgr.Apply(ctx, s, 0)
		require.NoError(t, err)
	}
	res := e.do(t, http.MethodPost, "/meshes/default/scraper-certificate", body("prometheus", csr, "48h"))
	require.Equal(t, 200, res.status, string(res.body))
	var out struct{ Certificate, CABundle, NotAfter string }
	require.NoError(t, json.Unmarshal(res.body, &out))
	block, _ := pem.Decode([]byte(out.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(out.CABundle)))
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	id, err := ca.IdentityOf(cert)
	require.NoError(t, err)
	require.Equal(t, []string{"prometheus"}, id.Tags[resource.ServiceTag])
	require.WithinDuration(t, time.Now().Add(48*time.Hour), cert.NotAfter, time.Minute)
}
