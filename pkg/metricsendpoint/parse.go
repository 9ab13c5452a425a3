package metricsendpoint

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseApplication parses and validates an application's answer. format is
// the answer's Content-Type as expfmt understands it: OpenMetrics is decoded
// as such, anything unknown as the text format (what the application was
// asked for), protobuf is refused. The families come back sorted by name,
// their label pairs sorted by name, histogram buckets by bound and summary
// quantiles by rank.
func parseApplication(body []byte, format expfmt.Format) ([]*dto.MetricFamily, error) {
	var fams []*dto.MetricFamily
	switch format.FormatType() {
	case expfmt.TypeOpenMetrics:
		dec := expfmt.NewDecoder(bytes.NewReader(body), format)
		for {
			mf := &dto.MetricFamily{}
			err := dec.Decode(mf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("OpenMetrics: %w", err)
			}
			fams = append(fams, mf)
		}
	case expfmt.TypeProtoDelim, expfmt.TypeProtoText, expfmt.TypeProtoCompact:
		return nil, fmt.Errorf("unsupported content type %q (asked for %s)", string(format), appAccept)
	default:
		p := expfmt.NewTextParser(model.LegacyValidation)
		m, err := p.TextToMetricFamilies(bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		fams = slices.Collect(maps.Values(m))
	}
	fams = slices.DeleteFunc(fams, func(mf *dto.MetricFamily) bool { return len(mf.GetMetric()) == 0 })
	slices.SortFunc(fams, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	if err := validateFamilies(fams); err != nil {
		return nil, err
	}
	return fams, nil
}

// validateFamilies checks what the parsers let through but a scraper (or
// the encoders) would choke on. fams must be sorted by name.
func validateFamilies(fams []*dto.MetricFamily) error {
	var (
		sig  xxhash.Digest
		seen = make(map[uint64]struct{})
		sep  = []byte{0xff}
	)
	for i, mf := range fams {
		name := mf.GetName()
		if !model.LegacyValidation.IsValidMetricName(name) {
			return fmt.Errorf("invalid metric name %q", name)
		}
		if i > 0 && fams[i-1].GetName() == name {
			return fmt.Errorf("family %s appears twice", name)
		}
		if mf.Help != nil && !utf8.ValidString(*mf.Help) {
			help := strings.ToValidUTF8(*mf.Help, "\uFFFD")
			mf.Help = &help
		}
		typ := mf.GetType()
		clear(seen)
		for _, m := range mf.GetMetric() {
			if m == nil {
				return fmt.Errorf("%s: empty metric", name)
			}
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			sig.Reset()
			for j, lp := range m.Label {
				ln, lv := lp.GetName(), lp.GetValue()
				if !model.LegacyValidation.IsValidLabelName(ln) || ln == model.MetricNameLabel {
					return fmt.Errorf("%s: invalid label name %q", name, ln)
				}
				if j > 0 && m.Label[j-1].GetName() == ln {
					return fmt.Errorf("%s: duplicate label %q", name, ln)
				}
				if !utf8.ValidString(lv) {
					return fmt.Errorf("%s: label %s: invalid UTF-8 value", name, ln)
				}
				if ln == model.BucketLabel && (typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_GAUGE_HISTOGRAM) ||
					ln == model.QuantileLabel && typ == dto.MetricType_SUMMARY {
					return fmt.Errorf("%s: reserved label %q", name, ln)
				}
				_, _ = sig.WriteString(ln)
				_, _ = sig.Write(sep)
				_, _ = sig.WriteString(lv)
				_, _ = sig.Write(sep)
			}
			k := sig.Sum64()
			if _, dup := seen[k]; dup {
				return fmt.Errorf("%s: duplicate series %s", name, labelString(m.Label))
			}
			seen[k] = struct{}{}
			if err := validateValue(typ, m); err != nil {
				return fmt.Errorf("%s%s: %w", name, labelString(m.Label), err)
			}
		}
	}
	return nil
}

func labelString(lps []*dto.LabelPair) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, lp := range lps {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", lp.GetName(), lp.GetValue())
	}
	b.WriteByte('}')
	return b.String()
}

// validateValue checks one metric's value(s) for its family type; rules
// that only OpenMetrics imposes are in checkOpenMetrics.
func validateValue(typ dto.MetricType, m *dto.Metric) error {
	switch typ {
	case dto.MetricType_COUNTER:
		if m.GetCounter() == nil {
			return errors.New("counter without a value")
		}
		if v := m.GetCounter().GetValue(); math.IsNaN(v) || v < 0 {
			return fmt.Errorf("counter value %v is negative or NaN", v)
		}
	case dto.MetricType_GAUGE:
		if m.GetGauge() == nil {
			return errors.New("gauge without a value")
		}
	case dto.MetricType_UNTYPED:
		if m.GetUntyped() == nil {
			return errors.New("untyped metric without a value")
		}
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		if s == nil {
			return errors.New("summary without a value")
		}
		slices.SortStableFunc(s.Quantile, func(a, b *dto.Quantile) int { return cmp.Compare(a.GetQuantile(), b.GetQuantile()) })
		for i, q := range s.Quantile {
			if r := q.GetQuantile(); !(r >= 0 && r <= 1) {
				return fmt.Errorf("quantile %v outside [0, 1]", r)
			}
			if i > 0 && s.Quantile[i-1].GetQuantile() == q.GetQuantile() {
				return fmt.Errorf("quantile %v appears twice", q.GetQuantile())
			}
		}
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		if h == nil {
			return errors.New("histogram without a value")
		}
		if h.Schema != nil || h.ZeroThreshold != nil || len(h.PositiveSpan)+len(h.NegativeSpan) > 0 {
			return errors.New("native histograms are not supported")
		}
		slices.SortStableFunc(h.Bucket, func(a, b *dto.Bucket) int { return cmp.Compare(a.GetUpperBound(), b.GetUpperBound()) })
		prev := 0.0
		for i, b := range h.Bucket {
			ub := b.GetUpperBound()
			if math.IsNaN(ub) {
				return errors.New("bucket bound NaN")
			}
			if i > 0 && h.Bucket[i-1].GetUpperBound() == ub {
				return fmt.Errorf("bucket le=%v appears twice", ub)
			}
			c := bucketCount(b)
			if math.IsNaN(c) || c < prev {
				return fmt.Errorf("bucket le=%v: count %v below the previous bucket's %v", ub, c, prev)
			}
			prev = c
			if math.IsInf(ub, +1) && c != histogramCount(h) {
				return fmt.Errorf("+Inf bucket count %v differs from the count %v", c, histogramCount(h))
			}
		}
		if c := histogramCount(h); math.IsNaN(c) || c < prev {
			return fmt.Errorf("count %v below the highest bucket's %v", c, prev)
		}
	default:
		return fmt.Errorf("unsupported metric type %s", typ)
	}
	return nil
}

func bucketCount(b *dto.Bucket) float64 {
	if v := b.GetCumulativeCountFloat(); v != 0 {
		return v
	}
	return float64(b.GetCumulativeCount())
}

func histogramCount(h *dto.Histogram) float64 {
	if v := h.GetSampleCountFloat(); v != 0 {
		return v
	}
	return float64(h.GetSampleCount())
}

// checkOpenMetrics checks the rules that OpenMetrics 1.0 adds to the text
// format's: integer histogram counts, non-negative histogram and summary
// sums, non-negative quantile values.
func checkOpenMetrics(mf *dto.MetricFamily) error {
	for _, m := range mf.GetMetric() {
		switch mf.GetType() {
		case dto.MetricType_SUMMARY:
			s := m.GetSummary()
			if v := s.GetSampleSum(); math.IsNaN(v) || v < 0 {
				return fmt.Errorf("%s: summary sum %v is negative or NaN", mf.GetName(), v)
			}
			for _, q := range s.GetQuantile() {
				if v := q.GetValue(); v < 0 {
					return fmt.Errorf("%s: quantile value %v is negative", mf.GetName(), v)
				}
			}
		case dto.MetricType_HISTOGRAM:
			h := m.GetHistogram()
			if v := h.GetSampleSum(); math.IsNaN(v) || v < 0 {
				return fmt.Errorf("%s: histogram sum %v is negative or NaN", mf.GetName(), v)
			}
			if h.GetSampleCountFloat() != 0 {
				return fmt.Errorf("%s: float histogram counts", mf.GetName())
			}
			for _, b := range h.GetBucket() {
				if b.GetCumulativeCountFloat() != 0 {
					return fmt.Errorf("%s: float histogram counts", mf.GetName())
				}
			}
		}
	}
	return nil
}

// reservedNames appends to dst every name that a family occupies in the
// text format or OpenMetrics: its own, a counter's OpenMetrics family name
// (without _total), and the sample names of histograms and summaries.
func reservedNames(dst []string, name string, typ dto.MetricType) []string {
	dst = append(dst, name)
	switch typ {
	case dto.MetricType_COUNTER:
		if base, ok := strings.CutSuffix(name, "_total"); ok && base != "" {
			dst = append(dst, base)
		}
	case dto.MetricType_SUMMARY:
		dst = append(dst, name+"_sum", name+"_count")
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		dst = append(dst, name+"_bucket", name+"_sum", name+"_count")
	}
	return dst
}

// nameSet maps an occupied name to its owner (an application's name; ""
// for the proxy).
type nameSet map[string]string

// owner returns the owner of the first of names in the set.
func (s nameSet) owner(names []string) (string, bool) {
	for _, n := range names {
		if o, ok := s[n]; ok {
			return o, true
		}
	}
	return "", false
}

func (s nameSet) add(names []string, owner string) {
	for _, n := range names {
		s[n] = owner
	}
}
