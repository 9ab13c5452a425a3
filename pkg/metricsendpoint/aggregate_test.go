package metricsendpoint_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

const goodAppBody = `# HELP app_requests_total Requests handled.
# TYPE app_requests_total counter
app_requests_total{code="200"} 10
app_requests_total{code="500"} 1
# HELP app_queue_length Items queued.
# TYPE app_queue_length gauge
app_queue_length 3
`

// appsConfig is a config that merges the given applications by name.
func appsConfig(apps map[string]app) metricsendpoint.Config {
	cfg := metricsendpoint.Config{Path: "/metrics"}
	for name, a := range apps {
		cfg.Aggregate = append(cfg.Aggregate, a.aggregate(name))
	}
	return cfg
}

func TestApplicationsMerged(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	var gotHeaders atomic.Pointer[http.Header]
	first := startApp(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		gotHeaders.Store(&h)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, goodAppBody)
	})
	second := textApp(t, "# TYPE other_gauge gauge\nother_gauge{x=\"y\"} 1.5\n")
	cfg := appsConfig(map[string]app{"second": second, "first": first})
	base := serve(t, newEndpoint(t, s, cfg, metricsendpoint.Options{}))
	c := scraper(t)

	t.Run("text", func(t *testing.T) {
		// The proxy's statistics come first, byte for byte as the store
		// renders them before this scrape counts anything.
		proxy := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
		resp := scrape(t, c, http.MethodGet, base+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "5")
		require.Equal(t, http.StatusOK, resp.status)
		body := string(resp.body)
		require.True(t, strings.HasPrefix(body, proxy), "proxy statistics first")
		mfs := parseText(t, resp.body)
		require.Len(t, mfs["app_requests_total"].GetMetric(), 2)
		require.Equal(t, 3.0, mfs["app_queue_length"].GetMetric()[0].GetGauge().GetValue())
		require.Equal(t, 1.5, mfs["other_gauge"].GetMetric()[0].GetGauge().GetValue())
		require.Contains(t, mfs, "envoy_cluster_upstream_rq_total")
		// Applications in name order, after the proxy.
		iProxy := strings.Index(body, "# TYPE envoy_cluster_upstream_rq_total")
		iFirst := strings.Index(body, "# TYPE app_queue_length")
		iSecond := strings.Index(body, "# TYPE other_gauge")
		require.True(t, iProxy < iFirst && iFirst < iSecond, "order: proxy, first, second")

		h := gotHeaders.Load()
		require.NotNil(t, h)
		require.Equal(t, "text/plain;version=0.0.4", h.Get("Accept"))
		require.Equal(t, "gzip", h.Get("Accept-Encoding"))
		require.NotEmpty(t, h.Get("X-Prometheus-Scrape-Timeout-Seconds"))
	})
	t.Run("openmetrics", func(t *testing.T) {
		resp := scrape(t, c, http.MethodGet, base+"/metrics", "Accept", prometheusAccept, "Accept-Encoding", "gzip")
		require.Equal(t, stats.ContentTypeOpenMetrics, resp.header.Get("Content-Type"))
		mfs := parseOpenMetrics(t, resp.body)
		require.Len(t, mfs["app_requests_total"].GetMetric(), 2)
		require.Contains(t, mfs, "other_gauge")
		require.Contains(t, mfs, "envoy_cluster_upstream_rq_total")
	})
	t.Run("counted", func(t *testing.T) {
		st := envoyStats(t, s)
		require.NotEqual(t, "0", st["metrics.aggregate.first.scrapes"])
		require.Equal(t, "1", st["metrics.aggregate.first.up"])
		require.Equal(t, "0", st["metrics.aggregate.first.errors.timeout"])
	})
}

func TestFilterAppliesToApplications(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	cfg := appsConfig(map[string]app{"a": textApp(t, "# TYPE app_hits_total counter\napp_hits_total 3\n# TYPE app_other gauge\napp_other 1\n")})
	base := serve(t, newEndpoint(t, s, cfg, metricsendpoint.Options{}))
	mfs := parseText(t, scrape(t, scraper(t), http.MethodGet, base+"/metrics?filter=app_hits").body)
	require.Contains(t, mfs, "app_hits_total", "an application family the filter matches")
	require.NotContains(t, mfs, "app_other", "an application family it does not match")
	for name := range mfs {
		require.False(t, strings.HasPrefix(name, "envoy_"), "no proxy statistic matches app_hits: %s", name)
	}
}

