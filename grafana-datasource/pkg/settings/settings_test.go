package settings_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/promapi"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/settings"
)

// recordingServer is a real HTTP server answering buildinfo as Prometheus
// does, recording the path and Authorization header of each call.
type recordingServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func startRecordingServer(t *testing.T) *recordingServer {
	p := &recordingServer{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = append(p.seen, r.URL.Path+" "+r.Header.Get("Authorization"))
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"success","data":{"version":"2.53.0"}}`))
	}))
	t.Cleanup(p.Close)
	return p
}

// call asks Prometheus' version as the datasource would with settings s,
// and returns what the server saw.
func (p *recordingServer) call(t *testing.T, s settings.Settings) string {
	t.Helper()
	c := promapi.New(s.Prometheus, settings.HTTPClient(s.PrometheusTLS, s.Timeout), s.PrometheusAuthorization)
	b, err := c.BuildInfo(context.Background())
	require.NoError(t, err)
	require.Equal(t, "2.53.0", b.Version)
	p.mu.Lock()
	defer p.mu.Unlock()
	last := p.seen[len(p.seen)-1]
	return last
}

// Prometheus is reached with basic auth, a bearer token, or through
// Grafana's datasource proxy with a service-account token.
func TestPrometheusAuthorization(t *testing.T) {
	p := startRecordingServer(t)
	cp := "http://127.0.0.1:5681"

	s, err := settings.Parse(settings.Input{URL: cp,
		JSONData:       []byte(`{"prometheusUrl":"` + p.URL + `/prom/","prometheusBasicAuthUser":"admin"}`),
		SecureJSONData: map[string]string{"prometheusBasicAuthPassword": "s3cret"}})
	require.NoError(t, err)
	require.Equal(t, "/prom/api/v1/status/buildinfo Basic YWRtaW46czNjcmV0", p.call(t, s))

	s, err = settings.Parse(settings.Input{URL: cp,
		JSONData:       []byte(`{"prometheusUrl":"` + p.URL + `"}`),
		SecureJSONData: map[string]string{"prometheusBearerToken": " tok \n"}})
	require.NoError(t, err)
	require.Equal(t, "/api/v1/status/buildinfo Bearer tok", p.call(t, s))

	s, err = settings.Parse(settings.Input{URL: cp, JSONData: []byte(`{"prometheusUrl":"` + p.URL + `"}`)})
	require.NoError(t, err)
	require.Equal(t, "/api/v1/status/buildinfo ", p.call(t, s), "no credentials, no header")

	// An existing Prometheus datasource, through Grafana's API: the
	// Grafana URL of the settings, else Grafana's own (GF_APP_URL).
	for _, in := range []settings.Input{
		{URL: cp, JSONData: []byte(`{"prometheusDatasourceUid":"prom 1","grafanaUrl":"` + p.URL + `/grafana/"}`),
			SecureJSONData: map[string]string{"grafanaToken": "glsa_x"}},
		{URL: cp, JSONData: []byte(`{"prometheusDatasourceUid":"prom 1"}`), GrafanaAppURL: p.URL + "/grafana",
			SecureJSONData: map[string]string{"grafanaToken": "glsa_x"}},
	} {
		s, err = settings.Parse(in)
		require.NoError(t, err)
		require.Equal(t, "prom 1", s.PrometheusDatasourceUID)
		require.Equal(t, "/grafana/api/datasources/proxy/uid/prom 1/api/v1/status/buildinfo Bearer glsa_x", p.call(t, s))
	}
}

// Wrong settings: every error names its key, all of them at once.
func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		in   settings.Input
		errs []string
	}{
		"no prometheus": {settings.Input{URL: "http://cp:5681"},
			[]string{"jsonData.prometheusUrl: required"}},
		"url and uid": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`{"prometheusUrl":"http://p","prometheusDatasourceUid":"x"}`)},
			[]string{"jsonData.prometheusUrl, jsonData.prometheusDatasourceUid: set one of them, not both"}},
		"basic and bearer": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`{"prometheusUrl":"http://p","prometheusBasicAuthUser":"u"}`),
			SecureJSONData: map[string]string{"prometheusBearerToken": "t"}},
			[]string{"jsonData.prometheusBasicAuthUser, secureJsonData.prometheusBearerToken: use basic auth or a bearer token, not both"}},
		"password without user": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`{"prometheusUrl":"http://p"}`),
			SecureJSONData: map[string]string{"prometheusBasicAuthPassword": "p"}},
			[]string{"jsonData.prometheusBasicAuthUser: required with secureJsonData.prometheusBasicAuthPassword"}},
		"uid without token or grafana": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`{"prometheusDatasourceUid":"x"}`)},
			[]string{"jsonData.grafanaUrl (default: Grafana's GF_APP_URL): required"}},
		"uid without token": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`{"prometheusDatasourceUid":"x","grafanaUrl":"http://g:3000"}`)},
			[]string{"secureJsonData.grafanaToken: required with jsonData.prometheusDatasourceUid"}},
		"token in clear": {settings.Input{URL: "http://cp.example:5681", JSONData: []byte(`{"prometheusUrl":"http://p"}`),
			SecureJSONData: map[string]string{"controlPlaneToken": "t"}},
			[]string{"secureJsonData.controlPlaneToken: the token would cross the network in clear"}},
		"several at once": {settings.Input{URL: "ftp://cp", JSONData: []byte(`{"prometheusUrl":"http://u:p@p","timeout":0,"tlsAuthWithCACert":true}`)},
			[]string{"url: must be an http:// or https:// URL", "jsonData.prometheusUrl: must not hold credentials",
				"jsonData.timeout: must be between 1 and 3600 seconds, got 0", "secureJsonData.tlsCACert: required (PEM)"}},
		"not an object": {settings.Input{URL: "http://cp:5681", JSONData: []byte(`[]`)},
			[]string{"jsonData: must be a JSON object, got an array"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := settings.Parse(tc.in)
			require.Error(t, err)
			for _, e := range tc.errs {
				require.ErrorContains(t, err, e)
			}
		})
	}
	// A token to the control plane over plain HTTP on the machine itself is
	// fine, and the timeout is read in seconds.
	s, err := settings.Parse(settings.Input{URL: "http://127.0.0.1:5681", JSONData: []byte(`{"prometheusUrl":"http://p","timeout":2.5}`),
		SecureJSONData: map[string]string{"controlPlaneToken": "t"}})
	require.NoError(t, err)
	require.Equal(t, "t", s.ControlPlaneToken)
	require.Equal(t, 2500*time.Millisecond, s.Timeout)
}
