package stats_test

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Each ClusterStats renders 104 series (sample lines): 32 counters, 6 gauges
// and 3 histograms of 22 lines each.
var benchSizes = []struct {
	name     string
	clusters int
}{
	{name: "1k", clusters: 10},
	{name: "10k", clusters: 96},
	{name: "100k", clusters: 962},
}

// fillCluster gives every statistic of c a non-zero value, by reflection so
// that new fields are covered automatically.
func fillCluster(c *stats.ClusterStats, seed int) {
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		if !f.CanInterface() {
			continue
		}
		switch h := f.Interface().(type) {
		case *stats.Counter:
			h.Add(uint64(seed*31 + i))
		case [5]*stats.Counter:
			for j, c := range h {
				c.Add(uint64(seed + i + j))
			}
		case *stats.Gauge:
			h.Set(int64(seed%7 + i))
		case *stats.Histogram:
			h.Observe(time.Duration(seed%100) * time.Millisecond)
			h.Observe(1500 * time.Microsecond)
			h.Observe(3 * time.Second)
		}
	}
}

func benchStore(tb testing.TB, clusters int) *stats.Store {
	tb.Helper()
	s := stats.NewStore()
	for i := range clusters {
		fillCluster(stats.NewClusterStats(s, fmt.Sprintf("service_%04d", i)), i)
	}
	return s
}

// clientGolangFrom registers in a fresh client_golang registry exactly the
// series of our text output: one CounterVec/GaugeVec/HistogramVec per
// family, one child per series, values replayed.
func clientGolangFrom(tb testing.TB, text []byte) *prometheus.Registry {
	tb.Helper()
	reg := prometheus.NewRegistry()
	for name, mf := range parseText(tb, text) {
		var labelNames []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labelNames = append(labelNames, lp.GetName())
		}
		values := func(m *dto.Metric) []string {
			var out []string
			for _, lp := range m.GetLabel() {
				out = append(out, lp.GetValue())
			}
			return out
		}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: mf.GetHelp()}, labelNames)
			for _, m := range mf.GetMetric() {
				vec.WithLabelValues(values(m)...).Add(m.GetCounter().GetValue())
			}
			reg.MustRegister(vec)
		case dto.MetricType_GAUGE:
			vec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: mf.GetHelp()}, labelNames)
			for _, m := range mf.GetMetric() {
				vec.WithLabelValues(values(m)...).Set(m.GetGauge().GetValue())
			}
			reg.MustRegister(vec)
		case dto.MetricType_HISTOGRAM:
			vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: mf.GetHelp(),
				Buckets: stats.BucketBounds()}, labelNames)
			for _, m := range mf.GetMetric() {
				o := vec.WithLabelValues(values(m)...)
				var prev uint64
				for _, bk := range m.GetHistogram().GetBucket() {
					v := bk.GetUpperBound()
					if math.IsInf(v, 1) {
						v = 2 * stats.BucketBounds()[stats.NumBuckets-2]
					}
					for range bk.GetCumulativeCount() - prev {
						o.Observe(v)
					}
					prev = bk.GetCumulativeCount()
				}
			}
			reg.MustRegister(vec)
		default:
			tb.Fatalf("unexpected type %s", mf.GetType())
		}
	}
	return reg
}

func gatherText(reg *prometheus.Registry, w io.Writer) error {
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	enc := expfmt.NewEncoder(w, expfmt.FmtText)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return err
		}
	}
	return nil
}

