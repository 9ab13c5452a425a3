// Package ca runs the builtin certificate authorities of meshes: it keeps
// each CA's certificate and key in the store as Secrets (created when a mesh
// lists a builtin backend, removed when it stops listing it), assembles a
// mesh's trust bundle, and issues workload and scraper certificates with the
// mesh's SPIFFE identities.
package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Secret names of a builtin backend's material (the reference system's).
func CertSecretName(mesh, backend string) string { return mesh + ".ca-builtin-cert-" + backend }

// KeySecretName names the Secret holding a builtin backend's private key.
func KeySecretName(mesh, backend string) string { return mesh + ".ca-builtin-key-" + backend }

// Enabled returns the mesh's enabled builtin backend, or nil when mTLS is off.
func Enabled(m *resource.MeshSpec) *resource.CertificateAuthorityBackend {
	if m == nil || m.MTLS == nil || m.MTLS.EnabledBackend == "" {
		return nil
	}
	for i := range m.MTLS.Backends {
		b := &m.MTLS.Backends[i]
		if b.Name == m.MTLS.EnabledBackend && b.Type == resource.CATypeBuiltin {
			return b
		}
	}
	return nil
}

// Builtins lists the mesh's builtin backends.
func Builtins(m *resource.MeshSpec) []resource.CertificateAuthorityBackend {
	if m == nil || m.MTLS == nil {
		return nil
	}
	var out []resource.CertificateAuthorityBackend
	for _, b := range m.MTLS.Backends {
		if b.Type == resource.CATypeBuiltin {
			out = append(out, b)
		}
	}
	return out
}

// Secrets looks up a Secret of a mesh by name (nil when absent).
type Secrets func(mesh, name string) *resource.Object

// Load returns a builtin backend's CA from its Secrets.
func Load(secrets Secrets, mesh, backend string) (*pki.KeyPair, error) {
	cert, key := secrets(mesh, CertSecretName(mesh, backend)), secrets(mesh, KeySecretName(mesh, backend))
	if cert == nil || key == nil {
		return nil, fmt.Errorf("CA %q of mesh %q is not created yet", backend, mesh)
	}
	certPEM, err := cert.Secret().Bytes()
	if err != nil {
		return nil, fmt.Errorf("CA %q of mesh %q: %w", backend, mesh, err)
	}
	keyPEM, err := key.Secret().Bytes()
	if err != nil {
		return nil, fmt.Errorf("CA %q of mesh %q: %w", backend, mesh, err)
	}
	pair, err := pki.ParseKeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %q of mesh %q: %w", backend, mesh, err)
	}
	return pair, nil
}

// TrustBundle is the PEM of every builtin CA the mesh lists that exists,
// and the version of the enabled one (a hash of its certificate; "" when
// mTLS is off or its CA is not created yet).
func TrustBundle(secrets Secrets, mesh string, m *resource.MeshSpec) (bundle []byte, version string) {
	enabled := Enabled(m)
	for _, b := range Builtins(m) {
		s := secrets(mesh, CertSecretName(mesh, b.Name))
		if s == nil {
			continue
		}
		pem, err := s.Secret().Bytes()
		if err != nil {
			continue
		}
		bundle = append(bundle, pem...)
		if enabled != nil && enabled.Name == b.Name {
			sum := sha256.Sum256(pem)
			version = hex.EncodeToString(sum[:8])
		}
	}
	return bundle, version
}

// NewCA creates the material of a builtin backend.
func NewCA(mesh string, b resource.CertificateAuthorityBackend, now time.Time) (*pki.KeyPair, error) {
	bits, lifetime := int(resource.DefaultCARSABits), 10*365*24*time.Hour
	if b.Conf != nil && b.Conf.CACert != nil {
		if b.Conf.CACert.RSAbits != 0 {
			bits = int(b.Conf.CACert.RSAbits)
		}
		if b.Conf.CACert.Expiration != "" {
			d, err := resource.ParseDuration(b.Conf.CACert.Expiration)
			if err != nil {
				return nil, fmt.Errorf("conf.caCert.expiration: %w", err)
			}
			lifetime = d
		}
	}
	return pki.NewCA(fmt.Sprintf("%s/%s", mesh, b.Name), pki.KeyType{RSABits: bits}, now, lifetime)
}

