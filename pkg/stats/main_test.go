package stats_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/pkg/stats"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireGolden compares got with testdata/<name>, rewriting it with -update.
func requireGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file: run go test ./pkg/stats/ -update")
	require.Equal(t, string(want), string(got))
}

// render returns the whole output of one format.
func render(t testing.TB, s *stats.Store, f stats.Format, o stats.RenderOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.Write(&buf, f, o))
	return buf.Bytes()
}

// representativeStore builds the store behind the golden files: two
// clusters (one inbound, one outbound), an HTTP connection manager, RBAC,
// histograms with observations (one exactly on a bucket bound), a label
// value that needs escaping and a render-time gauge. Everything is
// deterministic.
func representativeStore(t testing.TB) *stats.Store {
	t.Helper()
	s := stats.NewStore()

	backend := stats.NewClusterStats(s, "backend")
	backend.RequestDone(200, 3*time.Millisecond, true)
	backend.RequestDone(200, 10*time.Millisecond, false) // exactly on the le="10" bound
	backend.RequestDone(503, 1500*time.Millisecond, true)
	backend.RequestDone(404, 700*time.Microsecond, true)
	backend.RequestDone(0, 2*time.Hour, false) // no class: totals only, lands in +Inf
	backend.UpstreamRqActive.Inc()
	backend.UpstreamRqTimeout.Inc()
	backend.ConnectionOpened(2 * time.Millisecond)
	backend.ConnectionOpened(1234567 * time.Nanosecond)
	backend.ConnectionClosed(90 * time.Second)
	backend.UpstreamCxRxBytesTotal.Add(123456)
	backend.UpstreamCxTxBytesTotal.Add(65432)
	backend.MembershipTotal.Set(3)
	backend.MembershipHealthy.Set(2)
	backend.HealthCheckHealthy.Set(2)
	backend.SSLHandshake.Add(2)

	inbound := stats.NewClusterStats(s, "localhost_8080")
	inbound.RequestDone(201, 250*time.Microsecond, true)

	hcm := stats.NewHTTPConnManagerStats(s, "inbound_8080")
	hcm.ConnectionOpened()
	hcm.RequestDone(200, 4*time.Millisecond)
	hcm.RequestDone(500, 40*time.Millisecond)

	rbac := stats.NewRBACStats(s, "inbound:10.0.0.1:8080")
	rbac.Record(true)
	rbac.Record(true)
	rbac.Record(false)

	sc := s.NewScope()
	sc.Counter(stats.Opts{
		Name:   "test.escape",
		Family: "test_escape_total",
		Help:   "Help with a backslash \\ and a \"quote\"\nand a second line.",
		Labels: []stats.Label{{Name: "path", Value: "a\"b\\c\nd"}},
	}).Add(7)
	sc.GaugeFunc(stats.Opts{Name: "server.uptime", Family: "envoy_server_uptime", Help: "Current server uptime in seconds."},
		func() int64 { return 42 })
	sc.Publish()
	return s
}

func TestGolden(t *testing.T) {
	s := representativeStore(t)
	for _, tc := range []struct {
		name   string
		format stats.Format
		golden string
	}{
		{name: "prometheus text", format: stats.FormatPrometheus, golden: "prometheus.golden"},
		{name: "openmetrics", format: stats.FormatOpenMetrics, golden: "openmetrics.golden"},
		{name: "envoy stats", format: stats.FormatEnvoy, golden: "envoy.golden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := render(t, s, tc.format, stats.RenderOptions{})
			requireGolden(t, tc.golden, got)
			// Append with a caller buffer gives the same bytes.
			require.Equal(t, string(got), string(s.Append(nil, tc.format, stats.RenderOptions{})))
		})
	}
}