func sampleLines(b []byte) int {
	n := 0
	for line := range bytes.Lines(b) {
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return n
}

// BenchmarkRenderPrometheus renders the same series with this package and
// with client_golang (Gather + expfmt text encoding), into io.Discard.
func BenchmarkRenderPrometheus(b *testing.B) {
	for _, size := range benchSizes {
		s := benchStore(b, size.clusters)
		text := render(b, s, stats.FormatPrometheus, stats.RenderOptions{})
		reg := clientGolangFrom(b, text)
		var cg bytes.Buffer
		if err := gatherText(reg, &cg); err != nil {
			b.Fatal(err)
		}
		if sampleLines(text) != sampleLines(cg.Bytes()) {
			b.Fatalf("series differ: stats %d, client_golang %d", sampleLines(text), sampleLines(cg.Bytes()))
		}
		series := float64(sampleLines(text))

		b.Run("series="+size.name+"/impl=stats", func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.WritePrometheus(io.Discard, stats.RenderOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(series, "series")
		})
		b.Run("series="+size.name+"/impl=stats_cached_filter", func(b *testing.B) {
			// Matches every cluster statistic: same output, plus the filter.
			o := stats.RenderOptions{Filter: mustRegexp(`^cluster\.`)}
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				if err := s.WritePrometheus(io.Discard, o); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(series, "series")
		})
		b.Run("series="+size.name+"/impl=client_golang", func(b *testing.B) {
			b.SetBytes(int64(cg.Len()))
			b.ReportAllocs()
			for b.Loop() {
				if err := gatherText(reg, io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(series, "series")
		})
	}
}

// BenchmarkRenderFormats compares the three encoders of this package, and
// the first (uncached) scrape with a new filter.
func BenchmarkRenderFormats(b *testing.B) {
	s := benchStore(b, 96) // ~10k series
	for _, f := range []stats.Format{stats.FormatPrometheus, stats.FormatOpenMetrics, stats.FormatEnvoy} {
		b.Run("format="+f.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Write(io.Discard, f, stats.RenderOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("format=prometheus/used_only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.WritePrometheus(io.Discard, stats.RenderOptions{UsedOnly: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("format=prometheus/filter_uncached", func(b *testing.B) {
		// A new generation before every scrape: the filter is matched
		// against every name each time (the cost the cache saves).
		re := mustRegexp(`^cluster\.service_00[0-4]`)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			stats.NewRBACStats(s, "gen").Release()
			b.StartTimer()
			if err := s.WritePrometheus(io.Discard, stats.RenderOptions{Filter: re}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("format=prometheus/filter_cached", func(b *testing.B) {
		re := mustRegexp(`^cluster\.service_00[0-4]`)
		b.ReportAllocs()
		for b.Loop() {
			if err := s.WritePrometheus(io.Discard, stats.RenderOptions{Filter: re}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRecord measures the data path.
func BenchmarkRecord(b *testing.B) {
	s := stats.NewStore()
	c := stats.NewClusterStats(s, "backend")
	h := stats.NewHTTPConnManagerStats(s, "inbound_8080")

	b.Run("ClusterStats.RequestDone", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			c.RequestDone(200+i%4*100, time.Duration(i&1023)*time.Millisecond, i&1 == 0)
		}
	})
	b.Run("ClusterStats.RequestDone/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				c.RequestDone(200, time.Duration(i&1023)*time.Millisecond, true)
			}
		})
	})
	b.Run("HTTPConnManagerStats.RequestDone", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			h.RequestDone(200, time.Duration(i&1023)*time.Millisecond)
		}
	})
	b.Run("Counter.Inc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.UpstreamRqTotal.Inc()
		}
	})
	b.Run("Gauge.Add", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.UpstreamRqActive.Add(1)
		}
	})
	b.Run("Histogram.Observe", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			c.UpstreamRqTime.Observe(time.Duration(i&1023) * time.Millisecond)
		}
	})
	b.Run("Histogram.ObserveMs", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			c.UpstreamRqTime.ObserveMs(float64(i & 1023))
		}
	})

	// client_golang for reference: a label lookup per call vs a pre-bound child.
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_total"}, []string{"envoy_cluster_name"})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "envoy_cluster_upstream_rq_time", Buckets: stats.BucketBounds()})
	b.Run("client_golang/CounterVec.WithLabelValues.Inc", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			vec.WithLabelValues("backend").Inc()
		}
	})
	b.Run("client_golang/Histogram.Observe", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			hist.Observe(float64(i & 1023))
		}
	})
}

// BenchmarkRegister measures the config path with 1000 clusters registered:
// adding and removing one cluster, and replacing 100 clusters one by one or
// in one Batch (reported per cluster).
func BenchmarkRegister(b *testing.B) {
	s := benchStore(b, 1000)
	b.Run("add+remove_one", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			stats.NewClusterStats(s, "churn").Release()
		}
	})
	names := make([]string, 100)
	for i := range names {
		names[i] = fmt.Sprintf("churn_%d", i)
	}
	churn := func() {
		cs := make([]*stats.ClusterStats, len(names))
		for i, n := range names {
			cs[i] = stats.NewClusterStats(s, n)
		}
		for _, c := range cs {
			c.Release()
		}
	}
	b.Run("add+remove_100/unbatched", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			churn()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(names)), "ns/cluster")
	})
	b.Run("add+remove_100/batched", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			cs := make([]*stats.ClusterStats, len(names))
			s.Batch(func() { // one config update adds 100 clusters
				for i, n := range names {
					cs[i] = stats.NewClusterStats(s, n)
				}
			})
			s.Batch(func() { // the next removes them
				for _, c := range cs {
					c.Release()
				}
			})
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(names)), "ns/cluster")
	})
}