// WorkloadLifetime is the lifetime of a backend's workload certificates.
func WorkloadLifetime(b *resource.CertificateAuthorityBackend) time.Duration {
	exp := resource.DefaultDpCertExpiration
	if b != nil && b.DpCert != nil && b.DpCert.Rotation != nil && b.DpCert.Rotation.Expiration != "" {
		exp = b.DpCert.Rotation.Expiration
	}
	d, err := resource.ParseDuration(exp)
	if err != nil || d <= 0 {
		return 24 * time.Hour
	}
	return d
}

// SPIFFEID is the URI identity of a service of a mesh.
func SPIFFEID(mesh, service string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: mesh, Path: "/" + service}
}

// TagURI carries one tag of a workload in its certificate:
// kuma://tag/<key>/<value> (keys may hold '/' and ':', values may not hold
// '/', so the last segment is the value).
func TagURI(key, value string) *url.URL {
	return &url.URL{Scheme: "kuma", Host: "tag", Path: "/" + key + "/" + value}
}

// Identity is who a certificate says its holder is.
type Identity struct {
	Mesh string
	// Tags by key, with every value the certificate carries (services come
	// from the SPIFFE IDs, other tags from kuma:// URIs).
	Tags map[string][]string
}

// IdentityOf reads the identity of a verified peer certificate.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	id := Identity{Tags: map[string][]string{}}
	for _, u := range cert.URIs {
		switch u.Scheme {
		case "spiffe":
			if id.Mesh != "" && id.Mesh != u.Host {
				return Identity{}, errors.New("certificate names several meshes")
			}
			id.Mesh = u.Host
			if svc := trimSlash(u.Path); svc != "" {
				id.Tags[resource.ServiceTag] = appendUnique(id.Tags[resource.ServiceTag], svc)
			}
		case "kuma":
			p := trimSlash(u.Path)
			i := strings.LastIndexByte(p, '/')
			if u.Host != "tag" || i <= 0 || i == len(p)-1 {
				continue
			}
			if k, v := p[:i], p[i+1:]; k != resource.ServiceTag {
				id.Tags[k] = appendUnique(id.Tags[k], v)
			}
		}
	}
	if id.Mesh == "" {
		return Identity{}, errors.New("certificate has no SPIFFE identity")
	}
	return id, nil
}

func trimSlash(p string) string {
	if len(p) > 0 && p[0] == '/' {
		return p[1:]
	}
	return p
}

func appendUnique(l []string, v string) []string {
	if slices.Contains(l, v) {
		return l
	}
	return append(l, v)
}

// Subject is what a workload certificate certifies.
type Subject struct {
	Mesh string
	// Tags of the workload (key → sorted distinct values, as
	// resource.DataplaneSpec.TagValues gives them).
	Tags map[string][]string
	IPs  []net.IP
}

// IssueWorkload certifies pub for subject with the mesh's CA: SPIFFE IDs of
// its services, kuma:// URIs of its other tags, its IP addresses; usable as
// client and server certificate.
func IssueWorkload(caPair *pki.KeyPair, subject Subject, pub crypto.PublicKey, lifetime time.Duration, now time.Time) (*pki.KeyPair, error) {
	var uris []*url.URL
	for _, svc := range subject.Tags[resource.ServiceTag] {
		uris = append(uris, SPIFFEID(subject.Mesh, svc))
	}
	if len(uris) == 0 {
		return nil, errors.New("the workload has no kuma.io/service tag to be identified by")
	}
	keys := make([]string, 0, len(subject.Tags))
	for k := range subject.Tags {
		if k != resource.ServiceTag {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range subject.Tags[k] {
			uris = append(uris, TagURI(k, v))
		}
	}
	return pki.Sign(caPair, pki.Leaf{
		CommonName: subject.Tags[resource.ServiceTag][0],
		URIs:       uris,
		IPs:        subject.IPs,
		Server:     true,
		Client:     true,
		Lifetime:   lifetime,
	}, pub, now, nil)
}
