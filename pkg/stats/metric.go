package stats

import (
	"math"
	"sync/atomic"
	"time"
)

// Counter is a monotonically increasing count. It counts as used once its
// value is non-zero. The zero value is ready to use, but only a Counter
// obtained from a Scope is rendered.
type Counter struct {
	v atomic.Uint64
}

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is a value that goes up and down. It counts as used once any of its
// setters was called, even if the value is back to zero (a request that came
// and went still makes upstream_rq_active "used"). The zero value is ready to
// use, but only a Gauge obtained from a Scope is rendered.
type Gauge struct {
	v    atomic.Int64
	used atomic.Bool
}

// markUsed sets the used flag once; it reads before writing so that the hot
// path does not keep dirtying the cache line with redundant stores.
func (g *Gauge) markUsed() {
	if !g.used.Load() {
		g.used.Store(true)
	}
}

// Set sets the value.
func (g *Gauge) Set(v int64) {
	g.markUsed()
	g.v.Store(v)
}

// Add adds d (which may be negative).
func (g *Gauge) Add(d int64) {
	g.markUsed()
	g.v.Add(d)
}

// Sub subtracts d.
func (g *Gauge) Sub(d int64) {
	g.markUsed()
	g.v.Add(-d)
}

// Inc adds one.
func (g *Gauge) Inc() { g.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.Add(-1) }

// Value returns the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Used reports whether the gauge was ever changed.
func (g *Gauge) Used() bool { return g.used.Load() }

// NumBuckets is the number of histogram buckets including the +Inf bucket.
const NumBuckets = 20

// bucketBoundsNs are Envoy's default histogram bucket upper bounds (ms:
// 0.5 1 5 10 25 50 100 250 500 1000 2500 5000 10000 30000 60000 300000
// 600000 1800000 3600000) in nanoseconds, so that an observation is placed
// with integer comparisons only. The last bucket (+Inf) is implicit.
var bucketBoundsNs = [NumBuckets - 1]int64{
	500_000,
	1_000_000,
	5_000_000,
	10_000_000,
	25_000_000,
	50_000_000,
	100_000_000,
	250_000_000,
	500_000_000,
	1_000_000_000,
	2_500_000_000,
	5_000_000_000,
	10_000_000_000,
	30_000_000_000,
	60_000_000_000,
	300_000_000_000,
	600_000_000_000,
	1_800_000_000_000,
	3_600_000_000_000,
}

// BucketBounds returns the finite bucket upper bounds in milliseconds; the
// last bucket, +Inf, is implicit.
func BucketBounds() []float64 {
	out := make([]float64, len(bucketBoundsNs))
	for i, ns := range bucketBoundsNs {
		out[i] = float64(ns) / 1e6
	}
	return out
}

// Histogram counts durations into Envoy's fixed millisecond buckets. An
// observation exactly on a bound goes into that bound's bucket (le is
// inclusive). The sum is kept in integer microseconds (no float drift; it
// overflows only after ~580,000 years of summed latency). The count is the
// sum of the buckets, so it always equals the +Inf bucket. The histogram
// counts as used once anything was observed.
type Histogram struct {
	buckets [NumBuckets]atomic.Uint64 // per bucket, not cumulative
	sumUs   atomic.Uint64
}

// bucketIndex returns the index of the first bucket whose bound is >= ns.
func bucketIndex(ns int64) int {
	lo, hi := 0, len(bucketBoundsNs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ns <= bucketBoundsNs[m] {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// Observe records a duration. Negative durations count as zero.
func (h *Histogram) Observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.buckets[bucketIndex(int64(d))].Add(1)
	h.sumUs.Add(uint64((d + 500) / 1000)) // round to the nearest µs
}

// ObserveMs records a value in milliseconds (for callers that measured in
// ms already). NaN and negative values count as zero; values beyond the
// range of time.Duration are clamped to it.
func (h *Histogram) ObserveMs(ms float64) {
	const maxMs = float64(math.MaxInt64) / float64(time.Millisecond)
	switch {
	case !(ms > 0): // also NaN
		ms = 0
	case ms >= maxMs:
		h.Observe(time.Duration(math.MaxInt64))
		return
	}
	h.Observe(time.Duration(ms * float64(time.Millisecond)))
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// Sum returns the sum of all observations (µs precision).
func (h *Histogram) Sum() time.Duration {
	return time.Duration(h.sumUs.Load()) * time.Microsecond
}

// load reads the buckets as cumulative counts into cum and returns the total
// count (= cum[NumBuckets-1]) and the sum in µs.
func (h *Histogram) load(cum *[NumBuckets]uint64) (count, sumUs uint64) {
	var acc uint64
	for i := range h.buckets {
		acc += h.buckets[i].Load()
		cum[i] = acc
	}
	return acc, h.sumUs.Load()
}
