package stats_test

import (
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/stats"
)

// envoyValues returns the counter and gauge values of an Envoy /stats output.
func envoyValues(t *testing.T, s *stats.Store, filter string) map[string]int64 {
	t.Helper()
	o := stats.RenderOptions{}
	if filter != "" {
		o.Filter = mustRegexp(filter)
	}
	out := make(map[string]int64)
	for _, line := range strings.Split(strings.TrimSpace(string(render(t, s, stats.FormatEnvoy, o))), "\n") {
		name, v, ok := strings.Cut(line, ": ")
		require.True(t, ok, line)
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[name] = n
		}
	}
	return out
}

func TestClusterStatsRequestDone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		status   int
		external bool
		want     []string // counters that must read 1; every other counter reads 0
	}{
		{name: "2xx external", status: 200, external: true,
			want: []string{"upstream_rq_2xx", "external.upstream_rq_2xx"}},
		{name: "2xx internal", status: 204, external: false,
			want: []string{"upstream_rq_2xx", "internal.upstream_rq_2xx"}},
		{name: "1xx", status: 101, external: true,
			want: []string{"upstream_rq_1xx", "external.upstream_rq_1xx"}},
		{name: "3xx", status: 304, external: false,
			want: []string{"upstream_rq_3xx", "internal.upstream_rq_3xx"}},
		{name: "4xx", status: 499, external: true,
			want: []string{"upstream_rq_4xx", "external.upstream_rq_4xx"}},
		{name: "5xx", status: 503, external: false,
			want: []string{"upstream_rq_5xx", "internal.upstream_rq_5xx"}},
		{name: "no status (reset before response)", status: 0},
		{name: "out of range", status: 600},
		{name: "negative", status: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stats.NewStore()
			c := stats.NewClusterStats(s, "backend")
			c.RequestDone(tc.status, 12*time.Millisecond, tc.external)

			want := map[string]int64{"upstream_rq_total": 1, "upstream_rq_completed": 1}
			for _, w := range tc.want {
				want[w] = 1
			}
			for name, v := range envoyValues(t, s, "") {
				stat := strings.TrimPrefix(name, "cluster.backend.")
				require.Equal(t, want[stat], v, stat)
			}
			require.Equal(t, uint64(1), c.UpstreamRqTime.Count())
			require.Equal(t, 12*time.Millisecond, c.UpstreamRqTime.Sum())
		})
	}
}

