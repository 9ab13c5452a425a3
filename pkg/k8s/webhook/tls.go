package webhook

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
)

// The files of a certificate directory (a kubernetes.io/tls Secret mounted
// as a volume).
const (
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// CertDirTLS returns the server TLS configuration of a certificate
// directory: dir/tls.crt (the certificate, then its chain) and dir/tls.key,
// read at every handshake, so that a renewed Secret is served without a
// restart. It fails at once when they do not make a key pair.
func CertDirTLS(dir string) (*tls.Config, error) {
	load := func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
		if err != nil {
			return nil, fmt.Errorf("admission server certificate in %s: %w", dir, err)
		}
		return &c, nil
	}
	if _, err := load(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return load() },
	}, nil
}
