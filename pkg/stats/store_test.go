package stats_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/stats"
)

// smallStore has one statistic of every kind and usage state:
//
//	cluster.a.upstream_rq_total   counter   used (5)
//	cluster.a.upstream_rq_2xx     counter   unused
//	cluster.b.upstream_rq_total   counter   unused
//	cluster.b.upstream_cx_active  gauge     used (set to 0)
//	cluster.b.membership_total    gauge     unused
//	cluster.a.upstream_rq_time    histogram used
//	cluster.b.upstream_rq_time    histogram unused
//	server.uptime                 gauge func (always used)
func smallStore(t testing.TB) *stats.Store {
	t.Helper()
	s := stats.NewStore()
	sc := s.NewScope()
	cl := func(n string) []stats.Label { return []stats.Label{{Name: "envoy_cluster_name", Value: n}} }
	sc.Counter(stats.Opts{Name: "cluster.a.upstream_rq_total", Family: "envoy_cluster_upstream_rq_total", Labels: cl("a")}).Add(5)
	sc.Counter(stats.Opts{Name: "cluster.a.upstream_rq_2xx", Family: "envoy_cluster_upstream_rq_xx",
		Labels: append(cl("a"), stats.Label{Name: "envoy_response_code_class", Value: "2"})})
	sc.Counter(stats.Opts{Name: "cluster.b.upstream_rq_total", Family: "envoy_cluster_upstream_rq_total", Labels: cl("b")})
	sc.Gauge(stats.Opts{Name: "cluster.b.upstream_cx_active", Family: "envoy_cluster_upstream_cx_active", Labels: cl("b")}).Set(0)
	sc.Gauge(stats.Opts{Name: "cluster.b.membership_total", Family: "envoy_cluster_membership_total", Labels: cl("b")})
	sc.Histogram(stats.Opts{Name: "cluster.a.upstream_rq_time", Family: "envoy_cluster_upstream_rq_time", Labels: cl("a")}).
		Observe(3 * time.Millisecond)
	sc.Histogram(stats.Opts{Name: "cluster.b.upstream_rq_time", Family: "envoy_cluster_upstream_rq_time", Labels: cl("b")})
	sc.GaugeFunc(stats.Opts{Name: "server.uptime", Family: "envoy_server_uptime"}, func() int64 { return 7 })
	sc.Publish()
	return s
}

// envoyNames returns the dotted names in an Envoy /stats output, in order.
func envoyNames(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), ": ")
		out = append(out, name)
	}
	return out
}

// promSeries returns the series of a text/OpenMetrics output, with a
// histogram counted once (by its _count line), in order.
func promSeries(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "_bucket{") || strings.Contains(line, "_sum{") {
			continue
		}
		series := line[:strings.LastIndexByte(line, ' ')]
		out = append(out, strings.Replace(series, "_count{", "{", 1))
	}
	return out
}

