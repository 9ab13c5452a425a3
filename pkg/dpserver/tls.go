package dpserver

import (
	"context"
	"crypto/tls"
	"net"
	"time"

	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/globalsecret"
	"github.com/kumametrics/mesh/pkg/pki"
)

// CASecret is the GlobalSecret holding the dataplane server's generated CA
// (certificate and key, PEM), shared by the control planes of one store.
const CASecret = "dp-server-ca"

// servingFiles are the files the control plane keeps in its work directory
// for the dataplane server.
var servingFiles = pki.ServingFiles{
	Server:       "dataplane server",
	CACommonName: "kuma-dp-server-ca",
	CACert:       dpconfig.ServerCAFile,
	CAKey:        "dp-server-ca.key",
	Cert:         "dp-server.pem",
	Key:          "dp-server.key",
}

// ServerCertificate returns the dataplane server's TLS certificate. With
// certFile and keyFile set it loads them. Otherwise it uses the one generated
// in workDir (pki.ServingCertificate), creating on first start a CA (its
// certificate goes to workDir/dp-server-ca.pem for proxies to trust) and a
// certificate for localhost, the host name, every address of the host and
// the extra addresses (the one the server listens on, when it is a specific
// one, e.g. another loopback address); the CA is kept across restarts so
// proxies keep trusting the control plane.
func ServerCertificate(workDir, certPath, keyPath string, now time.Time, extra ...net.IP) (tls.Certificate, error) {
	return pki.ServingCertificate(workDir, servingFiles, certPath, keyPath, now, extra...)
}

// SharedServerCertificate is ServerCertificate for control planes sharing
// st: the generated CA is the GlobalSecret CASecret, created once (from the
// CA of workDir, when a control plane kept one there), so that a proxy
// trusting one replica's dp-server-ca.pem trusts every replica. Each replica
// issues its own certificate from it and writes the CA certificate to
// workDir/dp-server-ca.pem.
func SharedServerCertificate(ctx context.Context, st globalsecret.Store, workDir, certPath, keyPath string, now time.Time, extra ...net.IP) (tls.Certificate, error) {
	return pki.SharedServingCertificate(ctx, st, CASecret, workDir, servingFiles, certPath, keyPath, now, extra...)
}
