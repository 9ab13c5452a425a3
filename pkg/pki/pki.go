// Package pki creates keys and X.509 certificates (certificate authorities
// and the leaves they sign, for servers and workloads) and moves them in and
// out of PEM. It holds no state: callers decide where material is kept
// (ServingCertificate keeps a server's generated CA and certificate in the
// directory and under the file names its caller gives).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"
)

// KeyPair is a certificate and its private key, parsed and in PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// TLS returns the pair as a tls.Certificate.
func (k *KeyPair) TLS() (tls.Certificate, error) {
	return tls.X509KeyPair(k.CertPEM, k.KeyPEM)
}

// KeyType selects a private key algorithm.
type KeyType struct {
	// RSABits > 0 selects RSA with that many bits; 0 selects ECDSA P-256.
	RSABits int
}

func newKey(kt KeyType) (crypto.Signer, error) {
	if kt.RSABits > 0 {
		return rsa.GenerateKey(rand.Reader, kt.RSABits)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// clockSkew backdates certificates so a peer whose clock is slightly behind accepts them.
const clockSkew = 5 * time.Minute

// NewCA creates a self-signed certificate authority valid for lifetime.
func NewCA(commonName string, kt KeyType, now time.Time, lifetime time.Duration) (*KeyPair, error) {
	key, err := newKey(kt)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	return sign(tmpl, tmpl, key, key)
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// Organizations of the subject (Kubernetes reads a client
	// certificate's as the user's groups).
	Organizations []string
	DNSNames      []string
	IPs           []net.IP
	URIs          []*url.URL
	// Server and Client select the extended key usages.
	Server, Client bool
	Lifetime       time.Duration
	KeyType        KeyType
}

// Issue creates a key and a certificate for leaf, signed by ca.
func Issue(ca *KeyPair, leaf Leaf, now time.Time) (*KeyPair, error) {
	key, err := newKey(leaf.KeyType)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return Sign(ca, leaf, key.Public(), now, key)
}

// Sign certifies pub (a key someone else holds) for leaf with ca. key may be
// nil; it is only kept in the returned pair.
func Sign(ca *KeyPair, leaf Leaf, pub crypto.PublicKey, now time.Time, key crypto.Signer) (*KeyPair, error) {
	if ca == nil || ca.Cert == nil || !ca.Cert.IsCA {
		return nil, errors.New("sign: not a certificate authority")
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	var usages []x509.ExtKeyUsage
	if leaf.Server {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	if leaf.Client {
		usages = append(usages, x509.ExtKeyUsageClientAuth)
	}
	notAfter := now.Add(leaf.Lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: leaf.CommonName, Organization: leaf.Organizations},
		DNSNames:     leaf.DNSNames,
		IPAddresses:  leaf.IPs,
		URIs:         leaf.URIs,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usages,
	}
	pair, err := signPub(tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	if key != nil {
		pair.Key = key
		if pair.KeyPEM, err = EncodeKey(key); err != nil {
			return nil, err
		}
	}
	return pair, nil
}

func sign(tmpl, parent *x509.Certificate, key, signer crypto.Signer) (*KeyPair, error) {
	pair, err := signPub(tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, err
	}
	pair.Key = key
	if pair.KeyPEM, err = EncodeKey(key); err != nil {
		return nil, err
	}
	return pair, nil
}

func signPub(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*KeyPair, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &KeyPair{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// EncodeKey writes a private key as PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPair reads a PEM certificate (the first of a chain) and its key.
func ParseKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse key pair: %w", err)
	}
	signer, ok := tc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("parse key pair: the key cannot sign")
	}
	return &KeyPair{Cert: tc.Leaf, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCertificates reads every certificate of a PEM bundle.
func ParseCertificates(bundle []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, bundle = pem.Decode(bundle)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d of the bundle: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// Pool returns a pool of the certificates of a PEM bundle.
func Pool(bundle []byte) (*x509.CertPool, error) {
	certs, err := ParseCertificates(bundle)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}