func TestFilterAndUsedOnly(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	for _, tc := range []struct {
		name      string
		opts      stats.RenderOptions
		wantEnvoy []string
		wantProm  []string
	}{
		{
			name: "everything",
			wantEnvoy: []string{
				"cluster.a.upstream_rq_2xx", "cluster.a.upstream_rq_total", "cluster.b.membership_total",
				"cluster.b.upstream_cx_active", "cluster.b.upstream_rq_total", "server.uptime",
				"cluster.a.upstream_rq_time", "cluster.b.upstream_rq_time",
			},
			wantProm: []string{
				`envoy_cluster_membership_total{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_cx_active{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_time{envoy_cluster_name="a"}`,
				`envoy_cluster_upstream_rq_time{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_xx{envoy_cluster_name="a",envoy_response_code_class="2"}`,
				`envoy_server_uptime`,
			},
		},
		{
			name: "used only",
			opts: stats.RenderOptions{UsedOnly: true},
			wantEnvoy: []string{
				"cluster.a.upstream_rq_total", "cluster.b.upstream_cx_active", "server.uptime",
				"cluster.a.upstream_rq_time",
			},
			wantProm: []string{
				`envoy_cluster_upstream_cx_active{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_time{envoy_cluster_name="a"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}`,
				`envoy_server_uptime`,
			},
		},
		{
			name:      "filter is unanchored and matches the dotted name",
			opts:      stats.RenderOptions{Filter: mustRegexp(`upstream_rq_total`)},
			wantEnvoy: []string{"cluster.a.upstream_rq_total", "cluster.b.upstream_rq_total"},
			wantProm: []string{
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="b"}`,
			},
		},
		{
			name: "filter on the cluster part of the dotted name",
			opts: stats.RenderOptions{Filter: mustRegexp(`^cluster\.b\.`)},
			wantEnvoy: []string{
				"cluster.b.membership_total", "cluster.b.upstream_cx_active", "cluster.b.upstream_rq_total",
				"cluster.b.upstream_rq_time",
			},
			wantProm: []string{
				`envoy_cluster_membership_total{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_cx_active{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_time{envoy_cluster_name="b"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="b"}`,
			},
		},
		{
			name:      "filter does not see Prometheus names",
			opts:      stats.RenderOptions{Filter: mustRegexp(`envoy_`)},
			wantEnvoy: nil,
			wantProm:  nil,
		},
		{
			name:      "both filters must match",
			opts:      stats.RenderOptions{Filter: mustRegexp(`upstream_rq_total`), AlsoFilter: mustRegexp(`^cluster\.b\.`)},
			wantEnvoy: []string{"cluster.b.upstream_rq_total"},
			wantProm:  []string{`envoy_cluster_upstream_rq_total{envoy_cluster_name="b"}`},
		},
		{
			name:      "the second filter alone",
			opts:      stats.RenderOptions{AlsoFilter: mustRegexp(`^cluster\.a\.upstream_rq_t`)},
			wantEnvoy: []string{"cluster.a.upstream_rq_total", "cluster.a.upstream_rq_time"},
			wantProm: []string{
				`envoy_cluster_upstream_rq_time{envoy_cluster_name="a"}`,
				`envoy_cluster_upstream_rq_total{envoy_cluster_name="a"}`,
			},
		},
		{
			name:      "filter and used only",
			opts:      stats.RenderOptions{Filter: mustRegexp(`^cluster\.b\.`), UsedOnly: true},
			wantEnvoy: []string{"cluster.b.upstream_cx_active"},
			wantProm:  []string{`envoy_cluster_upstream_cx_active{envoy_cluster_name="b"}`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.wantEnvoy, envoyNames(render(t, s, stats.FormatEnvoy, tc.opts)))
			text := render(t, s, stats.FormatPrometheus, tc.opts)
			require.Equal(t, tc.wantProm, promSeries(text))
			// No header of an emptied family is left behind.
			require.Equal(t, countFamilies(tc.wantProm), strings.Count(string(text), "# TYPE "))
			om := render(t, s, stats.FormatOpenMetrics, tc.opts)
			require.Equal(t, tc.wantProm, promSeries(om))
			require.True(t, strings.HasSuffix(string(om), "# EOF\n"))
		})
	}
}

func countFamilies(series []string) int {
	fams := make(map[string]bool)
	for _, s := range series {
		f, _, _ := strings.Cut(s, "{")
		fams[f] = true
	}
	return len(fams)
}

func TestFilterFollowsRegistrationChanges(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	re := mustRegexp(`^cluster\.`)
	a := stats.NewClusterStats(s, "a")
	a.RequestDone(200, time.Millisecond, false)
	opts := stats.RenderOptions{Filter: re, UsedOnly: true}
	require.Equal(t, []string{"cluster.a.internal.upstream_rq_2xx", "cluster.a.upstream_rq_2xx",
		"cluster.a.upstream_rq_completed", "cluster.a.upstream_rq_total", "cluster.a.upstream_rq_time"},
		envoyNames(render(t, s, stats.FormatEnvoy, opts)))

	// A new generation: the cached match result must not be reused.
	b := stats.NewClusterStats(s, "b")
	b.UpstreamRqTotal.Inc()
	require.Contains(t, envoyNames(render(t, s, stats.FormatEnvoy, opts)), "cluster.b.upstream_rq_total")
	a.Release()
	require.Equal(t, []string{"cluster.b.upstream_rq_total"}, envoyNames(render(t, s, stats.FormatEnvoy, opts)))
}

func TestScopeRelease(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	a := stats.NewClusterStats(s, "a")
	b := stats.NewClusterStats(s, "b")
	a.RequestDone(200, time.Millisecond, true)
	b.RequestDone(503, time.Millisecond, true)
	before := s.Len()
	gen := s.Generation()

	a.Release()
	require.NotEqual(t, gen, s.Generation())
	require.Equal(t, before/2, s.Len())
	text := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.NotContains(t, text, `envoy_cluster_name="a"`)
	require.Contains(t, text, `envoy_cluster_name="b"`)
	require.NotContains(t, string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{})), "cluster.a.")

	// Old handles keep working, they just no longer render.
	require.NotPanics(t, func() {
		a.RequestDone(200, time.Second, false)
		a.ConnectionOpened(time.Millisecond)
		a.UpstreamRqActive.Set(3)
	})
	require.Equal(t, uint64(2), a.UpstreamRqTotal.Value())
	require.NotContains(t, string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})), `envoy_cluster_name="a"`)

	// Releasing twice is a no-op; registering the cluster again starts from zero.
	gen = s.Generation()
	a.Release()
	require.Equal(t, gen, s.Generation())
	a2 := stats.NewClusterStats(s, "a")
	require.NotSame(t, a.UpstreamRqTotal, a2.UpstreamRqTotal)
	require.Equal(t, uint64(0), a2.UpstreamRqTotal.Value())
	require.Equal(t, before, s.Len())

	// A family that loses its last series loses its header too.
	b.Release()
	a2.Release()
	require.Equal(t, 0, s.Len())
	require.Empty(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Equal(t, "# EOF\n", string(render(t, s, stats.FormatOpenMetrics, stats.RenderOptions{})))
}

func TestScopePublish(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	sc := s.NewScope()
	c := sc.Counter(stats.Opts{Name: "x.y", Family: "x_y_total"})
	c.Inc()
	require.Empty(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{}), "unpublished statistics must not render")
	sc.Publish()
	require.Equal(t, "# TYPE x_y_total counter\nx_y_total 1\n", string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})))

	// Publishing again without new statistics does not rebuild.
	gen := s.Generation()
	sc.Publish()
	require.Equal(t, gen, s.Generation())

	// A released scope hands out working handles that never render.
	sc.Release()
	late := sc.Counter(stats.Opts{Name: "x.late", Family: "x_late_total"})
	late.Inc()
	sc.Publish()
	require.Equal(t, 0, s.Len())
}

func TestBatch(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	old := stats.NewClusterStats(s, "old")
	kept := stats.NewClusterStats(s, "kept")
	gen := s.Generation()
	n := s.Len()

	var added []*stats.ClusterStats
	s.Batch(func() {
		old.Release()
		for i := range 10 {
			added = append(added, stats.NewClusterStats(s, fmt.Sprintf("new_%d", i)))
		}
		added[9].Release() // added and removed within the batch
		s.Batch(func() {   // nested: still one rebuild at the end
			stats.NewRBACStats(s, "l")
		})
		// Nothing changes for the encoders until the batch ends.
		require.Equal(t, gen, s.Generation())
		require.Contains(t, string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{})), "cluster.old.")
	})
	require.Equal(t, gen+1, s.Generation(), "one rebuild for the whole batch")
	out := string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{}))
	require.NotContains(t, out, "cluster.old.")
	require.NotContains(t, out, "cluster.new_9.")
	require.Contains(t, out, "cluster.new_8.upstream_rq_total")
	require.Contains(t, out, "rbac.l.allowed")
	require.Equal(t, n/2*10+2, s.Len())
	kept.Release()

	// A batch without changes does not rebuild.
	gen = s.Generation()
	s.Batch(func() {})
	require.Equal(t, gen, s.Generation())
}

func TestSharedRegistration(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	first := stats.NewClusterStats(s, "backend")
	second := stats.NewClusterStats(s, "backend") // e.g. a cluster updated in place
	require.Same(t, first.UpstreamRqTotal, second.UpstreamRqTotal)
	require.Same(t, first.UpstreamRqTime, second.UpstreamRqTime)
	n := s.Len()

	first.RequestDone(200, time.Millisecond, false)
	first.Release()
	require.Equal(t, n, s.Len(), "still held by the second holder")
	require.Contains(t, string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{})), "cluster.backend.upstream_rq_total: 1\n")
	second.Release()
	require.Equal(t, 0, s.Len())
}

func TestRegistrationErrorsPanic(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		reg  func(sc *stats.Scope)
	}{
		{name: "invalid family name", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a", Family: "1abc"})
		}},
		{name: "family with a dash", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a", Family: "a-b"})
		}},
		{name: "invalid label name", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a", Family: "a", Labels: []stats.Label{{Name: "a.b", Value: "x"}}})
		}},
		{name: "reserved label name", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a", Family: "a", Labels: []stats.Label{{Name: "__name__", Value: "x"}}})
		}},
		{name: "le on a histogram", reg: func(sc *stats.Scope) {
			sc.Histogram(stats.Opts{Name: "a", Family: "a", Labels: []stats.Label{{Name: "le", Value: "x"}}})
		}},
		{name: "empty dotted name", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Family: "a"})
		}},
		{name: "same identity, other kind", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a", Family: "a"})
			sc.Gauge(stats.Opts{Name: "a", Family: "a"})
		}},
		{name: "same family, other type", reg: func(sc *stats.Scope) {
			sc.Counter(stats.Opts{Name: "a.x", Family: "a", Labels: []stats.Label{{Name: "n", Value: "x"}}})
			sc.Histogram(stats.Opts{Name: "a.y", Family: "a", Labels: []stats.Label{{Name: "n", Value: "y"}}})
		}},
		{name: "nil gauge func", reg: func(sc *stats.Scope) {
			sc.GaugeFunc(stats.Opts{Name: "a", Family: "a"}, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Panics(t, func() { tc.reg(stats.NewStore().NewScope()) })
		})
	}
}

func TestStatNameSanitizing(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	stats.NewRBACStats(s, "inbound:10.0.0.1:8080").Record(false)
	sc := s.NewScope()
	sc.Counter(stats.Opts{Name: "odd name\nwith\tcontrol", Family: "odd_total"}).Inc()
	sc.Publish()
	require.Equal(t,
		"odd_name_with_control: 1\nrbac.inbound_10.0.0.1_8080.allowed: 0\nrbac.inbound_10.0.0.1_8080.denied: 1\n",
		string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{})))
}

func TestLabelEscaping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, value, want string
	}{
		{name: "plain", value: "backend", want: `backend`},
		{name: "quote", value: `a"b`, want: `a\"b`},
		{name: "backslash", value: `a\b`, want: `a\\b`},
		{name: "newline", value: "a\nb", want: `a\nb`},
		{name: "utf8 kept", value: "café", want: "café"},
		{name: "invalid utf8 replaced", value: "a\xffb", want: "a\uFFFDb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stats.NewStore()
			sc := s.NewScope()
			sc.Gauge(stats.Opts{Name: "g", Family: "g", Labels: []stats.Label{{Name: "v", Value: tc.value}}}).Set(1)
			sc.Publish()
			out := render(t, s, stats.FormatPrometheus, stats.RenderOptions{})
			require.Equal(t, "# TYPE g gauge\ng{v=\""+tc.want+"\"} 1\n", string(out))
			mfs := parseText(t, out)
			require.Equal(t, strings.ToValidUTF8(tc.value, "\uFFFD"), mfs["g"].GetMetric()[0].GetLabel()[0].GetValue())
		})
	}
}

// A scope renders equal labels once and shares the string; a caller's
// label slice changed between registrations gets its new labels, and a
// histogram refuses "le" even after a counter rendered the same labels.
func TestScopeLabelsFollowTheCallersSlice(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	sc := s.NewScope()
	ls := []stats.Label{{Name: "svc", Value: "a"}}
	sc.Counter(stats.Opts{Name: "c1", Family: "c1", Labels: ls}).Inc()
	sc.Counter(stats.Opts{Name: "c2", Family: "c2", Labels: ls}).Inc()
	ls[0].Value = "b" // the same slice, new contents
	sc.Counter(stats.Opts{Name: "c3", Family: "c3", Labels: ls}).Inc()
	sc.Publish()
	out := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Contains(t, out, "c1{svc=\"a\"} 1\n")
	require.Contains(t, out, "c2{svc=\"a\"} 1\n")
	require.Contains(t, out, "c3{svc=\"b\"} 1\n")

	le := []stats.Label{{Name: "le", Value: "1"}}
	sc.Counter(stats.Opts{Name: "c4", Family: "c4", Labels: le})
	require.Panics(t, func() { sc.Histogram(stats.Opts{Name: "h", Family: "h", Labels: le}) })
}

func TestSeriesOrder(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	// Registered out of order, in several scopes.
	for _, n := range []string{"zeta", "ab", "a", "mid"} {
		stats.NewRBACStats(s, n)
	}
	require.Equal(t, []string{
		`envoy_rbac_allowed{listener="a"}`, `envoy_rbac_allowed{listener="ab"}`,
		`envoy_rbac_allowed{listener="mid"}`, `envoy_rbac_allowed{listener="zeta"}`,
		`envoy_rbac_denied{listener="a"}`, `envoy_rbac_denied{listener="ab"}`,
		`envoy_rbac_denied{listener="mid"}`, `envoy_rbac_denied{listener="zeta"}`,
	}, promSeries(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})))
	names := envoyNames(render(t, s, stats.FormatEnvoy, stats.RenderOptions{}))
	require.True(t, slices.IsSorted(names), "%v", names)
}

