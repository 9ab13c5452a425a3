package stats

import (
	"io"
	"math"
	"regexp"
	"strconv"
	"sync"
)

// Format is an exposition format.
type Format uint8

const (
	// FormatPrometheus is the Prometheus text format 0.0.4.
	FormatPrometheus Format = iota
	// FormatOpenMetrics is OpenMetrics 1.0 text.
	FormatOpenMetrics
	// FormatEnvoy is Envoy's /stats text form (name: value lines).
	FormatEnvoy
)

// Content types of the formats, for the HTTP Content-Type header.
const (
	ContentTypePrometheus  = "text/plain; version=0.0.4; charset=utf-8"
	ContentTypeOpenMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	ContentTypeEnvoy       = "text/plain; charset=utf-8"
)

// ContentType returns the format's HTTP content type.
func (f Format) ContentType() string {
	switch f {
	case FormatOpenMetrics:
		return ContentTypeOpenMetrics
	case FormatEnvoy:
		return ContentTypeEnvoy
	}
	return ContentTypePrometheus
}

// String returns the format's name.
func (f Format) String() string {
	switch f {
	case FormatPrometheus:
		return "prometheus"
	case FormatOpenMetrics:
		return "openmetrics"
	case FormatEnvoy:
		return "envoy"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// RenderOptions select what an encoder writes.
type RenderOptions struct {
	// Filter, if set, keeps only statistics whose Envoy dotted name it
	// matches (unanchored, as Envoy's /stats?filter=). Its match results
	// are cached per expression and registration generation, so a fixed
	// filter costs close to nothing after the first scrape.
	Filter *regexp.Regexp
	// AlsoFilter, if set, must match as well: a configured filter combined
	// with a scrape's own. It is cached the same way.
	AlsoFilter *regexp.Regexp
	// UsedOnly keeps only statistics that changed at least once.
	UsedOnly bool
}

const (
	flushAt    = 32 << 10 // write to the io.Writer whenever this much is buffered
	initialBuf = 64 << 10
	maxPooled  = 1 << 20 // do not keep buffers that grew beyond this
)

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, initialBuf)
	return &b
}}

// Write renders the published statistics in format f to w, streaming
// through a pooled buffer. It takes no lock that registration or recording
// takes, and allocates nothing once warmed up. It returns the first write
// error.
func (s *Store) Write(w io.Writer, f Format, o RenderOptions) error {
	bp := bufPool.Get().(*[]byte)
	r := renderer{w: w, b: (*bp)[:0]}
	r.render(s.snap.Load(), f, o)
	r.flush()
	if cap(r.b) <= maxPooled {
		*bp = r.b[:0]
		bufPool.Put(bp)
	}
	return r.err
}

// WritePrometheus is Write with FormatPrometheus.
func (s *Store) WritePrometheus(w io.Writer, o RenderOptions) error {
	return s.Write(w, FormatPrometheus, o)
}

// WriteOpenMetrics is Write with FormatOpenMetrics.
func (s *Store) WriteOpenMetrics(w io.Writer, o RenderOptions) error {
	return s.Write(w, FormatOpenMetrics, o)
}

// WriteEnvoy is Write with FormatEnvoy.
func (s *Store) WriteEnvoy(w io.Writer, o RenderOptions) error {
	return s.Write(w, FormatEnvoy, o)
}

// Append renders like Write but appends everything to dst and returns the
// extended buffer (for callers that keep their own buffer, e.g. to compress
// or to merge with other output).
func (s *Store) Append(dst []byte, f Format, o RenderOptions) []byte {
	r := renderer{b: dst}
	r.render(s.snap.Load(), f, o)
	return r.b
}

// renderer accumulates output in b and, when w is set, flushes it to w.
type renderer struct {
	w   io.Writer
	b   []byte
	err error
}

func (r *renderer) maybeFlush() {
	if r.w != nil && len(r.b) >= flushAt {
		r.flush()
	}
}

