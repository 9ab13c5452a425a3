package stats_test

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/stats"
)

// bucketOf observes d into a fresh, registered histogram and returns the
// le label of the first bucket that counted it.
func bucketOf(t *testing.T, observe func(h *stats.Histogram)) string {
	t.Helper()
	s := stats.NewStore()
	sc := s.NewScope()
	observe(sc.Histogram(stats.Opts{Name: "h", Family: "h"}))
	sc.Publish()
	for _, line := range strings.Split(string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{})), "\n") {
		if strings.HasPrefix(line, "h_bucket{") && strings.HasSuffix(line, "} 1") {
			le := strings.TrimPrefix(line, `h_bucket{le="`)
			return le[:strings.IndexByte(le, '"')]
		}
	}
	t.Fatal("no bucket counted the observation")
	return ""
}

func TestHistogramBucketBoundaries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    time.Duration
		le   string
	}{
		{name: "zero", d: 0, le: "0.5"},
		{name: "negative counts as zero", d: -time.Second, le: "0.5"},
		{name: "exactly 0.5ms is inclusive", d: 500 * time.Microsecond, le: "0.5"},
		{name: "just above 0.5ms", d: 500*time.Microsecond + 1, le: "1"},
		{name: "exactly 1ms", d: time.Millisecond, le: "1"},
		{name: "exactly 10ms", d: 10 * time.Millisecond, le: "10"},
		{name: "just above 10ms", d: 10*time.Millisecond + 1, le: "25"},
		{name: "exactly 1s", d: time.Second, le: "1000"},
		{name: "exactly 30 min", d: 30 * time.Minute, le: "1800000"},
		{name: "exactly 1h", d: time.Hour, le: "3600000"},
		{name: "above 1h", d: time.Hour + 1, le: "+Inf"},
		{name: "max duration", d: math.MaxInt64, le: "+Inf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.le, bucketOf(t, func(h *stats.Histogram) { h.Observe(tc.d) }))
		})
	}
}

func TestHistogramObserveMs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ms   float64
		le   string
	}{
		{name: "exactly 0.5", ms: 0.5, le: "0.5"},
		{name: "above 0.5", ms: 0.5001, le: "1"},
		{name: "exactly 250", ms: 250, le: "250"},
		{name: "NaN counts as zero", ms: math.NaN(), le: "0.5"},
		{name: "negative counts as zero", ms: -3, le: "0.5"},
		{name: "+Inf", ms: math.Inf(1), le: "+Inf"},
		{name: "huge", ms: 1e300, le: "+Inf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.le, bucketOf(t, func(h *stats.Histogram) { h.ObserveMs(tc.ms) }))
		})
	}
}

func TestHistogramSumAndCount(t *testing.T) {
	t.Parallel()
	s := stats.NewStore()
	sc := s.NewScope()
	h := sc.Histogram(stats.Opts{Name: "h", Family: "h", Labels: []stats.Label{{Name: "c", Value: "x"}}})
	sc.Publish()
	for range 3 {
		h.Observe(1500 * time.Microsecond)
	}
	h.Observe(1234567 * time.Nanosecond) // rounds to 1235 µs
	h.ObserveMs(0.25)
	require.Equal(t, uint64(5), h.Count())
	require.Equal(t, 5985*time.Microsecond, h.Sum())

	out := string(render(t, s, stats.FormatPrometheus, stats.RenderOptions{}))
	require.Contains(t, out, `h_bucket{c="x",le="0.5"} 1`+"\n")
	require.Contains(t, out, `h_bucket{c="x",le="1"} 1`+"\n")
	require.Contains(t, out, `h_bucket{c="x",le="5"} 5`+"\n")
	require.Contains(t, out, `h_bucket{c="x",le="+Inf"} 5`+"\n")
	require.Contains(t, out, `h_sum{c="x"} 5.985`+"\n")
	require.Contains(t, out, `h_count{c="x"} 5`+"\n")

	// Cumulative buckets never decrease.
	mfs := parseText(t, []byte(out))
	var last uint64
	for _, b := range mfs["h"].GetMetric()[0].GetHistogram().GetBucket() {
		require.GreaterOrEqual(t, b.GetCumulativeCount(), last)
		last = b.GetCumulativeCount()
	}
}

func TestBucketBounds(t *testing.T) {
	t.Parallel()
	require.Equal(t, []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
		300000, 600000, 1800000, 3600000}, stats.BucketBounds())
	require.Len(t, stats.BucketBounds(), stats.NumBuckets-1)
}

func TestEnvoyHistogramQuantiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		observe []time.Duration
		want    string
	}{
		{
			name: "no values",
			want: "h: No recorded values\n",
		},
		{
			name:    "all in one bucket interpolate linearly",
			observe: []time.Duration{6 * time.Millisecond, 7 * time.Millisecond, 8 * time.Millisecond, 9 * time.Millisecond},
			want:    "h: P0(nan,5) P25(nan,6.25) P50(nan,7.5) P75(nan,8.75) P90(nan,9.5) P95(nan,9.75) P99(nan,9.95) P99.5(nan,9.975) P99.9(nan,9.995) P100(nan,10)\n",
		},
		{
			name:    "two buckets",
			observe: []time.Duration{100 * time.Microsecond, 2 * time.Second},
			want:    "h: P0(nan,0) P25(nan,0.25) P50(nan,0.5) P75(nan,1750) P90(nan,2200) P95(nan,2350) P99(nan,2470) P99.5(nan,2485) P99.9(nan,2497) P100(nan,2500)\n",
		},
		{
			name:    "beyond the last bound reads as the last bound",
			observe: []time.Duration{2 * time.Hour},
			want:    "h: P0(nan,3600000) P25(nan,3600000) P50(nan,3600000) P75(nan,3600000) P90(nan,3600000) P95(nan,3600000) P99(nan,3600000) P99.5(nan,3600000) P99.9(nan,3600000) P100(nan,3600000)\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stats.NewStore()
			sc := s.NewScope()
			h := sc.Histogram(stats.Opts{Name: "h", Family: "h"})
			sc.Publish()
			for _, d := range tc.observe {
				h.Observe(d)
			}
			require.Equal(t, tc.want, string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{})))
		})
	}
}

func TestGaugeUsed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		op   func(g *stats.Gauge)
		want int64
	}{
		{name: "set to zero", op: func(g *stats.Gauge) { g.Set(0) }, want: 0},
		{name: "up and down", op: func(g *stats.Gauge) { g.Inc(); g.Dec() }, want: 0},
		{name: "add", op: func(g *stats.Gauge) { g.Add(5) }, want: 5},
		{name: "sub below zero", op: func(g *stats.Gauge) { g.Sub(2) }, want: -2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stats.NewStore()
			sc := s.NewScope()
			g := sc.Gauge(stats.Opts{Name: "g", Family: "g"})
			sc.Publish()
			require.False(t, g.Used())
			require.Empty(t, render(t, s, stats.FormatPrometheus, stats.RenderOptions{UsedOnly: true}))
			tc.op(g)
			require.True(t, g.Used())
			require.Equal(t, tc.want, g.Value())
			require.Equal(t, "g: "+strconv.FormatInt(tc.want, 10)+"\n",
				string(render(t, s, stats.FormatEnvoy, stats.RenderOptions{UsedOnly: true})))
		})
	}
}