// failingWriter accepts n writes, then fails.
type failingWriter struct {
	n      int
	writes int
}

var errWrite = errors.New("connection reset")

func (w *failingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes > w.n {
		return 0, errWrite
	}
	return len(p), nil
}

func TestWriteStreamsAndStopsOnError(t *testing.T) {
	t.Parallel()
	s := manyClusters(t, 50) // several times the 32 KiB flush size
	// Streaming in chunks gives the same bytes as one buffer.
	var chunks int
	var buf bytes.Buffer
	require.NoError(t, s.WritePrometheus(writerFunc(func(p []byte) (int, error) {
		chunks++
		return buf.Write(p)
	}), stats.RenderOptions{}))
	require.Greater(t, chunks, 1)
	require.Equal(t, string(s.Append(nil, stats.FormatPrometheus, stats.RenderOptions{})), buf.String())

	for _, f := range []stats.Format{stats.FormatPrometheus, stats.FormatOpenMetrics, stats.FormatEnvoy} {
		t.Run(f.String(), func(t *testing.T) {
			w := &failingWriter{n: 1}
			require.ErrorIs(t, s.Write(w, f, stats.RenderOptions{}), errWrite)
			require.Equal(t, 2, w.writes, "rendering must stop at the first error")
		})
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func manyClusters(t testing.TB, n int) *stats.Store {
	t.Helper()
	s := stats.NewStore()
	for i := range n {
		c := stats.NewClusterStats(s, fmt.Sprintf("service_%04d", i))
		c.RequestDone(200, time.Duration(i)*time.Millisecond, i%2 == 0)
	}
	return s
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		f           stats.Format
		name, ctype string
	}{
		{stats.FormatPrometheus, "prometheus", "text/plain; version=0.0.4; charset=utf-8"},
		{stats.FormatOpenMetrics, "openmetrics", "application/openmetrics-text; version=1.0.0; charset=utf-8"},
		{stats.FormatEnvoy, "envoy", "text/plain; charset=utf-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.name, tc.f.String())
			require.Equal(t, tc.ctype, tc.f.ContentType())
		})
	}
}

