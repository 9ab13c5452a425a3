package postgres

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/pki"
)

// Each TLS mode builds the tls.Config it promises, and a server
// certificate is accepted or refused accordingly.
func TestTLSModes(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("pg-ca", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	other, err := pki.NewCA("other-ca", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	srv, err := pki.Issue(ca, pki.Leaf{CommonName: "db", DNSNames: []string{"db.example"}, Server: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caPath, ca.CertPEM, 0o600))
	otherPath := filepath.Join(t.TempDir(), "other.pem")
	require.NoError(t, os.WriteFile(otherPath, other.CertPEM, 0o600))

	chain := []*x509.Certificate{srv.Cert}

	cfg, err := TLSConfig(TLS{Mode: TLSDisable}, "db.example")
	require.NoError(t, err)
	require.Nil(t, cfg, "disable: no TLS")

	cfg, err = TLSConfig(TLS{Mode: TLSVerifyNone}, "db.example")
	require.NoError(t, err)
	require.True(t, cfg.InsecureSkipVerify)
	require.Nil(t, cfg.VerifyConnection)

	cfg, err = TLSConfig(TLS{Mode: TLSVerifyCA, CAPath: caPath}, "10.1.2.3")
	require.NoError(t, err)
	require.True(t, cfg.InsecureSkipVerify, "Go's name check is off…")
	require.NoError(t, cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: chain}), "…the chain is verified, not the name")
	cfg, err = TLSConfig(TLS{Mode: TLSVerifyCA, CAPath: otherPath}, "db.example")
	require.NoError(t, err)
	require.ErrorContains(t, cfg.VerifyConnection(tls.ConnectionState{PeerCertificates: chain}), "verify the server's certificate")
	_, err = TLSConfig(TLS{Mode: TLSVerifyCA}, "db.example")
	require.ErrorContains(t, err, "needs a CA")

	cfg, err = TLSConfig(TLS{Mode: TLSVerifyFull, CAPath: caPath}, "db.example")
	require.NoError(t, err)
	require.False(t, cfg.InsecureSkipVerify, "full verification: Go checks chain and name")
	require.Equal(t, "db.example", cfg.ServerName)
	require.NotNil(t, cfg.RootCAs)

	_, err = TLSConfig(TLS{Mode: "require"}, "db.example")
	require.ErrorContains(t, err, `mode must be disable, verifyNone, verifyCa or verifyFull, got "require"`)
	_, err = TLSConfig(TLS{Mode: TLSVerifyFull, KeyPath: "k.pem"}, "db.example")
	require.ErrorContains(t, err, "set both the client certificate and its key")
}

// The store.postgres settings become pgx's connection configuration.
func TestConnectionOfSettings(t *testing.T) {
	pc := cpconfig.Default().Store.Postgres
	opts, err := OptionsOf(pc, nil)
	require.NoError(t, err)
	c := opts.Conn
	require.Equal(t, "127.0.0.1", c.Host)
	require.Equal(t, uint16(15432), c.Port)
	require.Equal(t, "kuma", c.User)
	require.Equal(t, "kuma", c.Password)
	require.Equal(t, "kuma", c.Database)
	require.Equal(t, 5*time.Second, c.ConnectTimeout)
	require.Nil(t, c.TLSConfig)
	require.Empty(t, c.Fallbacks, "no silent fallback to plain text")
	require.Equal(t, int32(50), opts.MaxConns)
	require.Equal(t, 10*time.Second, opts.MinReconnectInterval)
	require.Equal(t, time.Minute, opts.MaxReconnectInterval)
}
