package meshgraph

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWindow(t *testing.T) {
	for interval, want := range map[time.Duration]time.Duration{
		0:                              time.Minute,
		15 * time.Second:               time.Minute,
		time.Minute:                    time.Minute,
		119 * time.Second:              time.Minute,
		2 * time.Minute:                2 * time.Minute,
		5*time.Minute + 30*time.Second: 5 * time.Minute,
		-time.Second:                   time.Minute,
		time.Hour:                      time.Hour,
	} {
		require.Equal(t, want, Window(interval), "interval %s", interval)
	}
}

func TestQueries(t *testing.T) {
	got := Queries(Params{Mesh: "default", Window: time.Minute})
	sel := `{mesh="default",envoy_cluster_name!~"localhost_[0-9]+|ads_cluster|kuma_envoy_admin"}`
	require.Equal(t, []Query{
		{RequestsByClass, `sum by (kuma_io_service, envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx` + sel + `[1m]))`},
		{Requests, `sum by (kuma_io_service, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total` + sel + `[1m]))`},
		{LatencyBuckets, `sum by (kuma_io_service, envoy_cluster_name, le) (rate(envoy_cluster_upstream_rq_time_bucket` + sel + `[1m]))`},
		{Connections, `sum by (kuma_io_service, envoy_cluster_name) (rate(envoy_cluster_upstream_cx_total` + sel + `[1m]))`},
		{ActiveConnections, `sum by (kuma_io_service, envoy_cluster_name) (envoy_cluster_upstream_cx_active` + sel + `)`},
		{SentBytes, `sum by (kuma_io_service, envoy_cluster_name) (rate(envoy_cluster_upstream_cx_tx_bytes_total` + sel + `[1m]))`},
		{ReceivedBytes, `sum by (kuma_io_service, envoy_cluster_name) (rate(envoy_cluster_upstream_cx_rx_bytes_total` + sel + `[1m]))`},
		{Handshakes, `sum by (kuma_io_service, envoy_cluster_name) (increase(envoy_cluster_ssl_handshake` + sel + `[1m]))`},
	}, got)
}

func TestQueriesSelector(t *testing.T) {
	for name, tc := range map[string]struct {
		params Params
		sel    string
	}{
		"every zone": {Params{Mesh: "m", Zone: ".*", Window: 5 * time.Minute},
			`{mesh="m",envoy_cluster_name!~"localhost_[0-9]+|ads_cluster|kuma_envoy_admin"}[5m]`},
		"a zone": {Params{Mesh: "m", Zone: "zone-1|zone-2", Window: time.Hour},
			`{mesh="m",kuma_io_zone=~"zone-1|zone-2",envoy_cluster_name!~"localhost_[0-9]+|ads_cluster|kuma_envoy_admin"}[60m]`},
		// A quote or a backslash in a name cannot end the string early.
		"escaped": {Params{Mesh: `a"b`, Zone: `z\d+`, Window: time.Minute},
			`{mesh="a\"b",kuma_io_zone=~"z\\d+",envoy_cluster_name!~"localhost_[0-9]+|ads_cluster|kuma_envoy_admin"}[1m]`},
	} {
		t.Run(name, func(t *testing.T) {
			q := Queries(tc.params)[Index(Requests)]
			require.Equal(t, `sum by (kuma_io_service, envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total`+tc.sel+`))`, q.PromQL)
		})
	}
}

// Index is the position of m in Queries' answer.
func Index(m Metric) int {
	for i, q := range Queries(Params{Window: time.Minute}) {
		if q.Metric == m {
			return i
		}
	}
	return -1
}