func TestDefaultAppAddress(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	a := textApp(t, goodAppBody)
	ag := a.aggregate("app")
	ag.Address = ""
	base := serve(t, newEndpoint(t, s, metricsendpoint.Config{
		Path: "/metrics", Aggregate: []resource.AggregateEndpoint{ag}, DefaultAppAddress: a.host,
	}, metricsendpoint.Options{}))
	mfs := parseText(t, scrape(t, scraper(t), http.MethodGet, base+"/metrics").body)
	require.Contains(t, mfs, "app_queue_length")
}

func gzipped(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	_, err := io.WriteString(zw, s)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return b.Bytes()
}

func TestApplicationAnswerFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{name: "gzip", handler: func(w http.ResponseWriter, r *http.Request) {
			require.Equal(t, "gzip", r.Header.Get("Accept-Encoding"))
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(t, goodAppBody))
		}},
		{name: "openmetrics despite the accept header", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
			_, _ = io.WriteString(w, "# TYPE app_requests counter\napp_requests_total{code=\"200\"} 10\napp_requests_total{code=\"500\"} 1\n# TYPE app_queue_length gauge\napp_queue_length 3\n# EOF\n")
		}},
		{name: "no content type", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Content-Type"] = nil
			_, _ = io.WriteString(w, goodAppBody)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smallStore(t)
			base := serve(t, newEndpoint(t, s, appsConfig(map[string]app{"app": startApp(t, tc.handler)}), metricsendpoint.Options{}))
			c := scraper(t)
			mfs := parseText(t, scrape(t, c, http.MethodGet, base+"/metrics").body)
			require.Len(t, mfs["app_requests_total"].GetMetric(), 2)
			require.Contains(t, mfs, "app_queue_length")
			mfs = parseOpenMetrics(t, scrape(t, c, http.MethodGet, base+"/metrics", "Accept", prometheusAccept).body)
			require.Len(t, mfs["app_requests_total"].GetMetric(), 2)
			require.Equal(t, "2", envoyStats(t, s)["metrics.aggregate.app.scrapes"])
		})
	}
}

// A broken application is left out of the answer, which otherwise arrives
// complete (the proxy and the good application), and is counted.
func TestBrokenApplicationLeftOut(t *testing.T) {
	t.Parallel()
	const limit = 8 << 10
	big := strings.Repeat("broken_metric{i=\"0123456789\"} 1\n", 1)
	var bigBody strings.Builder
	for i := range 2 * limit / 20 {
		fmt.Fprintf(&bigBody, "broken_metric{i=\"%d\"} 1\n", i)
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc // nil: nothing listens
		reason  string
	}{
		{name: "answers 500", reason: "status", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, big)
		}},
		{name: "answers 404", reason: "status", handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
		{name: "garbage", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "<html>this is { not metrics</html>\n")
		}},
		{name: "valid lines then garbage", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, big+"broken_metric{\n")
		}},
		{name: "duplicate series", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "broken_metric 1\nbroken_metric 2\n")
		}},
		{name: "negative counter", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "# TYPE broken_metric_total counter\nbroken_metric_total -1\n")
		}},
		{name: "protobuf", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited")
			_, _ = w.Write([]byte{0x05, 1, 2, 3, 4, 5})
		}},
		{name: "corrupt gzip", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = io.WriteString(w, "not gzip at all")
		}},
		{name: "unknown content encoding", reason: "parse", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "br")
			_, _ = io.WriteString(w, big)
		}},
		{name: "too large with content length", reason: "too_large", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(bigBody.Len()))
			_, _ = io.WriteString(w, bigBody.String())
		}},
		{name: "too large streamed", reason: "too_large", handler: func(w http.ResponseWriter, _ *http.Request) {
			for line := range strings.Lines(bigBody.String()) {
				_, _ = io.WriteString(w, line)
			}
		}},
		{name: "too large after decompression", reason: "too_large", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gzipped(t, bigBody.String()))
		}},
		{name: "closes in the middle", reason: "connect", handler: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "1000")
			_, _ = io.WriteString(w, big)
		}},
		{name: "down", reason: "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := smallStore(t)
			broken := downApp(t)
			if tc.handler != nil {
				broken = startApp(t, tc.handler)
			}
			good := textApp(t, goodAppBody)
			cfg := appsConfig(map[string]app{"broken": broken, "good": good})
			base := serve(t, newEndpoint(t, s, cfg, metricsendpoint.Options{MaxApplicationBytes: limit}))
			c := scraper(t)
			for _, accept := range []string{"text/plain", prometheusAccept} {
				resp := scrape(t, c, http.MethodGet, base+"/metrics", "Accept", accept, "X-Prometheus-Scrape-Timeout-Seconds", "10")
				require.Equal(t, http.StatusOK, resp.status)
				require.NotContains(t, string(resp.body), "broken_metric")
				require.NotContains(t, string(resp.body), "html")
				var mfs map[string]any
				if accept == prometheusAccept {
					mfs = toAny(parseOpenMetrics(t, resp.body))
				} else {
					mfs = toAny(parseText(t, resp.body))
				}
				require.Contains(t, mfs, "app_queue_length")
				require.Contains(t, mfs, "envoy_cluster_upstream_rq_total")
			}
			st := envoyStats(t, s)
			require.Equal(t, "2", st["metrics.aggregate.broken.errors."+tc.reason], "%v", st)
			require.Equal(t, "0", st["metrics.aggregate.broken.scrapes"])
			require.Equal(t, "0", st["metrics.aggregate.broken.up"])
			require.Equal(t, "2", st["metrics.aggregate.good.scrapes"])
		})
	}
}

