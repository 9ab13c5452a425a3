package metricsendpoint_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/stats"
)

// discardResponse is a ResponseWriter that counts and drops the body, so
// that the benchmark measures the endpoint, not a recorder's buffer.
type discardResponse struct {
	h http.Header
	n int
}

func (d *discardResponse) Header() http.Header { return d.h }
func (d *discardResponse) WriteHeader(int)     {}
func (d *discardResponse) Write(p []byte) (int, error) {
	d.n += len(p)
	return len(p), nil
}

// benchStore registers clusters until the store holds at least n
// statistics (a histogram counts once), with some traffic recorded.
func benchStore(b *testing.B, n int) *stats.Store {
	b.Helper()
	s := stats.NewStore()
	for i := 0; s.Len() < n; i++ {
		c := stats.NewClusterStats(s, fmt.Sprintf("service_%04d", i))
		c.RequestDone(200, time.Duration(i%100)*time.Millisecond, i%2 == 0)
		c.ConnectionOpened(time.Millisecond)
	}
	return s
}

// BenchmarkScrape: one scrape of ~10k proxy series, alone and with one
// small application merged (real HTTP to the application on 127.0.0.1).
func BenchmarkScrape(b *testing.B) {
	s := benchStore(b, 10_000)
	a := textApp(b, goodAppBody)
	for _, tc := range []struct {
		name   string
		apps   map[string]app
		accept string
		gzip   bool
		query  string
	}{
		{name: "proxy_only/text", accept: "text/plain"},
		{name: "proxy_only/openmetrics", accept: prometheusAccept},
		{name: "proxy_only/text_gzip", accept: "text/plain", gzip: true},
		{name: "proxy_only/text_two_filters", accept: "text/plain", query: "?filter=upstream_rq"},
		{name: "one_app/text", apps: map[string]app{"app": a}, accept: "text/plain"},
		{name: "one_app/openmetrics", apps: map[string]app{"app": a}, accept: prometheusAccept},
		{name: "one_app/text_gzip", apps: map[string]app{"app": a}, accept: "text/plain", gzip: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := appsConfig(tc.apps)
			if tc.query != "" {
				cfg.FilterRegex = `^cluster\.`
			}
			e := newEndpoint(b, s, cfg, metricsendpoint.Options{Log: slog.New(slog.DiscardHandler)})
			req := httptest.NewRequest(http.MethodGet, "/metrics"+tc.query, nil)
			req.Header.Set("Accept", tc.accept)
			req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
			if tc.gzip {
				req.Header.Set("Accept-Encoding", "gzip")
			}
			w := &discardResponse{h: make(http.Header)}
			e.ServeHTTP(w, req) // warm up: pools, caches, connections
			require.Positive(b, w.n)
			b.ReportAllocs()
			for b.Loop() {
				w.n = 0
				e.ServeHTTP(w, req)
			}
			b.ReportMetric(float64(w.n), "bytes/scrape")
		})
	}
}
