package metricsendpoint

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/stats"
)

func TestNegotiate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		accept string
		want   string
	}{
		{name: "empty", accept: "", want: stats.ContentTypePrometheus},
		{name: "prometheus default", accept: "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", want: stats.ContentTypeOpenMetrics},
		{name: "prometheus text first", accept: "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5", want: stats.ContentTypePrometheus},
		{name: "openmetrics without version", accept: "application/openmetrics-text", want: stats.ContentTypeOpenMetrics},
		{name: "openmetrics 0.0.1", accept: "application/openmetrics-text; version=0.0.1", want: contentTypeOpenMetrics001},
		{name: "openmetrics 2.0 is not offered", accept: "application/openmetrics-text;version=2.0.0,text/plain;q=0.1", want: stats.ContentTypePrometheus},
		{name: "equal q: first wins", accept: "application/openmetrics-text, text/plain", want: stats.ContentTypeOpenMetrics},
		{name: "equal q: text first", accept: "text/plain, application/openmetrics-text", want: stats.ContentTypePrometheus},
		{name: "wildcard is text", accept: "*/*", want: stats.ContentTypePrometheus},
		{name: "wildcard preferred over openmetrics", accept: "*/*;q=0.9,application/openmetrics-text;q=0.8", want: stats.ContentTypePrometheus},
		{name: "q=0 excludes", accept: "application/openmetrics-text;q=0", want: stats.ContentTypePrometheus},
		{name: "bad q", accept: "application/openmetrics-text;q=x", want: stats.ContentTypePrometheus},
		{name: "case and spaces", accept: " Application/OpenMetrics-Text ; Version=1.0.0 ; q=0.9 , text/plain;q=0.5", want: stats.ContentTypeOpenMetrics},
		{name: "garbage", accept: ";;,,=;q", want: stats.ContentTypePrometheus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ct := negotiate(tc.accept)
			require.Equal(t, tc.want, ct)
			require.Equal(t, tc.want != stats.ContentTypePrometheus, f == stats.FormatOpenMetrics)
		})
	}
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values []string
		want   bool
	}{
		{name: "none"},
		{name: "gzip", values: []string{"gzip"}, want: true},
		{name: "list", values: []string{"deflate, gzip;q=0.5"}, want: true},
		{name: "two headers", values: []string{"br", "GZIP"}, want: true},
		{name: "gzip refused", values: []string{"gzip;q=0"}},
		{name: "star", values: []string{"*"}, want: true},
		{name: "star but not gzip", values: []string{"*, gzip;q=0"}},
		{name: "identity", values: []string{"identity"}},
		{name: "x-gzip", values: []string{"x-gzip"}, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, acceptsGzip(tc.values))
		})
	}
}

func TestScrapeBudget(t *testing.T) {
	t.Parallel()
	const def = 10 * time.Second
	for _, tc := range []struct {
		name   string
		header string
		want   time.Duration
	}{
		{name: "absent", want: 9500 * time.Millisecond},
		{name: "prometheus default", header: "10", want: 9500 * time.Millisecond},
		{name: "short: 10% margin", header: "1", want: 900 * time.Millisecond},
		{name: "fraction", header: "0.5", want: 450 * time.Millisecond},
		{name: "long: 0.5 s margin", header: "60", want: 59500 * time.Millisecond},
		{name: "spaces", header: " 2 ", want: 1800 * time.Millisecond},
		{name: "zero", header: "0", want: 9500 * time.Millisecond},
		{name: "negative", header: "-3", want: 9500 * time.Millisecond},
		{name: "NaN", header: "NaN", want: 9500 * time.Millisecond},
		{name: "Inf", header: "+Inf", want: 9500 * time.Millisecond},
		{name: "garbage", header: "10s", want: 9500 * time.Millisecond},
		{name: "huge", header: "1e300", want: maxScrapeTimeout - 500*time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, scrapeBudget(tc.header, def))
		})
	}
}

