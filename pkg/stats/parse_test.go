package stats_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/stats"
)

// parseText parses Prometheus text format 0.0.4 with expfmt's parser.
func parseText(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	require.NoError(t, err)
	return mfs
}

// parseOpenMetrics parses OpenMetrics 1.0 with expfmt's (ABNF-validating)
// decoder and returns the families in order.
func parseOpenMetrics(t testing.TB, b []byte) []*dto.MetricFamily {
	t.Helper()
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.FmtOpenMetrics_1_0_0)
	var out []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		err := dec.Decode(mf)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, mf)
	}
}

// samples flattens families into "sample_name{sorted labels}" → value, the
// way a scraper stores them. (expfmt's OpenMetrics decoder names a counter
// family with its _total suffix, like the text parser does.)
func samples(mfs []*dto.MetricFamily) map[string]float64 {
	out := make(map[string]float64)
	key := func(name string, lps []*dto.LabelPair, extra ...string) string {
		ls := slices.Clone(extra)
		for _, lp := range lps {
			ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		slices.Sort(ls)
		return name + "{" + strings.Join(ls, ",") + "}"
	}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key(name, m.GetLabel())] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(name, m.GetLabel())] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[key(name, m.GetLabel())] = m.GetUntyped().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, bk := range h.GetBucket() {
					le := fmt.Sprintf("le=%q", model.FloatString(bk.GetUpperBound()).String())
					out[key(name+"_bucket", m.GetLabel(), le)] = float64(bk.GetCumulativeCount())
				}
				out[key(name+"_bucket", m.GetLabel(), `le="+Inf"`)] = float64(h.GetSampleCount())
				out[key(name+"_sum", m.GetLabel())] = h.GetSampleSum()
				out[key(name+"_count", m.GetLabel())] = float64(h.GetSampleCount())
			default:
				panic("unexpected type " + mf.GetType().String())
			}
		}
	}
	return out
}

func TestTextFormatParses(t *testing.T) {
	t.Parallel()
	s := representativeStore(t)
	mfs := parseText(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))

	rq := mfs["envoy_cluster_upstream_rq_total"]
	require.NotNil(t, rq)
	require.Equal(t, dto.MetricType_COUNTER, rq.GetType())
	require.Len(t, rq.GetMetric(), 2)
	require.Equal(t, "envoy_cluster_name", rq.GetMetric()[0].GetLabel()[0].GetName())
	require.Equal(t, "backend", rq.GetMetric()[0].GetLabel()[0].GetValue())
	require.InDelta(t, 5.0, rq.GetMetric()[0].GetCounter().GetValue(), 0)

	h := mfs["envoy_cluster_upstream_rq_time"]
	require.Equal(t, dto.MetricType_HISTOGRAM, h.GetType())
	hb := h.GetMetric()[0].GetHistogram()
	require.Equal(t, uint64(5), hb.GetSampleCount())
	require.InDelta(t, 7201513.7, hb.GetSampleSum(), 1e-6)
	require.Equal(t, stats.BucketBounds(), boundsOf(hb))

	esc := mfs["test_escape_total"]
	require.Equal(t, "a\"b\\c\nd", esc.GetMetric()[0].GetLabel()[0].GetValue())
	require.Equal(t, "Help with a backslash \\ and a \"quote\"\nand a second line.", esc.GetHelp())

	require.Equal(t, "inbound:10.0.0.1:8080", mfs["envoy_rbac_allowed"].GetMetric()[0].GetLabel()[0].GetValue())
}

func boundsOf(h *dto.Histogram) []float64 {
	var out []float64
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		out = append(out, b.GetUpperBound())
	}
	return out
}

func TestOpenMetricsParses(t *testing.T) {
	t.Parallel()
	s := representativeStore(t)
	om := render(t, s, stats.FormatOpenMetrics, stats.RenderOptions{})
	require.True(t, bytes.HasSuffix(om, []byte("\n# EOF\n")), "must end with # EOF")
	require.Equal(t, 1, bytes.Count(om, []byte("# EOF")))

	fams := parseOpenMetrics(t, om)
	types := make(map[string]dto.MetricType)
	for _, mf := range fams {
		types[mf.GetName()] = mf.GetType()
	}
	for _, tc := range []struct {
		name   string
		typeLn string // the descriptor line in our output
		family string // the family as expfmt reports it
		want   dto.MetricType
	}{
		{name: "_total counter is typed without its suffix", typeLn: "# TYPE envoy_cluster_upstream_rq counter",
			family: "envoy_cluster_upstream_rq_total", want: dto.MetricType_COUNTER},
		{name: "bytes_total counter", typeLn: "# TYPE envoy_cluster_upstream_cx_rx_bytes counter",
			family: "envoy_cluster_upstream_cx_rx_bytes_total", want: dto.MetricType_COUNTER},
		{name: "counter without _total is unknown", typeLn: "# TYPE envoy_cluster_upstream_rq_xx unknown",
			family: "envoy_cluster_upstream_rq_xx", want: dto.MetricType_UNTYPED},
		{name: "rbac counter is unknown", typeLn: "# TYPE envoy_rbac_allowed unknown",
			family: "envoy_rbac_allowed", want: dto.MetricType_UNTYPED},
		{name: "gauge", typeLn: "# TYPE envoy_cluster_upstream_rq_active gauge",
			family: "envoy_cluster_upstream_rq_active", want: dto.MetricType_GAUGE},
		{name: "gauge func", typeLn: "# TYPE envoy_server_uptime gauge",
			family: "envoy_server_uptime", want: dto.MetricType_GAUGE},
		{name: "histogram", typeLn: "# TYPE envoy_cluster_upstream_rq_time histogram",
			family: "envoy_cluster_upstream_rq_time", want: dto.MetricType_HISTOGRAM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, string(om), "\n"+tc.typeLn+"\n")
			got, ok := types[tc.family]
			require.True(t, ok, "family %s missing", tc.family)
			require.Equal(t, tc.want, got)
		})
	}

	// Same samples, same names, same values as the text format.
	text := parseText(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	var textFams []*dto.MetricFamily
	for _, mf := range text {
		textFams = append(textFams, mf)
	}
	require.Equal(t, samples(textFams), samples(fams))
}

func TestFilteredOutputStillParses(t *testing.T) {
	t.Parallel()
	s := representativeStore(t)
	for _, tc := range []struct {
		name string
		opts stats.RenderOptions
	}{
		{name: "used only", opts: stats.RenderOptions{UsedOnly: true}},
		{name: "filter", opts: stats.RenderOptions{Filter: mustRegexp(`backend|rbac`)}},
		{name: "filter matching nothing", opts: stats.RenderOptions{Filter: mustRegexp(`^nothing$`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parseText(t, render(t, s, stats.FormatPrometheus, tc.opts))
			parseOpenMetrics(t, render(t, s, stats.FormatOpenMetrics, tc.opts))
		})
	}
}
