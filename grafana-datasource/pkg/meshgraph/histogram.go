package meshgraph

import (
	"math"
	"sort"
)

// Bucket is a cumulative histogram bucket: Count observations (per second)
// were at most UpperBound.
type Bucket struct {
	UpperBound float64
	Count      float64
}

// Histogram is a cumulative histogram, buckets sorted by upper bound, the
// last one +Inf when complete. The buckets of several callers sum bucket by
// bucket, so quantiles are computed after a node's callers are merged, as
// Prometheus' histogram_quantile over a sum would.
type Histogram []Bucket

// merge adds o to h bucket by bucket (by upper bound) into a new histogram.
func (h Histogram) merge(o Histogram) Histogram {
	if len(o) == 0 {
		return h
	}
	byBound := make(map[float64]float64, len(h)+len(o))
	for _, b := range h {
		byBound[b.UpperBound] += b.Count
	}
	for _, b := range o {
		byBound[b.UpperBound] += b.Count
	}
	out := make(Histogram, 0, len(byBound))
	for le, c := range byBound {
		out = append(out, Bucket{UpperBound: le, Count: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UpperBound < out[j].UpperBound })
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) as Prometheus'
// histogram_quantile does: linear interpolation inside the bucket the rank
// falls in (the first bucket starts at 0), the largest finite upper bound
// when it falls in the +Inf bucket. False without observations or without a
// +Inf bucket.
func (h Histogram) Quantile(q float64) (float64, bool) {
	if len(h) < 2 || !math.IsInf(h[len(h)-1].UpperBound, 1) {
		return 0, false
	}
	// Counts summed from several series may dip by rounding: keep them
	// monotonic, as Prometheus does.
	counts := make([]float64, len(h))
	for i, b := range h {
		counts[i] = b.Count
		if i > 0 && counts[i] < counts[i-1] {
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if total <= 0 || math.IsNaN(total) {
		return 0, false
	}
	rank := q * total
	i := sort.SearchFloat64s(counts, rank)
	if i == len(h)-1 {
		return h[len(h)-2].UpperBound, true
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = h[i-1].UpperBound, counts[i-1]
	} else if h[0].UpperBound <= 0 {
		return h[0].UpperBound, true
	}
	upper, in := h[i].UpperBound, counts[i]-below
	if in <= 0 {
		return upper, true
	}
	return lower + (upper-lower)*(rank-below)/in, true
}
