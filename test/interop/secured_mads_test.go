package interop

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// madsCertificate writes a self-signed CA and a serving certificate for
// host (an IP address) signed by it. (This module cannot import the control
// plane's packages, see doc.go, so it makes them with the standard library.)
func madsCertificate(t *testing.T, host string) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kuma-cp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP(host)},
	}, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return write("ca.pem", "CERTIFICATE", caDER), write("mads.pem", "CERTIFICATE", leafDER), write("mads.key", "PRIVATE KEY", keyDER)
}

// userToken issues a user token through the API (a loopback caller is admin).
func userToken(t *testing.T, api string) string {
	t.Helper()
	res, err := http.Post(api+"/tokens/user", "application/json", strings.NewReader(`{"name":"prometheus","groups":["scrapers"],"validFor":"1h"}`))
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return strings.TrimSpace(string(b))
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestPrometheusKumaSDAgainstASecuredMADS: Prometheus' own kuma_sd_configs
// with tls_config and authorization discovers from a MADS that requires TLS
// and user tokens; without authorization every fetch is refused.
func TestPrometheusKumaSDAgainstASecuredMADS(t *testing.T) {
	host := loopbackHost()
	caFile, certFile, keyFile := madsCertificate(t, host)
	api, mads := controlPlane(t, host,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE="+certFile,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_KEY_FILE="+keyFile,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE=token",
	)
	put(t, api+"/meshes/default", metricsMesh)
	dataplane(t, api, "default", "web-1", `"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}`)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(userToken(t, api)+"\n"), 0o600))

	ch, _ := discoverer(t, "https://"+mads,
		"tls_config:", "  ca_file: "+caFile,
		"authorization:", "  credentials_file: "+tokenFile)
	got := waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 1 })
	require.Equal(t, model.LabelValue("10.0.0.1:5670"), got["web-1"]["__address__"])
	require.Equal(t, model.LabelValue("default"), got["web-1"]["__meta_kuma_mesh"])

	// A change reaches it through the long poll, over TLS, with the token.
	dataplane(t, api, "default", "web-2", `"networking":{"address":"10.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}`)
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 2 })

	// Without the token: refused at every fetch, nothing discovered.
	anonymous, reg := discoverer(t, "https://"+mads, "tls_config:", "  ca_file: "+caFile)
	require.Eventually(t, func() bool {
		return counterValue(t, reg, "prometheus_sd_kuma_fetch_failures_total") >= 3
	}, waitTimeout, 20*time.Millisecond)
	for {
		select {
		case groups := <-anonymous:
			for _, g := range groups {
				require.Empty(t, g.Targets, "nothing discovered without a token")
			}
			continue
		default:
		}
		break
	}
}