func (r *renderer) flush() {
	if r.w == nil || len(r.b) == 0 || r.err != nil {
		return
	}
	_, r.err = r.w.Write(r.b)
	r.b = r.b[:0]
}

func (r *renderer) render(sn *snapshot, f Format, o RenderOptions) {
	var fe filters
	if o.Filter != nil {
		fe.a = sn.filter(o.Filter)
	}
	if o.AlsoFilter != nil && (o.Filter == nil || o.AlsoFilter.String() != o.Filter.String()) {
		fe.b = sn.filter(o.AlsoFilter)
	}
	switch f {
	case FormatEnvoy:
		r.envoy(sn, fe, o.UsedOnly)
	case FormatOpenMetrics:
		r.prometheus(sn, fe, o.UsedOnly, true)
		r.b = append(r.b, "# EOF\n"...)
	default:
		r.prometheus(sn, fe, o.UsedOnly, false)
	}
}

// leSuffix[i] is the rest of bucket i's line up to the value, Envoy's
// bound spelling (1800000, not 1.8e+06).
var leSuffix = func() (out [NumBuckets]string) {
	for i, ns := range bucketBoundsNs {
		out[i] = `le="` + strconv.FormatFloat(float64(ns)/1e6, 'f', -1, 64) + `"} `
	}
	out[NumBuckets-1] = `le="+Inf"} `
	return out
}()

// prometheus writes the text format 0.0.4 or, with om, the OpenMetrics 1.0
// body (the headers differ; sample lines are identical by design).
func (r *renderer) prometheus(sn *snapshot, fe filters, usedOnly, om bool) {
	var (
		cur *family
		cum [NumBuckets]uint64
	)
	for i, st := range sn.series {
		if r.err != nil {
			return
		}
		if !fe.keep(sn.nameIdx[i]) {
			continue
		}
		b := r.b
		switch st.kind {
		case kindCounter:
			v := st.counter.Value()
			if usedOnly && v == 0 {
				continue
			}
			b = appendHeader(b, &cur, st.fam, om)
			b = st.appendSeries(b)
			b = append(b, ' ')
			b = strconv.AppendUint(b, v, 10)
			b = append(b, '\n')
		case kindGauge:
			if usedOnly && !st.gauge.Used() {
				continue
			}
			b = appendHeader(b, &cur, st.fam, om)
			b = st.appendSeries(b)
			b = append(b, ' ')
			b = strconv.AppendInt(b, st.gauge.Value(), 10)
			b = append(b, '\n')
		case kindGaugeFunc:
			b = appendHeader(b, &cur, st.fam, om)
			b = st.appendSeries(b)
			b = append(b, ' ')
			b = strconv.AppendInt(b, st.fn(), 10)
			b = append(b, '\n')
		case kindHistogram:
			count, sumUs := st.hist.load(&cum)
			if usedOnly && count == 0 {
				continue
			}
			b = appendHeader(b, &cur, st.fam, om)
			for j := range cum {
				b = append(b, st.hist.bucketPrefix...)
				b = append(b, leSuffix[j]...)
				b = strconv.AppendUint(b, cum[j], 10)
				b = append(b, '\n')
			}
			b = append(b, st.hist.sumPrefix...)
			b = append(b, ' ')
			b = appendMicrosAsMs(b, sumUs)
			b = append(b, '\n')
			b = append(b, st.hist.countPrefix...)
			b = append(b, ' ')
			b = strconv.AppendUint(b, count, 10)
			b = append(b, '\n')
		}
		r.b = b
		r.maybeFlush()
	}
}

// appendHeader writes the family's header lines when fam starts; a family
// whose series are all filtered out gets no header.
func appendHeader(b []byte, cur **family, fam *family, om bool) []byte {
	if *cur == fam {
		return b
	}
	*cur = fam
	if om {
		return append(b, fam.omHeader...)
	}
	return append(b, fam.textHeader...)
}

