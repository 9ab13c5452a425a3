package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

var testFiles = pki.ServingFiles{
	Server: "test server", CACommonName: "test-ca",
	CACert: "ca.pem", CAKey: "ca.key", Cert: "server.pem", Key: "server.key",
}

// verifies checks that cert is trusted for 127.0.0.1 by the CA file of dir.
func verifies(t *testing.T, cert tls.Certificate, dir string) error {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, testFiles.CACert))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"})
	return err
}

// Replicas on one store serve certificates of one CA: a client trusting
// one replica's CA file trusts every replica.
func TestSharedServingCertificateOneCAForEveryReplica(t *testing.T) {
	st := memory.New()
	dirA, dirB := t.TempDir(), t.TempDir()
	now := time.Now()
	a, err := pki.SharedServingCertificate(t.Context(), st, "test-ca", dirA, testFiles, "", "", now)
	require.NoError(t, err)
	b, err := pki.SharedServingCertificate(t.Context(), st, "test-ca", dirB, testFiles, "", "", now)
	require.NoError(t, err)
	require.NotEqual(t, a.Certificate[0], b.Certificate[0], "each replica issues its own")
	require.NoError(t, verifies(t, b, dirA), "B's certificate verifies with A's CA file")
	require.NoError(t, verifies(t, a, dirB))
	caB, err := os.ReadFile(filepath.Join(dirB, testFiles.CACert))
	require.NoError(t, err)
	caA, err := os.ReadFile(filepath.Join(dirA, testFiles.CACert))
	require.NoError(t, err)
	require.Equal(t, caA, caB, "one CA file")

	// Unlike a CA per work directory (before), which B would not trust.
	own, err := pki.ServingCertificate(t.TempDir(), testFiles, "", "", now)
	require.NoError(t, err)
	require.Error(t, verifies(t, own, dirA))
}

// A control plane that generated its CA in its work directory keeps it:
// the CA goes into the store, so its proxies' CA file stays valid.
func TestSharedServingCertificateMigratesTheWorkDirectorysCA(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	_, err := pki.ServingCertificate(dir, testFiles, "", "", now)
	require.NoError(t, err)
	before, err := os.ReadFile(filepath.Join(dir, testFiles.CACert))
	require.NoError(t, err)

	st := memory.New()
	_, err = pki.SharedServingCertificate(t.Context(), st, "test-ca", dir, testFiles, "", "", now)
	require.NoError(t, err)
	after, err := os.ReadFile(filepath.Join(dir, testFiles.CACert))
	require.NoError(t, err)
	require.Equal(t, before, after)
	other, err := pki.SharedServingCertificate(t.Context(), st, "test-ca", t.TempDir(), testFiles, "", "", now)
	require.NoError(t, err)
	require.NoError(t, verifies(t, other, dir), "a new replica's certificate verifies with the old CA file")
}

// Provided certificate files win; a corrupt stored CA is an error naming it.
func TestSharedServingCertificateProvidedFilesAndCorruptCA(t *testing.T) {
	st := memory.New()
	gen := t.TempDir()
	provided, err := pki.ServingCertificate(gen, testFiles, "", "", time.Now())
	require.NoError(t, err)
	got, err := pki.SharedServingCertificate(t.Context(), st, "test-ca", t.TempDir(), testFiles,
		filepath.Join(gen, testFiles.Cert), filepath.Join(gen, testFiles.Key), time.Now())
	require.NoError(t, err)
	require.Equal(t, provided.Certificate[0], got.Certificate[0])
	n, err := st.Count(t.Context(), resource.KindGlobalSecret)
	require.NoError(t, err)
	require.Zero(t, n, "no CA made")

	require.NoError(t, st.Create(t.Context(), resource.NewGlobalSecret("broken-ca", []byte("not PEM"))))
	_, err = pki.SharedServingCertificate(t.Context(), st, "broken-ca", t.TempDir(), testFiles, "", "", time.Now())
	require.ErrorContains(t, err, "GlobalSecret broken-ca")
}
