package pki

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kumametrics/mesh/internal/atomicfile"
)

// ServingFiles describes the serving certificate of one of the control
// plane's TLS servers, generated and kept in a directory: the file names of
// its CA (certificate and key) and of its certificate (with the CA appended)
// and key, and the names used in certificates and errors.
type ServingFiles struct {
	// Server names the server in errors, e.g. "dataplane server".
	Server string
	// CACommonName is the subject of a newly created CA.
	CACommonName string
	CACert       string
	CAKey        string
	Cert         string
	Key          string
}

// Lifetimes of generated serving material.
const (
	servingCALifetime   = 10 * 365 * 24 * time.Hour
	servingCertLifetime = 365 * 24 * time.Hour
	// servingRenewBefore: a generated certificate this close to expiring is
	// reissued at start.
	servingRenewBefore = 30 * 24 * time.Hour
)

// ServingCertificate returns a server's TLS certificate. With certPath and
// keyPath set it loads them (both or neither). Otherwise it uses the one
// generated in dir, creating on first use a CA (its certificate at
// dir/files.CACert, for clients to trust) and a certificate for localhost, the
// host name, every address of the host and the extra addresses (the one the
// server listens on, when it is a specific one, e.g. another loopback
// address), signed by it. The CA is kept across restarts, so clients keep
// trusting the server; the certificate is reissued from it when it nears
// expiry or no longer names every one of those addresses.
func ServingCertificate(dir string, files ServingFiles, certPath, keyPath string, now time.Time, extra ...net.IP) (tls.Certificate, error) {
	if certPath != "" || keyPath != "" {
		if certPath == "" || keyPath == "" {
			return tls.Certificate{}, fmt.Errorf("%s TLS: set both the certificate and the key file", files.Server)
		}
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s TLS: load %s and %s: %w", files.Server, certPath, keyPath, err)
		}
		return c, nil
	}
	ca, err := loadOrCreateServingCA(dir, files, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	return servingFromCA(dir, files, ca, now, extra)
}

// servingFromCA returns the certificate kept in dir when ca signed it and it
// is fit (not near expiry, naming every address), else a new one from ca,
// written to dir.
func servingFromCA(dir string, files ServingFiles, ca *KeyPair, now time.Time, extra []net.IP) (tls.Certificate, error) {
	if pair, err := loadPairFiles(filepath.Join(dir, files.Cert), filepath.Join(dir, files.Key)); err == nil &&
		pair.Cert.CheckSignatureFrom(ca.Cert) == nil && now.Add(servingRenewBefore).Before(pair.Cert.NotAfter) && covers(pair, hostIPs(extra)) {
		return pair.TLS()
	}
	host, _ := os.Hostname()
	leaf := Leaf{
		CommonName: "kuma-control-plane",
		DNSNames:   []string{"localhost"},
		IPs:        hostIPs(extra),
		Server:     true,
		Lifetime:   servingCertLifetime,
	}
	if host != "" && host != "localhost" {
		leaf.DNSNames = append(leaf.DNSNames, host)
	}
	pair, err := Issue(ca, leaf, now)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s TLS: %w", files.Server, err)
	}
	chain := append(append([]byte{}, pair.CertPEM...), ca.CertPEM...)
	if err := writeFiles(dir, map[string][]byte{files.Cert: chain, files.Key: pair.KeyPEM}); err != nil {
		return tls.Certificate{}, fmt.Errorf("%s TLS: %w", files.Server, err)
	}
	return tls.X509KeyPair(chain, pair.KeyPEM)
}

func loadOrCreateServingCA(dir string, files ServingFiles, now time.Time) (*KeyPair, error) {
	ca, err := loadPairFiles(filepath.Join(dir, files.CACert), filepath.Join(dir, files.CAKey))
	if err == nil && ca.Cert.IsCA && now.Before(ca.Cert.NotAfter) {
		return ca, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s CA in %s: %w", files.Server, dir, err)
	}
	ca, err = NewCA(files.CACommonName, KeyType{}, now, servingCALifetime)
	if err != nil {
		return nil, fmt.Errorf("%s CA: %w", files.Server, err)
	}
	// Key first: a CA certificate without its key on disk would be unusable.
	if err := writeFiles(dir, map[string][]byte{files.CAKey: ca.KeyPEM}); err != nil {
		return nil, fmt.Errorf("%s CA: %w", files.Server, err)
	}
	if err := writeFiles(dir, map[string][]byte{files.CACert: ca.CertPEM}); err != nil {
		return nil, fmt.Errorf("%s CA: %w", files.Server, err)
	}
	return ca, nil
}

func loadPairFiles(certPath, keyPath string) (*KeyPair, error) {
	c, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	return ParseKeyPair(c, k)
}

// covers tells whether a certificate still names every address of ips.
func covers(pair *KeyPair, ips []net.IP) bool {
	for _, ip := range ips {
		if pair.Cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

// hostIPs are the addresses a generated certificate names: the loopback
// addresses, every other address of the host except link-local ones, and the
// extra ones (unspecified addresses left out).
func hostIPs(extra []net.IP) []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				ips = append(ips, n.IP)
			}
		}
	}
	for _, ip := range extra {
		if ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

// writeFiles writes each file atomically, keys (*.key) readable by the owner
// only, creating dir (mode 0700) if needed.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for name, data := range files {
		mode := os.FileMode(0o644)
		if filepath.Ext(name) == ".key" {
			mode = 0o600
		}
		if err := atomicfile.Write(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
	}
	return nil
}
