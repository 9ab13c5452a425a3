package metricsendpoint_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Prometheus' default Accept header (scrape_protocols default order).
const prometheusAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// requireGolden compares got with testdata/<name>, rewriting it with -update.
func requireGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file: run go test ./pkg/metricsendpoint/ -update")
	require.Equal(t, string(want), string(got))
}

// testStore is a small deterministic proxy: two clusters, an HTTP
// connection manager whose prefix contains "backend" (so that a filter on
// "backend" alone matches more than the backend cluster) and RBAC.
func testStore(t testing.TB) *stats.Store {
	t.Helper()
	s := stats.NewStore()
	backend := stats.NewClusterStats(s, "backend")
	backend.RequestDone(200, 3*time.Millisecond, true)
	backend.RequestDone(503, 40*time.Millisecond, false)
	backend.UpstreamCxRxBytesTotal.Add(1234)
	inbound := stats.NewClusterStats(s, "localhost_8080")
	inbound.RequestDone(200, time.Millisecond, true)
	hcm := stats.NewHTTPConnManagerStats(s, "backend_hcm")
	hcm.RequestDone(200, 2*time.Millisecond)
	rbac := stats.NewRBACStats(s, "inbound_8080")
	rbac.Record(true)
	return s
}

// smallStore is a proxy with one series of a few families (expfmt's
// OpenMetrics decoder, used to check answers, is slow on big inputs).
func smallStore(t testing.TB) *stats.Store {
	t.Helper()
	s := stats.NewStore()
	sc := s.NewScope()
	cluster := []stats.Label{{Name: stats.LabelClusterName, Value: "backend"}}
	sc.Counter(stats.Opts{Name: "cluster.backend.upstream_rq_total", Family: "envoy_cluster_upstream_rq_total", Help: "Total requests.", Labels: cluster}).Add(2)
	sc.Histogram(stats.Opts{Name: "cluster.backend.upstream_rq_time", Family: "envoy_cluster_upstream_rq_time", Help: "Request time milliseconds.", Labels: cluster}).Observe(3 * time.Millisecond)
	sc.Gauge(stats.Opts{Name: "server.live", Family: "envoy_server_live", Help: "1 if the server is not currently draining, 0 otherwise."}).Set(1)
	sc.Publish()
	return s
}

// render is the store's own rendering.
func render(t testing.TB, s *stats.Store, f stats.Format, o stats.RenderOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.Write(&buf, f, o))
	return buf.Bytes()
}

// fixedClock makes scrape durations 0, for golden files.
func fixedClock() time.Time { return time.Unix(1_700_000_000, 0) }

// newEndpoint builds an endpoint with cfg, closed at the end of the test.
func newEndpoint(t testing.TB, s *stats.Store, cfg metricsendpoint.Config, opts metricsendpoint.Options) *metricsendpoint.Endpoint {
	t.Helper()
	if opts.Log == nil {
		opts.Log = testLogger(t)
	}
	e, err := metricsendpoint.New(s, opts)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	if cfg.Path == "" {
		cfg.Path = "/metrics"
	}
	require.NoError(t, e.Update(cfg))
	return e
}

// serve mounts h on a real listener on 127.0.0.1 and returns its base URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// scraper is a real HTTP client that does not decompress by itself.
func scraper(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type response struct {
	status int
	header http.Header
	body   []byte // decompressed
}

// scrape sends one request with the given headers (pairs) and reads the
// whole answer, decompressing gzip.
func scrape(t testing.TB, c *http.Client, method, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		require.NoError(t, err)
		body = zr
	}
	b, err := io.ReadAll(body)
	require.NoError(t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// parseText parses the Prometheus text format with expfmt's parser and
// checks that no family is declared twice.
func parseText(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	requireUniqueFamilies(t, b)
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	require.NoError(t, err, "%s", b)
	return mfs
}

// parseOpenMetrics decodes OpenMetrics 1.0 with expfmt's decoder.
func parseOpenMetrics(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	requireUniqueFamilies(t, b)
	require.True(t, bytes.HasSuffix(b, []byte("\n# EOF\n")), "must end with # EOF")
	require.Equal(t, 1, bytes.Count(b, []byte("# EOF")), "exactly one # EOF")
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.FmtOpenMetrics_1_0_0)
	out := make(map[string]*dto.MetricFamily)
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err, "%s", b)
		out[mf.GetName()] = mf
	}
}

// requireUniqueFamilies fails when a family has two TYPE lines (the text
// parser would reject it too, but this names the family).
func requireUniqueFamilies(t testing.TB, b []byte) {
	t.Helper()
	seen := make(map[string]bool)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "# TYPE ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		require.False(t, seen[name], "family %s declared twice", name)
		seen[name] = true
	}
}

// envoyStats returns the store's statistics by dotted name (Envoy form).
func envoyStats(t testing.TB, s *stats.Store) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for line := range strings.Lines(string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{}))) {
		name, value, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
		if ok {
			out[name] = value
		}
	}
	return out
}

// app is an application metrics endpoint for the tests.
type app struct {
	url  string
	host string
	port uint32
}

func (a app) aggregate(name string) resource.AggregateEndpoint {
	return resource.AggregateEndpoint{Name: name, Port: a.port, Path: "/metrics", Address: a.host}
}

// startApp serves h on 127.0.0.1.
func startApp(t testing.TB, h http.HandlerFunc) app {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	host, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)
	p, err := strconv.ParseUint(port, 10, 16)
	require.NoError(t, err)
	return app{url: srv.URL, host: host, port: uint32(p)}
}

// textApp answers every request with body in the text format.
func textApp(t testing.TB, body string) app {
	t.Helper()
	return startApp(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = io.WriteString(w, body)
	})
}

// downApp returns an address where nothing listens.
func downApp(t testing.TB) app {
	t.Helper()
	// A loopback address of the test's own: nothing listens there.
	return app{host: loopback.Host(), port: 9}
}

// testLogger writes to t.Log while the test runs.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu sync.Mutex
	t  testing.TB
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// logRecorder keeps log records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count returns how many records have the level and the attribute.
func (l *logRecorder) count(level slog.Level, key, value string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.records {
		if r.Level != level {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key && a.Value.String() == value {
				n++
				return false
			}
			return true
		})
	}
	return n
}