// appendMicrosAsMs writes µs as an exact decimal number of milliseconds.
func appendMicrosAsMs(b []byte, us uint64) []byte {
	b = strconv.AppendUint(b, us/1000, 10)
	f := us % 1000
	if f == 0 {
		return b
	}
	b = append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
	for b[len(b)-1] == '0' {
		b = b[:len(b)-1]
	}
	return b
}

// envoyQuantiles are the quantiles Envoy prints for a histogram, with their
// labels.
var envoyQuantiles = [...]struct {
	label string
	q     float64
}{
	{"P0", 0}, {"P25", 0.25}, {"P50", 0.5}, {"P75", 0.75}, {"P90", 0.9},
	{"P95", 0.95}, {"P99", 0.99}, {"P99.5", 0.995}, {"P99.9", 0.999}, {"P100", 1},
}

// envoy writes Envoy's /stats text form: counters and gauges sorted by
// name, then histograms sorted by name (Envoy prints them in that order,
// histograms last).
func (r *renderer) envoy(sn *snapshot, fe filters, usedOnly bool) {
	var cum [NumBuckets]uint64
	for pass := 0; pass < 2; pass++ {
		histograms := pass == 1
		for i, st := range sn.byName {
			if r.err != nil {
				return
			}
			if (st.kind == kindHistogram) != histograms {
				continue
			}
			if !fe.keep(int32(i)) {
				continue
			}
			b := r.b
			switch st.kind {
			case kindCounter:
				v := st.counter.Value()
				if usedOnly && v == 0 {
					continue
				}
				b = append(b, st.name...)
				b = append(b, ": "...)
				b = strconv.AppendUint(b, v, 10)
			case kindGauge:
				if usedOnly && !st.gauge.Used() {
					continue
				}
				b = append(b, st.name...)
				b = append(b, ": "...)
				b = strconv.AppendInt(b, st.gauge.Value(), 10)
			case kindGaugeFunc:
				b = append(b, st.name...)
				b = append(b, ": "...)
				b = strconv.AppendInt(b, st.fn(), 10)
			case kindHistogram:
				count, _ := st.hist.load(&cum)
				if usedOnly && count == 0 {
					continue
				}
				b = append(b, st.name...)
				b = append(b, ": "...)
				if count == 0 {
					b = append(b, "No recorded values"...)
					break
				}
				for j, eq := range envoyQuantiles {
					if j > 0 {
						b = append(b, ' ')
					}
					b = append(b, eq.label...)
					b = append(b, "(nan,"...)
					v := math.Round(bucketQuantile(&cum, eq.q)*1000) / 1000
					b = strconv.AppendFloat(b, v, 'f', -1, 64)
					b = append(b, ')')
				}
			}
			r.b = append(b, '\n')
			r.maybeFlush()
		}
	}
}

// bucketQuantile estimates quantile q (0..1) in ms from cumulative bucket
// counts by linear interpolation inside the bucket that holds the rank, as
// Prometheus' histogram_quantile does. The lowest bucket starts at 0; a rank
// in the +Inf bucket yields the highest finite bound. cum must not be all
// zero.
func bucketQuantile(cum *[NumBuckets]uint64, q float64) float64 {
	count := cum[NumBuckets-1]
	rank := q * float64(count)
	var prev uint64
	for i, c := range cum {
		if c > 0 && float64(c) >= rank {
			if i == NumBuckets-1 {
				return float64(bucketBoundsNs[NumBuckets-2]) / 1e6
			}
			lo := 0.0
			if i > 0 {
				lo = float64(bucketBoundsNs[i-1]) / 1e6
			}
			hi := float64(bucketBoundsNs[i]) / 1e6
			return lo + (hi-lo)*(rank-float64(prev))/float64(c-prev)
		}
		prev = c
	}
	return math.NaN()
}