// value returns a counter's, gauge's or untyped metric's value.
func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

func toAny[V any](m map[string]V) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// An application that never answers is left out when the scraper's
// timeout (minus the margin) runs out; the answer comes back while the
// application is still hanging.
func TestHangingApplication(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	var hanging atomic.Bool
	slow := startApp(t, func(w http.ResponseWriter, _ *http.Request) {
		hanging.Store(true)
		close(entered)
		<-release // ignores the request's cancellation on purpose
		hanging.Store(false)
	})
	t.Cleanup(func() { close(release) }) // runs before the app server's Close
	good := textApp(t, goodAppBody)
	base := serve(t, newEndpoint(t, s, appsConfig(map[string]app{"slow": slow, "good": good}), metricsendpoint.Options{}))

	resp := scrape(t, scraper(t), http.MethodGet, base+"/metrics", "X-Prometheus-Scrape-Timeout-Seconds", "0.4")
	select {
	case <-entered:
	case <-time.After(time.Minute):
		t.Fatal("the scrape never reached the hanging application")
	}
	require.True(t, hanging.Load(), "the application is still hanging")
	require.Equal(t, http.StatusOK, resp.status)
	mfs := parseText(t, resp.body)
	require.Contains(t, mfs, "app_queue_length")
	require.Contains(t, mfs, "envoy_cluster_upstream_rq_total")
	st := envoyStats(t, s)
	require.Equal(t, "1", st["metrics.aggregate.slow.errors.timeout"])
	require.Equal(t, "1", st["metrics.aggregate.good.scrapes"])
}

func TestCollisions(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	// app-a: one family that is a proxy family, one that occupies a proxy
	// counter's OpenMetrics name, one histogram whose _bucket is a proxy
	// gauge's name... and one shared with app-b.
	appA := textApp(t, `# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="fake"} 999
# TYPE envoy_cluster_upstream_rq gauge
envoy_cluster_upstream_rq 1
# TYPE envoy_cluster_upstream_rq_time_bucket gauge
envoy_cluster_upstream_rq_time_bucket 1
# TYPE shared_requests_total counter
shared_requests_total 1
# TYPE a_only gauge
a_only 1
`)
	// app-b shares a family with app-a: renamed app_b_shared_requests_total.
	// app_b_a_only is taken natively, so b's a_only cannot be renamed.
	appB := textApp(t, `# TYPE shared_requests_total counter
shared_requests_total 2
# TYPE a_only gauge
a_only 2
# TYPE app_b_a_only gauge
app_b_a_only 3
`)
	logs := &logRecorder{}
	e := newEndpoint(t, s, appsConfig(map[string]app{"app-b": appB, "app-a": appA}), metricsendpoint.Options{Log: slog.New(logs)})
	base := serve(t, e)
	c := scraper(t)

	for i, accept := range []string{"text/plain", prometheusAccept} {
		resp := scrape(t, c, http.MethodGet, base+"/metrics", "Accept", accept)
		require.Equal(t, http.StatusOK, resp.status)
		require.False(t, strings.Contains(string(resp.body), "fake"), "dropped family written")
		require.False(t, strings.Contains(string(resp.body), "envoy_cluster_upstream_rq 1"), "dropped family written")
		require.False(t, strings.Contains(string(resp.body), "envoy_cluster_upstream_rq_time_bucket 1"), "dropped family written")
		var mfs map[string]*dto.MetricFamily
		if accept == prometheusAccept {
			mfs = parseOpenMetrics(t, resp.body)
		} else {
			mfs = parseText(t, resp.body)
		}
		for name, want := range map[string]float64{
			"shared_requests_total":       1,
			"app_b_shared_requests_total": 2,
			"a_only":                      1,
			"app_b_a_only":                3,
		} {
			require.Contains(t, mfs, name)
			require.Len(t, mfs[name].GetMetric(), 1, name)
			require.Equal(t, want, value(mfs[name].GetMetric()[0]), name)
		}
		st := envoyStats(t, s)
		n := fmt.Sprint(i + 1)
		require.Equal(t, fmt.Sprint(3*(i+1)), st["metrics.aggregate.app-a.collisions.dropped"])
		require.Equal(t, "0", st["metrics.aggregate.app-a.collisions.renamed"])
		require.Equal(t, n, st["metrics.aggregate.app-b.collisions.renamed"])
		require.Equal(t, n, st["metrics.aggregate.app-b.collisions.dropped"])
	}
	// Logged once per family, not per scrape.
	require.Equal(t, 1, logs.count(slog.LevelWarn, "family", "envoy_cluster_upstream_rq_total"))
	require.Equal(t, 1, logs.count(slog.LevelInfo, "family", "shared_requests_total"))
	require.Equal(t, 1, logs.count(slog.LevelWarn, "family", "a_only"))
}