// writeSplit writes b to w cut at every position in cuts.
func writeSplit(t *testing.T, w interface{ Write([]byte) (int, error) }, b []byte, cuts ...int) {
	t.Helper()
	prev := 0
	for _, c := range append(cuts, len(b)) {
		n, err := w.Write(b[prev:c])
		require.NoError(t, err)
		require.Equal(t, c-prev, n)
		prev = c
	}
}

func TestEOFStripper(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string
	}{
		{name: "openmetrics body", in: "# TYPE a gauge\na 1\n# EOF\n", want: "# TYPE a gauge\na 1\n"},
		{name: "only eof", in: "# EOF\n", want: ""},
		{name: "no eof", in: "a 1\nb 2\n", want: "a 1\nb 2\n"},
		{name: "short", in: "a 1\n", want: "a 1\n"},
		{name: "empty", in: "", want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Every way of cutting the input in two and in three pieces.
			for i := 0; i <= len(tc.in); i++ {
				for j := i; j <= len(tc.in); j++ {
					var out bytes.Buffer
					s := &eofStripper{w: &out}
					writeSplit(t, s, []byte(tc.in), i, j)
					require.NoError(t, s.Finish())
					require.Equal(t, tc.want, out.String(), "cuts %d %d", i, j)
				}
			}
		})
	}
}

func TestProxyFamilyNames(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	stats.NewClusterStats(s, "a")
	e, err := New(s, Options{})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	names := e.proxyFamilyNames()
	for _, n := range []string{
		"envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq", // counter, and its OpenMetrics name
		"envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_rq_time_bucket", "envoy_cluster_upstream_rq_time_sum", "envoy_cluster_upstream_rq_time_count",
		"envoy_cluster_upstream_rq_active",
	} {
		require.Contains(t, names, n)
	}
	require.NotContains(t, names, "envoy_cluster_upstream_rq_active_total")
}

func TestParseApplication(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		body   string
		format expfmt.Format
		err    string // "" = valid
	}{
		{name: "empty", body: ""},
		{name: "comments only", body: "# just a comment\n"},
		{name: "untyped", body: "a 1\nb{x=\"y\"} 2 1700000000000\n"},
		{name: "garbage", body: "<html>", err: "parsing error"},
		{name: "utf-8 metric name", body: "{\"a.b\"} 1\n", err: "parsing error"},
		{name: "duplicate series", body: "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 1\n", err: "duplicate series"},
		{name: "duplicate label", body: "a{x=\"1\",x=\"2\"} 1\n", err: "duplicate label"},
		{name: "negative counter", body: "# TYPE a_total counter\na_total -1\n", err: "negative or NaN"},
		{name: "NaN counter", body: "# TYPE a_total counter\na_total NaN\n", err: "negative or NaN"},
		{name: "NaN gauge is fine", body: "# TYPE a gauge\na NaN\n"},
		{
			name: "histogram buckets decrease",
			body: "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 5\nh_sum 1\nh_count 5\n",
			err:  "below the previous bucket",
		},
		{
			name: "histogram +Inf differs from count",
			body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
			err:  "differs from the count",
		},
		{
			name: "histogram count below buckets",
			body: "# TYPE h histogram\nh_bucket{le=\"1\"} 4\nh_sum 1\nh_count 3\n",
			err:  "below the highest bucket",
		},
		{
			name: "histogram without +Inf",
			body: "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 3\n",
		},
		{name: "summary quantile out of range", body: "# TYPE s summary\ns{quantile=\"1.5\"} 1\ns_sum 1\ns_count 1\n", err: "outside [0, 1]"},
		{
			name:   "openmetrics",
			body:   "# TYPE a counter\na_total 1\n# EOF\n",
			format: expfmt.FmtOpenMetrics_1_0_0,
		},
		{name: "openmetrics without eof", body: "# TYPE a counter\na_total 1\n", format: expfmt.FmtOpenMetrics_1_0_0, err: "OpenMetrics"},
		{name: "protobuf", body: "\x00", format: expfmt.FmtProtoDelim, err: "unsupported content type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format := tc.format
			if format == "" {
				format = expfmt.FmtText
			}
			fams, err := parseApplication([]byte(tc.body), format)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			for _, om := range []bool{false, true} {
				var buf bytes.Buffer
				require.NoError(t, encodeFamilies(&buf, fams, om))
			}
		})
	}
}

func TestOpenMetricsOnlyRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		body string
	}{
		{name: "negative histogram sum", body: "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum -1\nh_count 1\n"},
		{name: "float histogram", body: "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1.5\nh_sum 1\nh_count 1.5\n"},
		{name: "negative summary sum", body: "# TYPE s summary\ns_sum -1\ns_count 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fams, err := parseApplication([]byte(tc.body), expfmt.FmtText)
			require.NoError(t, err)
			var buf bytes.Buffer
			require.NoError(t, encodeFamilies(&buf, fams, false), "valid in the text format")
			require.Error(t, encodeFamilies(&buf, fams, true), "invalid in OpenMetrics")
		})
	}
}

func TestReservedNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  dto.MetricType
		want []string
	}{
		{name: "a_total", typ: dto.MetricType_COUNTER, want: []string{"a_total", "a"}},
		{name: "a", typ: dto.MetricType_COUNTER, want: []string{"a"}},
		{name: "_total", typ: dto.MetricType_COUNTER, want: []string{"_total"}},
		{name: "a_total", typ: dto.MetricType_GAUGE, want: []string{"a_total"}},
		{name: "h", typ: dto.MetricType_HISTOGRAM, want: []string{"h", "h_bucket", "h_sum", "h_count"}},
		{name: "s", typ: dto.MetricType_SUMMARY, want: []string{"s", "s_sum", "s_count"}},
	} {
		t.Run(tc.typ.String()+" "+tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, reservedNames(nil, tc.name, tc.typ))
		})
	}
}

func TestSanitizeName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"web":         "web",
		"app-b":       "app_b",
		"my.app:8080": "my_app_8080",
		"1st":         "_1st",
		"日本":          "______",
	} {
		require.Equal(t, want, sanitizeName(in), in)
	}
}

// FuzzParseApplication: no input panics, and whatever is accepted encodes
// in the text format.
func FuzzParseApplication(f *testing.F) {
	for _, seed := range []string{
		"a 1\n",
		"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
		"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n",
		"# TYPE a counter\na_total{x=\"\\\"\"} 1 1\n# EOF\n",
		"a{x=\"1\"} 1\na{x=\"1\"} 2\n",
		"a{",
		"\x00\xff",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, om bool) {
		format := expfmt.FmtText
		if om {
			format = expfmt.FmtOpenMetrics_1_0_0
		}
		fams, err := parseApplication(body, format)
		if err != nil {
			return
		}
		var buf bytes.Buffer
		require.NoError(t, encodeFamilies(&buf, fams, false))
		p := expfmt.NewTextParser(model.LegacyValidation)
		_, err = p.TextToMetricFamilies(&buf)
		require.NoError(t, err, "what is accepted re-encodes to valid text")

		buf.Reset()
		if encodeFamilies(&buf, fams, true) != nil {
			return // left out of OpenMetrics answers
		}
		buf.WriteString("# EOF\n")
		dec := expfmt.NewDecoder(&buf, expfmt.FmtOpenMetrics_1_0_0)
		for {
			var mf dto.MetricFamily
			err := dec.Decode(&mf)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "what is encoded as OpenMetrics decodes")
		}
	})
}

func TestQueryFilterCache(t *testing.T) {
	t.Parallel()
	var c queryFilters
	first, err := c.compile(`^cluster\.`)
	require.NoError(t, err)
	again, err := c.compile(`^cluster\.`)
	require.NoError(t, err)
	require.Same(t, first, again, "a repeated expression is compiled once")

	_, err = c.compile("(")
	require.Error(t, err)
	for i := range 3 * maxCachedQueryFilters {
		_, err := c.compile(fmt.Sprintf("x%d", i))
		require.NoError(t, err)
	}
	list := *c.list.Load()
	require.Len(t, list, maxCachedQueryFilters, "bounded")
	require.Equal(t, fmt.Sprintf("x%d", 3*maxCachedQueryFilters-1), list[0].String(), "most recent first")
	for _, re := range list {
		require.NotEqual(t, "(", re.String())
	}
}
