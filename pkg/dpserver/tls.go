package dpserver

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

	"github.com/kumametrics/mesh/pkg/pki"
)

// Files the control plane keeps in its work directory for the dataplane server.
const (
	CAFile   = "dp-server-ca.pem"
	caKey    = "dp-server-ca.key"
	certFile = "dp-server.pem"
	keyFile  = "dp-server.key"
)

const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	certLifetime = 365 * 24 * time.Hour
	// renewBefore: a generated certificate this close to expiring is reissued at start.
	renewBefore = 30 * 24 * time.Hour
)

// ServerCertificate returns the dataplane server's TLS certificate. With
// certFile and keyFile set it loads them. Otherwise it uses the one generated
// in workDir, creating on first start a CA (its certificate goes to
// workDir/dp-server-ca.pem for proxies to trust) and a certificate for
// localhost, the host name, every address of the host and the extra
// addresses (the one the server listens on, when it is a specific one, e.g.
// another loopback address); the CA is kept across restarts so proxies keep
// trusting the control plane.
func ServerCertificate(workDir, certPath, keyPath string, now time.Time, extra ...net.IP) (tls.Certificate, error) {
	if certPath != "" || keyPath != "" {
		if certPath == "" || keyPath == "" {
			return tls.Certificate{}, errors.New("dataplane server TLS: set both the certificate and the key file")
		}
		c, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("dataplane server TLS: load %s and %s: %w", certPath, keyPath, err)
		}
		return c, nil
	}
	ca, err := loadOrCreateCA(workDir, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	if pair, err := loadPair(filepath.Join(workDir, certFile), filepath.Join(workDir, keyFile)); err == nil &&
		pair.Cert.CheckSignatureFrom(ca.Cert) == nil && now.Add(renewBefore).Before(pair.Cert.NotAfter) && covers(pair, hostIPs(extra)) {
		return pair.TLS()
	}
	host, _ := os.Hostname()
	leaf := pki.Leaf{
		CommonName: "kuma-control-plane",
		DNSNames:   []string{"localhost"},
		IPs:        hostIPs(extra),
		Server:     true,
		Lifetime:   certLifetime,
	}
	if host != "" && host != "localhost" {
		leaf.DNSNames = append(leaf.DNSNames, host)
	}
	pair, err := pki.Issue(ca, leaf, now)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("dataplane server TLS: %w", err)
	}
	chain := append(append([]byte{}, pair.CertPEM...), ca.CertPEM...)
	if err := writeFiles(workDir, map[string][]byte{certFile: chain, keyFile: pair.KeyPEM}); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(chain, pair.KeyPEM)
}

func loadOrCreateCA(workDir string, now time.Time) (*pki.KeyPair, error) {
	ca, err := loadPair(filepath.Join(workDir, CAFile), filepath.Join(workDir, caKey))
	if err == nil && ca.Cert.IsCA && now.Before(ca.Cert.NotAfter) {
		return ca, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("dataplane server CA in %s: %w", workDir, err)
	}
	ca, err = pki.NewCA("kuma-dp-server-ca", pki.KeyType{}, now, caLifetime)
	if err != nil {
		return nil, fmt.Errorf("dataplane server CA: %w", err)
	}
	// Key first: a CA certificate without its key on disk would be unusable.
	if err := writeFiles(workDir, map[string][]byte{caKey: ca.KeyPEM}); err != nil {
		return nil, err
	}
	if err := writeFiles(workDir, map[string][]byte{CAFile: ca.CertPEM}); err != nil {
		return nil, err
	}
	return ca, nil
}

func loadPair(certPath, keyPath string) (*pki.KeyPair, error) {
	c, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	k, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	return pki.ParseKeyPair(c, k)
}

// hostIPs are the addresses a generated certificate names: the host's and
// the extra ones (unspecified addresses left out).
func hostIPs(extra []net.IP) []net.IP {
	ips := localIPs()
	for _, ip := range extra {
		if ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return ips
}

// covers tells whether a certificate still names every address of ips.
func covers(pair *pki.KeyPair, ips []net.IP) bool {
	for _, ip := range ips {
		if pair.Cert.VerifyHostname(ip.String()) != nil {
			return false
		}
	}
	return true
}

func localIPs() []net.IP {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ips
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			ips = append(ips, n.IP)
		}
	}
	return ips
}

// writeFiles writes each file atomically, keys readable by the owner only.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for name, data := range files {
		mode := os.FileMode(0o644)
		if filepath.Ext(name) == ".key" {
			mode = 0o600
		}
		tmp, err := os.CreateTemp(dir, "."+name+".*")
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		_, err = tmp.Write(data)
		if err == nil {
			err = tmp.Chmod(mode)
		}
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(dir, name))
		}
		if err != nil {
			_ = os.Remove(tmp.Name())
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}
