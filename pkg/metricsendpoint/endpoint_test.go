package metricsendpoint_test

import (
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store *stats.Store
		opts  metricsendpoint.Options
	}{
		{name: "nil store"},
		{name: "negative timeout", store: stats.NewStore(), opts: metricsendpoint.Options{DefaultScrapeTimeout: -1}},
		{name: "negative size limit", store: stats.NewStore(), opts: metricsendpoint.Options{MaxApplicationBytes: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := metricsendpoint.New(tc.store, tc.opts)
			require.Error(t, err)
		})
	}
}

func TestDefaultPathBeforeUpdate(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	e, err := metricsendpoint.New(s, metricsendpoint.Options{})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	base := serve(t, e)
	resp := scrape(t, scraper(t), http.MethodGet, base+resource.DefaultMetricsPath)
	require.Equal(t, http.StatusOK, resp.status)
	require.Equal(t, string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})), string(resp.body))
}

// Without applications the answer is exactly the store's rendering, in
// every negotiated format, compressed or not.
func TestProxyOnlyEqualsStoreRendering(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	base := serve(t, newEndpoint(t, s, metricsendpoint.Config{Path: "/metrics"}, metricsendpoint.Options{}))
	c := scraper(t)
	for _, tc := range []struct {
		name        string
		accept      string
		gzip        bool
		format      stats.Format
		contentType string
	}{
		{name: "no accept header", format: stats.FormatPrometheus, contentType: stats.ContentTypePrometheus},
		{name: "text", accept: "text/plain;version=0.0.4", format: stats.FormatPrometheus, contentType: stats.ContentTypePrometheus},
		{name: "prometheus accept header", accept: prometheusAccept, format: stats.FormatOpenMetrics, contentType: stats.ContentTypeOpenMetrics},
		{name: "prometheus accept header gzip", accept: prometheusAccept, gzip: true, format: stats.FormatOpenMetrics, contentType: stats.ContentTypeOpenMetrics},
		{name: "text gzip", gzip: true, format: stats.FormatPrometheus, contentType: stats.ContentTypePrometheus},
		{name: "curl", accept: "*/*", format: stats.FormatPrometheus, contentType: stats.ContentTypePrometheus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.accept != "" {
				headers = append(headers, "Accept", tc.accept)
			}
			if tc.gzip {
				headers = append(headers, "Accept-Encoding", "gzip")
			}
			resp := scrape(t, c, http.MethodGet, base+"/metrics", headers...)
			require.Equal(t, http.StatusOK, resp.status)
			require.Equal(t, tc.contentType, resp.header.Get("Content-Type"))
			if tc.gzip {
				require.Equal(t, "gzip", resp.header.Get("Content-Encoding"))
			} else {
				require.Empty(t, resp.header.Get("Content-Encoding"))
			}
			// Byte-identical to the store's rendering, whose validity
			// pkg/stats checks; the OpenMetrics decoder runs in other tests.
			require.Equal(t, string(render(t, s, tc.format, stats.RenderOptions{})), string(resp.body))
			if tc.format == stats.FormatOpenMetrics {
				require.True(t, strings.HasSuffix(string(resp.body), "\n# EOF\n"))
				require.Equal(t, 1, strings.Count(string(resp.body), "# EOF"))
			} else {
				parseText(t, resp.body)
			}
		})
	}
}