func TestClusterStatsNames(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	c := stats.NewClusterStats(s, "localhost_8080")
	require.Equal(t, "localhost_8080", c.Name())
	c.ConnectionOpened(3 * time.Millisecond)
	c.ConnectionOpened(4 * time.Millisecond)
	c.ConnectionClosed(time.Minute)
	require.Equal(t, int64(1), c.UpstreamCxActive.Value())
	require.Equal(t, uint64(2), c.UpstreamCxTotal.Value())
	require.Equal(t, uint64(2), c.UpstreamCxConnectMs.Count())
	require.Equal(t, uint64(1), c.UpstreamCxLengthMs.Count())

	// Every per-cluster family of compat §4, with the cluster label.
	mfs := parseText(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	for _, fam := range []string{
		"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx", "envoy_cluster_upstream_rq_completed",
		"envoy_cluster_upstream_rq_active", "envoy_cluster_upstream_rq_timeout", "envoy_cluster_upstream_rq_rx_reset",
		"envoy_cluster_upstream_rq_tx_reset", "envoy_cluster_upstream_rq_pending_overflow",
		"envoy_cluster_upstream_rq_pending_failure_eject", "envoy_cluster_upstream_rq_retry_overflow",
		"envoy_cluster_external_upstream_rq_xx", "envoy_cluster_internal_upstream_rq_xx", "envoy_cluster_upstream_rq_time",
		"envoy_cluster_upstream_cx_total", "envoy_cluster_upstream_cx_active", "envoy_cluster_upstream_cx_connect_fail",
		"envoy_cluster_upstream_cx_connect_timeout", "envoy_cluster_upstream_cx_overflow",
		"envoy_cluster_upstream_cx_destroy_local_with_active_rq", "envoy_cluster_upstream_cx_destroy_remote_with_active_rq",
		"envoy_cluster_upstream_cx_rx_bytes_total", "envoy_cluster_upstream_cx_tx_bytes_total",
		"envoy_cluster_upstream_cx_connect_ms", "envoy_cluster_upstream_cx_length_ms",
		"envoy_cluster_membership_total", "envoy_cluster_membership_healthy",
		"envoy_cluster_outlier_detection_ejections_active", "envoy_cluster_health_check_healthy",
		"envoy_cluster_ssl_handshake",
	} {
		t.Run(fam, func(t *testing.T) {
			mf, ok := mfs[fam]
			require.True(t, ok)
			for _, m := range mf.GetMetric() {
				require.Equal(t, stats.LabelClusterName, m.GetLabel()[0].GetName())
				require.Equal(t, "localhost_8080", m.GetLabel()[0].GetValue())
			}
			if strings.HasSuffix(fam, "_xx") {
				require.Len(t, mf.GetMetric(), 5)
				for i, m := range mf.GetMetric() {
					require.Equal(t, stats.LabelResponseCodeClass, m.GetLabel()[1].GetName())
					require.Equal(t, strconv.Itoa(i+1), m.GetLabel()[1].GetValue())
				}
			}
		})
	}
	require.Len(t, mfs, 29)
}

func TestHTTPConnManagerStats(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	h := stats.NewHTTPConnManagerStats(s, "inbound_8080")
	require.Equal(t, "inbound_8080", h.Prefix())
	h.ConnectionOpened()
	h.DownstreamRqActive.Inc()
	h.RequestDone(200, time.Millisecond)
	h.RequestDone(404, time.Millisecond)
	h.RequestDone(0, time.Millisecond)
	require.Equal(t, map[string]int64{
		"http.inbound_8080.downstream_cx_active": 1,
		"http.inbound_8080.downstream_cx_total":  1,
		"http.inbound_8080.downstream_rq_1xx":    0,
		"http.inbound_8080.downstream_rq_2xx":    1,
		"http.inbound_8080.downstream_rq_3xx":    0,
		"http.inbound_8080.downstream_rq_4xx":    1,
		"http.inbound_8080.downstream_rq_5xx":    0,
		"http.inbound_8080.downstream_rq_active": 1,
		"http.inbound_8080.downstream_rq_total":  3,
	}, envoyValues(t, s, ""))
	h.ConnectionClosed()
	require.Equal(t, int64(0), h.DownstreamCxActive.Value())
	require.Equal(t, uint64(3), h.DownstreamRqTime.Count())

	out := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Contains(t, out, `envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="inbound_8080"} 3`)
	require.Contains(t, out, `envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="inbound_8080",envoy_response_code_class="4"} 1`)
	require.Contains(t, out, `envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="inbound_8080"} 3`)
	require.Contains(t, out, `envoy_http_downstream_cx_active{envoy_http_conn_manager_prefix="inbound_8080"} 0`)
	h.Release()
	require.Equal(t, 0, s.Len())
}

func TestRBACStats(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	r := stats.NewRBACStats(s, "inbound:10.0.0.1:8080")
	r.Record(true)
	r.Record(false)
	r.Record(false)
	out := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Contains(t, out, `envoy_rbac_allowed{listener="inbound:10.0.0.1:8080"} 1`)
	require.Contains(t, out, `envoy_rbac_denied{listener="inbound:10.0.0.1:8080"} 2`)
	r.Release()
	require.Equal(t, 0, s.Len())
}

func TestListenerStats(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	l := stats.NewListenerStats(s, "inbound:10.0.0.1:8080")
	l.AcceptErrors.Inc()
	l.ConnectionPanics.Add(2)
	out := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Contains(t, out, "# TYPE kuma_dp_accept_errors_total counter\n")
	require.Contains(t, out, `kuma_dp_accept_errors_total{listener="inbound:10.0.0.1:8080"} 1`)
	require.Contains(t, out, `kuma_dp_connection_panics_total{listener="inbound:10.0.0.1:8080"} 2`)
	v := envoyValues(t, s, "")
	require.Equal(t, int64(2), v["listener.inbound_10.0.0.1_8080.connection_panics"])
	l.Release()
	require.Equal(t, 0, s.Len())
}

func TestServerStats(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	ss := stats.NewServerStats(s, time.Now().Add(-90*time.Second))

	v := envoyValues(t, s, "")
	require.Equal(t, int64(1), v["server.live"])
	require.GreaterOrEqual(t, v["server.uptime"], int64(90))
	require.Less(t, v["server.uptime"], int64(3600))
	require.Positive(t, v["server.memory_allocated"])
	require.GreaterOrEqual(t, v["server.memory_heap_size"], v["server.memory_allocated"])
	require.Equal(t, int64(math.MaxUint32), v["server.days_until_first_cert_expiring"])
	require.Equal(t, int64(0), v["control_plane.connected_state"])

	ss.SetControlPlaneConnected(true)
	ss.SetLive(false)
	ss.SetFirstCertExpiry(time.Now().Add(10*24*time.Hour + time.Hour))
	v = envoyValues(t, s, "")
	require.Equal(t, int64(1), v["control_plane.connected_state"])
	require.Equal(t, int64(0), v["server.live"])
	require.Equal(t, int64(10), v["server.days_until_first_cert_expiring"])

	ss.SetFirstCertExpiry(time.Now().Add(-time.Hour))
	require.Equal(t, int64(0), envoyValues(t, s, "")["server.days_until_first_cert_expiring"])
	ss.SetFirstCertExpiry(time.Time{})
	require.Equal(t, int64(math.MaxUint32), envoyValues(t, s, "")["server.days_until_first_cert_expiring"])

	// Prometheus names of compat §4; all of them count as used.
	mfs := parseText(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{UsedOnly: true}))
	for _, fam := range []string{"envoy_server_live", "envoy_server_uptime", "envoy_server_memory_allocated",
		"envoy_server_memory_heap_size", "envoy_control_plane_connected_state",
		"envoy_server_days_until_first_cert_expiring"} {
		require.Contains(t, mfs, fam)
		require.Equal(t, "GAUGE", mfs[fam].GetType().String())
	}
	require.Len(t, mfs, 6)
	ss.Release()
	require.Equal(t, 0, s.Len())
}

