package meshgraph

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	// 100 observations: 10 ≤ 1 ms, 50 in (1, 5], 30 in (5, 10], 10 above 10.
	h := Histogram{{1, 10}, {5, 60}, {10, 90}, {inf, 100}}
	for _, tc := range []struct {
		name string
		h    Histogram
		q    float64
		want float64
		ok   bool
	}{
		{"in the first bucket, from 0", h, 0.05, 0.5, true},
		{"interpolated", h, 0.5, 1 + 4*(50-10)/50.0, true},
		{"upper bucket", h, 0.75, 5 + 5*(75-60)/30.0, true},
		{"in +Inf: the largest finite bound", h, 0.99, 10, true},
		{"exactly at a bound", h, 0.6, 5, true},
		{"no observations", Histogram{{1, 0}, {inf, 0}}, 0.5, 0, false},
		{"no +Inf bucket", Histogram{{1, 5}, {5, 10}}, 0.5, 0, false},
		{"empty", nil, 0.5, 0, false},
		// Sums of several series can dip by rounding: kept monotonic.
		{"non-monotonic", Histogram{{1, 10}, {5, 9.99}, {10, 20}, {inf, 20}}, 0.5, 1, true},
		{"non-monotonic, above the dip", Histogram{{1, 10}, {5, 9.99}, {10, 20}, {inf, 20}}, 0.75, 5 + 5*(15-10)/10.0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.h.Quantile(tc.q)
			require.Equal(t, tc.ok, ok)
			require.InDelta(t, tc.want, got, 1e-9)
		})
	}
}

func TestHistogramMerge(t *testing.T) {
	inf := math.Inf(1)
	a := Histogram{{1, 1}, {5, 3}, {inf, 4}}
	b := Histogram{{1, 2}, {5, 2}, {inf, 6}}
	require.Equal(t, Histogram{{1, 3}, {5, 5}, {inf, 10}}, a.merge(b))
	require.Equal(t, a, a.merge(nil))
	require.Equal(t, a, Histogram(nil).merge(a))
	// The merged histogram's median is that of all 10 observations.
	q, ok := a.merge(b).Quantile(0.5)
	require.True(t, ok)
	require.InDelta(t, 5, q, 1e-9)
}