// The query's filter/usedonly combine with the config's: a statistic is
// written when both expressions match and either side's usedOnly allows it.
// Each case names a store rendering with one expression that selects the same
// statistics, and the answer must be byte-identical to it.
func TestFilterAndUsedOnlyCombine(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	c := scraper(t)
	for _, tc := range []struct {
		name        string
		cfgFilter   string
		cfgUsedOnly bool
		query       string
		want        stats.RenderOptions
	}{
		{name: "nothing", want: stats.RenderOptions{}},
		{name: "query filter", query: `?filter=^cluster\.backend\.`, want: stats.RenderOptions{Filter: regexp.MustCompile(`^cluster\.backend\.`)}},
		{name: "query usedonly", query: "?usedonly", want: stats.RenderOptions{UsedOnly: true}},
		{name: "query usedonly with a value", query: "?usedonly=false", want: stats.RenderOptions{UsedOnly: true}},
		{name: "query filter and usedonly", query: "?filter=backend&usedonly", want: stats.RenderOptions{Filter: regexp.MustCompile(`backend`), UsedOnly: true}},
		{name: "config filter", cfgFilter: `^rbac\.`, want: stats.RenderOptions{Filter: regexp.MustCompile(`^rbac\.`)}},
		{name: "config usedOnly", cfgUsedOnly: true, want: stats.RenderOptions{UsedOnly: true}},
		{name: "empty query filter keeps the config filter", cfgFilter: `^rbac\.`, query: "?filter=", want: stats.RenderOptions{Filter: regexp.MustCompile(`^rbac\.`)}},
		{
			// "backend" alone also matches http.backend_hcm.*; ^cluster\.
			// alone also matches cluster.localhost_8080.*.
			name: "both filters must match", cfgFilter: `^cluster\.`, query: "?filter=backend",
			want: stats.RenderOptions{Filter: regexp.MustCompile(`^cluster\.backend\.`)},
		},
		{
			name: "both filters and usedonly", cfgFilter: `^cluster\.`, query: "?filter=backend&usedonly",
			want: stats.RenderOptions{Filter: regexp.MustCompile(`^cluster\.backend\.`), UsedOnly: true},
		},
		{
			name: "both filters and config usedOnly", cfgFilter: `^cluster\.`, cfgUsedOnly: true, query: "?filter=backend",
			want: stats.RenderOptions{Filter: regexp.MustCompile(`^cluster\.backend\.`), UsedOnly: true},
		},
		{
			name: "disjoint filters", cfgFilter: `^rbac\.`, query: `?filter=^cluster\.`,
			want: stats.RenderOptions{Filter: regexp.MustCompile(`^nothing$`)},
		},
		{name: "same filter twice", cfgFilter: `^rbac\.`, query: `?filter=^rbac\.`, want: stats.RenderOptions{Filter: regexp.MustCompile(`^rbac\.`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := serve(t, newEndpoint(t, s, metricsendpoint.Config{Path: "/metrics", FilterRegex: tc.cfgFilter, UsedOnly: tc.cfgUsedOnly}, metricsendpoint.Options{}))
			for _, f := range []stats.Format{stats.FormatPrometheus, stats.FormatOpenMetrics} {
				accept := "text/plain"
				if f == stats.FormatOpenMetrics {
					accept = prometheusAccept
				}
				for _, gz := range []string{"identity", "gzip"} {
					resp := scrape(t, c, http.MethodGet, base+"/metrics"+tc.query, "Accept", accept, "Accept-Encoding", gz)
					require.Equal(t, http.StatusOK, resp.status)
					require.Equal(t, string(render(t, s, f, tc.want)), string(resp.body), "format %s, %s", f, gz)
				}
			}
		})
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	base := serve(t, newEndpoint(t, s, metricsendpoint.Config{Path: "/stats/prometheus"}, metricsendpoint.Options{}))
	c := scraper(t)
	for _, tc := range []struct {
		name     string
		method   string
		path     string
		status   int
		contains string
	}{
		{name: "bad filter", method: http.MethodGet, path: "/stats/prometheus?filter=(", status: http.StatusBadRequest, contains: "filter"},
		{name: "other path", method: http.MethodGet, path: "/metrics", status: http.StatusNotFound},
		{name: "path prefix", method: http.MethodGet, path: "/stats/prometheus/x", status: http.StatusNotFound},
		{name: "post", method: http.MethodPost, path: "/stats/prometheus", status: http.StatusMethodNotAllowed},
		{name: "delete", method: http.MethodDelete, path: "/stats/prometheus", status: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := scrape(t, c, tc.method, base+tc.path)
			require.Equal(t, tc.status, resp.status)
			require.Contains(t, string(resp.body), tc.contains)
			if tc.status == http.StatusMethodNotAllowed {
				require.Equal(t, "GET, HEAD", resp.header.Get("Allow"))
			}
		})
	}
}

func TestHead(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	var hits atomic.Int32
	a := startApp(t, func(http.ResponseWriter, *http.Request) { hits.Add(1) })
	base := serve(t, newEndpoint(t, s, metricsendpoint.Config{
		Path:      "/metrics",
		Aggregate: []resource.AggregateEndpoint{a.aggregate("app")},
	}, metricsendpoint.Options{}))
	resp := scrape(t, scraper(t), http.MethodHead, base+"/metrics", "Accept", prometheusAccept)
	require.Equal(t, http.StatusOK, resp.status)
	require.Equal(t, stats.ContentTypeOpenMetrics, resp.header.Get("Content-Type"))
	require.Empty(t, resp.body)
	require.Zero(t, hits.Load(), "HEAD scrapes no application")
}

func TestNegotiation(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	base := serve(t, newEndpoint(t, s, metricsendpoint.Config{Path: "/metrics"}, metricsendpoint.Options{}))
	c := scraper(t)
	for _, tc := range []struct {
		name        string
		accept      string
		contentType string
	}{
		{name: "prometheus default", accept: prometheusAccept, contentType: stats.ContentTypeOpenMetrics},
		{name: "prometheus with escaping", accept: "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.3", contentType: stats.ContentTypeOpenMetrics},
		{name: "openmetrics 0.0.1 only", accept: "application/openmetrics-text;version=0.0.1", contentType: "application/openmetrics-text; version=0.0.1; charset=utf-8"},
		{name: "text preferred", accept: "application/openmetrics-text;q=0.4,text/plain;version=0.0.4;q=0.9", contentType: stats.ContentTypePrometheus},
		{name: "openmetrics 2.0 only", accept: "application/openmetrics-text;version=2.0.0", contentType: stats.ContentTypePrometheus},
		{name: "protobuf only", accept: "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", contentType: stats.ContentTypePrometheus},
		{name: "wildcard", accept: "*/*", contentType: stats.ContentTypePrometheus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := scrape(t, c, http.MethodGet, base+"/metrics", "Accept", tc.accept)
			require.Equal(t, http.StatusOK, resp.status)
			require.Equal(t, tc.contentType, resp.header.Get("Content-Type"))
			if tc.contentType == stats.ContentTypePrometheus {
				parseText(t, resp.body)
			} else {
				parseOpenMetrics(t, resp.body)
			}
		})
	}
}