// TestZeroAllocations proves the recording helpers and a warmed-up render
// allocate nothing.
func TestZeroAllocations(t *testing.T) {
	s := representativeStore(t)
	c := stats.NewClusterStats(s, "alloc")
	h := stats.NewHTTPConnManagerStats(s, "alloc")
	stats.NewServerStats(s, time.Now())
	filtered := stats.RenderOptions{Filter: mustRegexp(`^cluster\.`), UsedOnly: true}
	twoFilters := stats.RenderOptions{Filter: mustRegexp(`^cluster\.`), AlsoFilter: mustRegexp(`upstream_rq`)}

	for _, tc := range []struct {
		name   string
		pooled bool // uses sync.Pool, which the race detector perturbs
		f      func()
	}{
		{name: "ClusterStats.RequestDone", f: func() { c.RequestDone(200, 3*time.Millisecond, true) }},
		{name: "HTTPConnManagerStats.RequestDone", f: func() { h.RequestDone(503, time.Millisecond) }},
		{name: "Counter.Inc", f: func() { c.UpstreamRqTimeout.Inc() }},
		{name: "Gauge.Add", f: func() { c.UpstreamRqActive.Add(1) }},
		{name: "Histogram.Observe", f: func() { c.UpstreamCxLengthMs.Observe(time.Second) }},
		{name: "Histogram.ObserveMs", f: func() { c.UpstreamCxLengthMs.ObserveMs(2.5) }},
		{name: "Write prometheus", pooled: true, f: func() { _ = s.WritePrometheus(io.Discard, stats.RenderOptions{}) }},
		{name: "Write openmetrics", pooled: true, f: func() { _ = s.WriteOpenMetrics(io.Discard, stats.RenderOptions{}) }},
		{name: "Write envoy", pooled: true, f: func() { _ = s.WriteEnvoy(io.Discard, stats.RenderOptions{}) }},
		{name: "Write with cached filter", pooled: true, f: func() { _ = s.WritePrometheus(io.Discard, filtered) }},
		{name: "Write with two cached filters", pooled: true, f: func() { _ = s.WritePrometheus(io.Discard, twoFilters) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.pooled && raceEnabled {
				t.Skip("sync.Pool drops items at random under -race")
			}
			tc.f() // warm up (pool, filter cache)
			require.Zero(t, testing.AllocsPerRun(200, tc.f))
		})
	}

	t.Run("Append into a caller buffer", func(t *testing.T) {
		if raceEnabled {
			t.Skip("the memory gauges sample runtime/metrics through a sync.Pool")
		}
		buf := s.Append(nil, stats.FormatPrometheus, filtered)
		buf = s.Append(buf[:0], stats.FormatPrometheus, stats.RenderOptions{})
		require.Zero(t, testing.AllocsPerRun(100, func() {
			buf = s.Append(buf[:0], stats.FormatPrometheus, filtered)
			buf = s.Append(buf[:0], stats.FormatOpenMetrics, stats.RenderOptions{})
		}))
	})
}