// While the application that owns a family is down, another application's
// family of the same name stays renamed.
func TestRenamesAreSticky(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	var down atomic.Bool
	appA := startApp(t, func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "shared 1\n")
	})
	appB := textApp(t, "shared 2\n")
	base := serve(t, newEndpoint(t, s, appsConfig(map[string]app{"a": appA, "b": appB}), metricsendpoint.Options{}))
	c := scraper(t)

	body := string(scrape(t, c, http.MethodGet, base+"/metrics").body)
	require.Contains(t, body, "\nshared 1\n")
	require.Contains(t, body, "\nb_shared 2\n")

	down.Store(true)
	body = string(scrape(t, c, http.MethodGet, base+"/metrics").body)
	require.NotContains(t, body, "\nshared ")
	require.Contains(t, body, "\nb_shared 2\n")
	parseText(t, []byte(body))
}

// A failing application logs its first failure of each kind at warning
// level, not on every scrape; its recovery at info level.
func TestFailureLoggedOnce(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	var status atomic.Int32
	status.Store(http.StatusInternalServerError)
	a := startApp(t, func(w http.ResponseWriter, _ *http.Request) {
		if code := int(status.Load()); code != http.StatusOK {
			w.WriteHeader(code)
			return
		}
		_, _ = io.WriteString(w, goodAppBody)
	})
	logs := &logRecorder{}
	base := serve(t, newEndpoint(t, s, appsConfig(map[string]app{"app": a}), metricsendpoint.Options{Log: slog.New(logs)}))
	c := scraper(t)
	for range 3 {
		scrape(t, c, http.MethodGet, base+"/metrics")
	}
	require.Equal(t, 1, logs.count(slog.LevelWarn, "reason", "status"))
	require.Equal(t, "3", envoyStats(t, s)["metrics.aggregate.app.errors.status"])

	status.Store(http.StatusOK)
	scrape(t, c, http.MethodGet, base+"/metrics")
	scrape(t, c, http.MethodGet, base+"/metrics")
	require.Equal(t, 1, logs.count(slog.LevelInfo, "app", "app"))

	// The same kind of failure again: a state change, logged at debug level.
	status.Store(http.StatusInternalServerError)
	scrape(t, c, http.MethodGet, base+"/metrics")
	require.Equal(t, 1, logs.count(slog.LevelWarn, "reason", "status"))
	require.Equal(t, 1, logs.count(slog.LevelDebug, "reason", "status"))
}

func TestRemovedApplicationStatistics(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	a := textApp(t, goodAppBody)
	e := newEndpoint(t, s, appsConfig(map[string]app{"app": a}), metricsendpoint.Options{})
	base := serve(t, e)
	scrape(t, scraper(t), http.MethodGet, base+"/metrics")
	require.Equal(t, "1", envoyStats(t, s)["metrics.aggregate.app.scrapes"])

	// Another address, same name: the statistics keep counting.
	b := textApp(t, goodAppBody)
	require.NoError(t, e.Update(appsConfig(map[string]app{"app": b})))
	scrape(t, scraper(t), http.MethodGet, base+"/metrics")
	require.Equal(t, "2", envoyStats(t, s)["metrics.aggregate.app.scrapes"])

	require.NoError(t, e.Update(metricsendpoint.Config{Path: "/metrics"}))
	require.NotContains(t, envoyStats(t, s), "metrics.aggregate.app.scrapes")
	body := scrape(t, scraper(t), http.MethodGet, base+"/metrics").body
	require.Equal(t, string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})), string(body))
}