func TestUpdateIsLive(t *testing.T) {
	t.Parallel()
	s := testStore(t)
	e := newEndpoint(t, s, metricsendpoint.Config{Path: "/metrics"}, metricsendpoint.Options{})
	base := serve(t, e)
	c := scraper(t)
	require.Equal(t, http.StatusOK, scrape(t, c, http.MethodGet, base+"/metrics").status)

	t.Run("path change", func(t *testing.T) {
		require.NoError(t, e.Update(metricsendpoint.Config{Path: "/non-standard-path"}))
		require.Equal(t, http.StatusNotFound, scrape(t, c, http.MethodGet, base+"/metrics").status)
		resp := scrape(t, c, http.MethodGet, base+"/non-standard-path")
		require.Equal(t, http.StatusOK, resp.status)
		require.Equal(t, string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})), string(resp.body))
	})
	t.Run("filter change", func(t *testing.T) {
		require.NoError(t, e.Update(metricsendpoint.Config{Path: "/non-standard-path", FilterRegex: `^cluster\.backend\.`, UsedOnly: true}))
		resp := scrape(t, c, http.MethodGet, base+"/non-standard-path")
		want := stats.RenderOptions{Filter: regexp.MustCompile(`^cluster\.backend\.`), UsedOnly: true}
		require.Equal(t, string(render(t, s, stats.FormatPrometheus, want)), string(resp.body))
	})
	t.Run("invalid config keeps the served one", func(t *testing.T) {
		before := scrape(t, c, http.MethodGet, base+"/non-standard-path").body
		for _, bad := range []struct {
			name string
			cfg  metricsendpoint.Config
		}{
			{name: "bad regex", cfg: metricsendpoint.Config{Path: "/metrics", FilterRegex: "(("}},
			{name: "relative path", cfg: metricsendpoint.Config{Path: "metrics"}},
			{name: "empty path", cfg: metricsendpoint.Config{}},
			{name: "duplicate application", cfg: metricsendpoint.Config{Path: "/metrics", Aggregate: []resource.AggregateEndpoint{{Name: "a", Port: 1}, {Name: "a", Port: 2}}}},
			{name: "application without a name", cfg: metricsendpoint.Config{Path: "/metrics", Aggregate: []resource.AggregateEndpoint{{Port: 1}}}},
			{name: "application port 0", cfg: metricsendpoint.Config{Path: "/metrics", Aggregate: []resource.AggregateEndpoint{{Name: "a"}}}},
			{name: "application port too big", cfg: metricsendpoint.Config{Path: "/metrics", Aggregate: []resource.AggregateEndpoint{{Name: "a", Port: 70000}}}},
			{name: "application relative path", cfg: metricsendpoint.Config{Path: "/metrics", Aggregate: []resource.AggregateEndpoint{{Name: "a", Port: 1, Path: "m"}}}},
		} {
			err := e.Update(bad.cfg)
			require.Error(t, err, bad.name)
			require.Contains(t, err.Error(), "metricsendpoint: ", bad.name)
		}
		require.Equal(t, http.StatusNotFound, scrape(t, c, http.MethodGet, base+"/metrics").status)
		require.Equal(t, string(before), string(scrape(t, c, http.MethodGet, base+"/non-standard-path").body))
	})
}

func TestConfigFromEffective(t *testing.T) {
	t.Parallel()
	m := resource.EffectiveMetrics{
		Port: 1234, Path: "/non-standard-path", FilterRegex: "^cluster", UsedOnly: true,
		Aggregate: []resource.AggregateEndpoint{{Name: "app", Port: 8080, Path: "/metrics"}},
	}
	cfg := metricsendpoint.ConfigFromEffective(m, "10.0.0.1")
	require.Equal(t, metricsendpoint.Config{
		Path: "/non-standard-path", FilterRegex: "^cluster", UsedOnly: true,
		Aggregate:         []resource.AggregateEndpoint{{Name: "app", Port: 8080, Path: "/metrics"}},
		DefaultAppAddress: "10.0.0.1",
	}, cfg)
	cfg.Aggregate[0].Port = 1
	require.Equal(t, uint32(8080), m.Aggregate[0].Port, "the aggregate list is copied")
}
