package metricsendpoint_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/metricsendpoint"
)

// One merged answer per format: the proxy's statistics (with the
// endpoint's own, all zero before the first scrape is counted), then
// "payments" (a counter, a histogram with unsorted buckets, a summary, a
// family that collides with a proxy family, envoy_server_live), then "web" (a family shared
// with payments, renamed, and an escaped label value).
func TestGoldenMergedAnswer(t *testing.T) {
	t.Parallel()
	payments := textApp(t, `# HELP payments_total Payments processed.
# TYPE payments_total counter
payments_total{currency="EUR"} 12
payments_total{currency="USD"} 7
# HELP payment_duration_seconds Time to process a payment.
# TYPE payment_duration_seconds histogram
payment_duration_seconds_bucket{le="1"} 5
payment_duration_seconds_bucket{le="0.1"} 2
payment_duration_seconds_bucket{le="+Inf"} 6
payment_duration_seconds_sum 3.25
payment_duration_seconds_count 6
# TYPE rpc_latency_seconds summary
rpc_latency_seconds{quantile="0.99"} 0.3
rpc_latency_seconds{quantile="0.5"} 0.1
rpc_latency_seconds_sum 4.5
rpc_latency_seconds_count 30
# TYPE envoy_server_live gauge
envoy_server_live 0
# TYPE process_open_fds gauge
process_open_fds 12
`)
	web := textApp(t, `# HELP process_open_fds Open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 40
# TYPE http_requests_total counter
http_requests_total{path="/a \"quoted\" path\\n"} 3
`)
	for _, tc := range []struct {
		name   string
		accept string
		golden string
	}{
		{name: "text", accept: "text/plain;version=0.0.4", golden: "merged.prom.golden"},
		{name: "openmetrics", accept: prometheusAccept, golden: "merged.openmetrics.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smallStore(t)
			e := newEndpoint(t, s, appsConfig(map[string]app{"payments": payments, "web": web}),
				metricsendpoint.Options{Now: fixedClock})
			resp := scrape(t, scraper(t), http.MethodGet, serve(t, e)+"/metrics", "Accept", tc.accept)
			require.Equal(t, http.StatusOK, resp.status)
			requireGolden(t, tc.golden, resp.body)
			if tc.name == "text" {
				parseText(t, resp.body)
			} else {
				parseOpenMetrics(t, resp.body)
			}
		})
	}
}
