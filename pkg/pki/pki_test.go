package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIssueAndVerify(t *testing.T) {
	now := time.Now()
	for _, kt := range []KeyType{{}, {RSABits: 2048}} {
		ca, err := NewCA("test CA", kt, now, 24*time.Hour)
		require.NoError(t, err)
		require.True(t, ca.Cert.IsCA)
		spiffe, _ := url.Parse("spiffe://default/web")
		leaf, err := Issue(ca, Leaf{
			CommonName: "web", Organizations: []string{"system:masters"}, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 2)}, URIs: []*url.URL{spiffe},
			Server: true, Client: true, Lifetime: time.Hour,
		}, now)
		require.NoError(t, err)
		pool, err := Pool(ca.CertPEM)
		require.NoError(t, err)
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			_, err = leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{usage}})
			require.NoError(t, err)
		}
		require.NoError(t, leaf.Cert.VerifyHostname("127.0.0.2"))
		require.Equal(t, "spiffe://default/web", leaf.Cert.URIs[0].String())
		require.Equal(t, []string{"system:masters"}, leaf.Cert.Subject.Organization)
		_, err = tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		require.NoError(t, err)
		back, err := ParseKeyPair(leaf.CertPEM, leaf.KeyPEM)
		require.NoError(t, err)
		require.Equal(t, leaf.Cert.SerialNumber, back.Cert.SerialNumber)
	}
}

func TestLeafNeverOutlivesItsCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("short", KeyType{}, now, time.Hour)
	require.NoError(t, err)
	leaf, err := Issue(ca, Leaf{CommonName: "x", Lifetime: 100 * time.Hour, Server: true}, now)
	require.NoError(t, err)
	require.False(t, leaf.Cert.NotAfter.After(ca.Cert.NotAfter))
	_, err = Issue(leaf, Leaf{CommonName: "y", Lifetime: time.Hour}, now)
	require.ErrorContains(t, err, "not a certificate authority")
}

func TestBadPEM(t *testing.T) {
	_, err := ParseCertificates([]byte("garbage"))
	require.ErrorContains(t, err, "no PEM certificate")
	_, err = ParseKeyPair([]byte("x"), []byte("y"))
	require.ErrorContains(t, err, "parse key pair")
}
