package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/kumametrics/mesh/pkg/globalsecret"
	"github.com/kumametrics/mesh/pkg/resource"
)

// SharedServingCertificate is ServingCertificate for control planes that
// share a store: the CA is the GlobalSecret caSecret (its certificate and
// key, PEM), created once by the first replica, so every replica's
// certificate verifies with the one CA certificate a client trusts. A
// control plane that kept its CA in dir (files.CACert and files.CAKey, from
// before) moves that CA into the store, so that its clients keep trusting
// it. Each replica issues its own certificate from the CA (the names of its
// own host) and writes the CA to dir (files.CACert, files.CAKey) as before.
// With certPath and keyPath set it loads them.
func SharedServingCertificate(ctx context.Context, st globalsecret.Store, caSecret, dir string, files ServingFiles,
	certPath, keyPath string, now time.Time, extra ...net.IP) (tls.Certificate, error) {
	if certPath != "" || keyPath != "" {
		return ServingCertificate(dir, files, certPath, keyPath, now, extra...)
	}
	data, _, err := globalsecret.Ensure(ctx, st, caSecret, func() ([]byte, []*resource.Object, error) {
		ca, err := loadPairFiles(filepath.Join(dir, files.CACert), filepath.Join(dir, files.CAKey))
		switch {
		case err == nil && ca.Cert.IsCA && now.Before(ca.Cert.NotAfter):
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nil, nil, fmt.Errorf("%s CA in %s: %w", files.Server, dir, err)
		default:
			if ca, err = NewCA(files.CACommonName, KeyType{}, now, servingCALifetime); err != nil {
				return nil, nil, fmt.Errorf("%s CA: %w", files.Server, err)
			}
		}
		return append(append([]byte{}, ca.CertPEM...), ca.KeyPEM...), nil, nil
	})
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s CA: %w", files.Server, err)
	}
	ca, err := parseCAPEM(data)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s CA in GlobalSecret %s: %w", files.Server, caSecret, err)
	}
	// The work directory keeps a copy of the CA, as before the store kept
	// it (a control plane on the memory store keeps it across restarts);
	// the store's wins over it. Key first, as loadOrCreateServingCA.
	for _, f := range []struct {
		name string
		data []byte
	}{{files.CAKey, ca.KeyPEM}, {files.CACert, ca.CertPEM}} {
		if old, err := os.ReadFile(filepath.Join(dir, f.name)); err != nil || !bytes.Equal(old, f.data) {
			if err := writeFiles(dir, map[string][]byte{f.name: f.data}); err != nil {
				return tls.Certificate{}, fmt.Errorf("%s CA: %w", files.Server, err)
			}
		}
	}
	return servingFromCA(dir, files, ca, now, extra)
}

// parseCAPEM reads a CA kept as its certificate's PEM followed by its key's.
func parseCAPEM(data []byte) (*KeyPair, error) {
	var certPEM, keyPEM []byte
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			certPEM = append(certPEM, pem.EncodeToMemory(block)...)
		} else {
			keyPEM = append(keyPEM, pem.EncodeToMemory(block)...)
		}
	}
	if certPEM == nil || keyPEM == nil {
		return nil, errors.New("it must hold a PEM certificate and its PEM key")
	}
	ca, err := ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !ca.Cert.IsCA {
		return nil, errors.New("its certificate is not a CA")
	}
	return ca, nil
}
