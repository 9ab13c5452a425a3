package k8stest

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/kumametrics/mesh/pkg/pki"
)

// ServeAdmission serves handler over HTTPS on a fresh loopback address,
// with a certificate of a new CA, as a control plane outside the cluster
// serves its admission webhooks; it returns the server's base URL
// (https://host:port) and the CA (PEM, the caBundle of a configuration
// registered by URL). The server stops at the test's cleanup.
func ServeAdmission(t testing.TB, handler http.Handler) (baseURL string, ca []byte) {
	t.Helper()
	host := LoopbackHost()
	now := time.Now()
	authority, err := pki.NewCA("k8stest-admission-ca", pki.KeyType{}, now, time.Hour)
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	leaf, err := pki.Issue(authority, pki.Leaf{CommonName: "k8stest-admission", IPs: []net.IP{net.ParseIP(host)}, Server: true, Lifetime: time.Hour}, now)
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("k8stest: stop the admission server: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("k8stest: admission server: %v", err)
		}
	})
	return "https://" + ln.Addr().String(), authority.CertPEM
}
