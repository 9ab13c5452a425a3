// Package settings reads a Kuma datasource's settings (its URL, jsonData and
// secureJsonData, see CONTRACT.md) and builds the HTTP clients of the control
// plane and of Prometheus from them. Every error names the key at fault.
package settings

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/jsonfield"
)

// DefaultTimeout bounds each call to the control plane or Prometheus.
const DefaultTimeout = 30 * time.Second

// Settings are a datasource's checked settings.
type Settings struct {
	// ControlPlane is the API's URL; ControlPlaneToken a user token for it.
	ControlPlane      *url.URL
	ControlPlaneToken string
	ControlPlaneTLS   *tls.Config

	// Prometheus is the base of the Prometheus API (…/api/v1/… is
	// appended): Prometheus itself, or Grafana's datasource proxy for a
	// Prometheus datasource. PrometheusAuthorization is the Authorization
	// header sent with each call ("" for none).
	Prometheus              *url.URL
	PrometheusAuthorization string
	PrometheusTLS           *tls.Config
	// PrometheusDatasourceUID is set when Prometheus is reached through
	// Grafana's datasource proxy.
	PrometheusDatasourceUID string

	Timeout time.Duration
}

// Input is what Grafana hands the plugin for a datasource.
type Input struct {
	// URL is the datasource's URL.
	URL string
	// JSONData and SecureJSONData are its jsonData and decrypted
	// secureJsonData.
	JSONData       []byte
	SecureJSONData map[string]string
	// GrafanaAppURL is Grafana's own URL (GF_APP_URL), "" when unknown.
	GrafanaAppURL string
}

