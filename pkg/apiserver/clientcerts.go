package apiserver

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/pki"
)

// ClientCertUserPrefix starts the user name of an admin identified by its
// client certificate; the certificate's common name follows.
const ClientCertUserPrefix = "client-certificate:"

// LoadClientCerts reads the admin client certificates of a directory
// (apiServer.auth.clientCertsDir): every regular file whose name does not
// start with a dot must hold one or more PEM certificates. An error names the
// file at fault. The directory is read once, when the control plane starts.
func LoadClientCerts(dir string) ([]*x509.Certificate, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("client certificates: %w", err)
	}
	var out []*x509.Certificate
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		info, err := os.Stat(path) // follows symbolic links
		if err != nil {
			return nil, fmt.Errorf("client certificates: %w", err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("client certificates: %w", err)
		}
		certs, err := pki.ParseCertificates(data)
		if err != nil {
			return nil, fmt.Errorf("client certificates: %s: %w", path, err)
		}
		out = append(out, certs...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("client certificates: %s holds no PEM certificate", dir)
	}
	return out, nil
}

// clientCerts is the set of admin client certificates, by the SHA-256 of
// their DER bytes.
type clientCerts map[[sha256.Size]byte]bool

func newClientCerts(certs []*x509.Certificate) clientCerts {
	if len(certs) == 0 {
		return nil
	}
	out := make(clientCerts, len(certs))
	for _, c := range certs {
		out[sha256.Sum256(c.Raw)] = true
	}
	return out
}

// user returns the admin a presented client certificate identifies. Only a
// certificate identical to one of the set counts: no CA is trusted, so
// issuing certificates gives nobody access.
func (c clientCerts) user(cert *x509.Certificate) (authn.User, error) {
	if !c[sha256.Sum256(cert.Raw)] {
		return authn.User{}, errors.New("the client certificate is not one of the control plane's admin client certificates (apiServer.auth.clientCertsDir)")
	}
	name := cert.Subject.CommonName
	if name == "" {
		name = cert.SerialNumber.String()
	}
	return authn.User{Name: ClientCertUserPrefix + name, Groups: []string{authn.AdminGroup, authn.AuthenticatedGroup}}, nil
}

// TLSConfig is the configuration of an HTTPS listener of this server with
// certificate cert: TLS 1.2 or later, HTTP/2 and HTTP/1.1. With
// Options.AdminClientCerts the server asks clients for a certificate; one is
// not required (user tokens work over HTTPS too), nor verified against a CA:
// a presented certificate must be one of AdminClientCerts, or the request is
// refused with 401.
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if len(s.clientCerts) > 0 {
		cfg.ClientAuth = tls.RequestClientCert
		// Acceptable issuers would name CAs; the certificates are matched
		// exactly instead, so the request names none.
	}
	return cfg
}