// TestConcurrentRecordRegisterRender runs writers, a registrar and renderers
// at once; run it with -race. It is bounded by iteration counts, not time.
func TestConcurrentRecordRegisterRender(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	stable := stats.NewClusterStats(s, "stable")
	hcm := stats.NewHTTPConnManagerStats(s, "inbound_8080")

	const (
		writers   = 4
		perWriter = 20000
		churn     = 200
		renders   = 60
	)
	handles := make(chan *stats.ClusterStats, churn)
	var wg sync.WaitGroup

	// Registrar: adds and removes clusters; every handle it ever created is
	// also handed to the writers, released or not.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(handles)
		var live []*stats.ClusterStats
		for i := range churn {
			c := stats.NewClusterStats(s, fmt.Sprintf("churn_%d", i%17))
			live = append(live, c)
			handles <- c
			if len(live) > 5 {
				live[0].Release()
				live = live[1:]
			}
		}
		for _, c := range live {
			c.Release()
		}
	}()

	var mu sync.Mutex
	var seen []*stats.ClusterStats
	wg.Add(1)
	go func() {
		defer wg.Done()
		for c := range handles {
			mu.Lock()
			seen = append(seen, c)
			mu.Unlock()
		}
	}()

	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				stable.RequestDone(200+100*(i%4), time.Duration(i)*time.Microsecond, w%2 == 0)
				hcm.RequestDone(200, time.Millisecond)
				stable.UpstreamRqActive.Add(1)
				stable.UpstreamRqActive.Sub(1)
				if i%50 == 0 {
					mu.Lock()
					var c *stats.ClusterStats
					if len(seen) > 0 {
						c = seen[i%len(seen)]
					}
					mu.Unlock()
					if c != nil {
						c.RequestDone(503, time.Millisecond, true)
					}
				}
			}
		}()
	}

	renderErrs := make(chan error, 2*renders)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := []stats.RenderOptions{{}, {UsedOnly: true}, {Filter: mustRegexp(`churn_1`)}, {Filter: mustRegexp(`^cluster\.stable\.`), UsedOnly: true}}
			for i := range renders {
				f := stats.Format((i + r) % 3)
				if err := s.Write(io.Discard, f, opts[i%len(opts)]); err != nil {
					renderErrs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(renderErrs)
	for err := range renderErrs {
		require.NoError(t, err)
	}

	require.Equal(t, uint64(writers*perWriter), stable.UpstreamRqTotal.Value())
	require.Equal(t, uint64(writers*perWriter), stable.UpstreamRqTime.Count())
	require.Equal(t, int64(0), stable.UpstreamRqActive.Value())
	// Every churned cluster was released: only the stable ones remain, and
	// the output is still well-formed.
	out := render(t, s, stats.FormatPrometheus, stats.RenderOptions{})
	require.NotContains(t, string(out), "churn_")
	parseText(t, out)
}