// Parse checks a datasource's settings.
func Parse(in Input) (Settings, error) {
	j, err := jsonfield.Parse("jsonData.", in.JSONData)
	if err != nil {
		return Settings{}, err
	}
	secure := in.SecureJSONData
	var s Settings
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	str := func(key string) string {
		v, err := j.String(key)
		check(err)
		return v
	}
	boolean := func(key string) bool {
		v, err := j.Bool(key)
		check(err)
		return v
	}

	// The control plane.
	if s.ControlPlane, err = parseURL("url", in.URL); err != nil {
		errs = append(errs, fmt.Errorf("%w (the control plane's API, e.g. http://127.0.0.1:5681 or https://kuma-control-plane.kuma-system:5682)", err))
	}
	s.ControlPlaneToken = strings.TrimSpace(secure["controlPlaneToken"])
	if s.ControlPlaneToken != "" && s.ControlPlane != nil && s.ControlPlane.Scheme == "http" && !isLoopback(s.ControlPlane.Hostname()) {
		errs = append(errs, fmt.Errorf("secureJsonData.controlPlaneToken: the token would cross the network in clear to %s; use the API's HTTPS port (5682)", s.ControlPlane.Redacted()))
	}
	cp := &tls.Config{MinVersion: tls.VersionTLS12}
	cp.InsecureSkipVerify = boolean("tlsSkipVerify")
	cp.ServerName = str("serverName")
	if boolean("tlsAuthWithCACert") {
		pool, err := certPool("secureJsonData.tlsCACert", secure["tlsCACert"])
		check(err)
		cp.RootCAs = pool
	}
	if boolean("tlsAuth") {
		cert, err := tls.X509KeyPair([]byte(secure["tlsClientCert"]), []byte(secure["tlsClientKey"]))
		if err != nil {
			errs = append(errs, fmt.Errorf("secureJsonData.tlsClientCert, tlsClientKey: %w", err))
		} else {
			cp.Certificates = []tls.Certificate{cert}
		}
	}
	s.ControlPlaneTLS = cp

	// Prometheus.
	promURL, uid := str("prometheusUrl"), str("prometheusDatasourceUid")
	user, password := str("prometheusBasicAuthUser"), secure["prometheusBasicAuthPassword"]
	bearer := strings.TrimSpace(secure["prometheusBearerToken"])
	prom := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: boolean("prometheusTlsSkipVerify")}
	if ca := secure["prometheusTlsCACert"]; ca != "" {
		pool, err := certPool("secureJsonData.prometheusTlsCACert", ca)
		check(err)
		prom.RootCAs = pool
	}
	s.PrometheusTLS = prom
	switch {
	case promURL != "" && uid != "":
		errs = append(errs, errors.New("jsonData.prometheusUrl, jsonData.prometheusDatasourceUid: set one of them, not both"))
	case promURL != "":
		if s.Prometheus, err = parseURL("jsonData.prometheusUrl", promURL); err != nil {
			errs = append(errs, err)
		}
		switch {
		case user != "" && bearer != "":
			errs = append(errs, errors.New("jsonData.prometheusBasicAuthUser, secureJsonData.prometheusBearerToken: use basic auth or a bearer token, not both"))
		case user != "":
			s.PrometheusAuthorization = basicAuth(user, password)
		case password != "":
			errs = append(errs, errors.New("jsonData.prometheusBasicAuthUser: required with secureJsonData.prometheusBasicAuthPassword"))
		case bearer != "":
			s.PrometheusAuthorization = "Bearer " + bearer
		}
	case uid != "":
		s.PrometheusDatasourceUID = uid
		grafana := str("grafanaUrl")
		key := "jsonData.grafanaUrl"
		if grafana == "" {
			grafana, key = in.GrafanaAppURL, "jsonData.grafanaUrl (default: Grafana's GF_APP_URL)"
		}
		g, err := parseURL(key, grafana)
		if err != nil {
			errs = append(errs, err)
			break
		}
		// Path is the unescaped form: the URL escapes it once when sent.
		g.Path = strings.TrimRight(g.Path, "/") + "/api/datasources/proxy/uid/" + uid
		s.Prometheus = g
		token := strings.TrimSpace(secure["grafanaToken"])
		if token == "" {
			errs = append(errs, errors.New("secureJsonData.grafanaToken: required with jsonData.prometheusDatasourceUid (a Grafana service-account token that may query that datasource)"))
		}
		s.PrometheusAuthorization = "Bearer " + token
	default:
		errs = append(errs, errors.New("jsonData.prometheusUrl: required (Prometheus' URL, e.g. http://127.0.0.1:9090), or jsonData.prometheusDatasourceUid"))
	}

	timeout, err := j.Number("timeout")
	check(err)
	switch {
	case !j.Has("timeout"):
		s.Timeout = DefaultTimeout
	case timeout <= 0 || timeout > 3600:
		errs = append(errs, j.Errorf("timeout", "must be between 1 and 3600 seconds, got %v", timeout))
	default:
		s.Timeout = time.Duration(timeout * float64(time.Second))
	}
	return s, errors.Join(errs...)
}

// parseURL checks an http or https URL of a server.
func parseURL(key, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%s: required", key)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", key, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%s: must be an http:// or https:// URL, got %q", key, raw)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%s: %q has no host", key, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%s: must not hold credentials (use the secure settings)", key)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%s: must not have a query or a fragment", key)
	}
	return u, nil
}

// certPool reads a PEM bundle of CA certificates.
func certPool(key, pem string) (*x509.CertPool, error) {
	if strings.TrimSpace(pem) == "" {
		return nil, fmt.Errorf("%s: required (PEM)", key)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, fmt.Errorf("%s: no certificate in it (PEM expected)", key)
	}
	return pool, nil
}

func basicAuth(user, password string) string {
	r := http.Request{Header: http.Header{}}
	r.SetBasicAuth(user, password)
	return r.Header.Get("Authorization")
}

// isLoopback tells whether a host name or address stays on the machine
// (localhost, 127.0.0.0/8, ::1).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// HTTPClient is an HTTP client with the given TLS settings and timeout.
func HTTPClient(tlsConfig *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: timeout,
			ForceAttemptHTTP2:     true,
		},
	}
}
