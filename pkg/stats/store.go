package stats

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Label is one Prometheus label pair.
type Label struct {
	Name, Value string
}

// Opts describes one statistic.
type Opts struct {
	// Name is the Envoy dotted name (cluster.backend.upstream_rq_total),
	// matched by filters and printed by the Envoy text form. Characters that
	// Envoy does not keep in statistic names (':', spaces and control
	// characters) are replaced by '_'.
	Name string
	// Family is the Prometheus metric family name
	// (envoy_cluster_upstream_rq_total). It must be a valid legacy
	// Prometheus metric name.
	Family string
	// Help is the family's help text. Optional; the first registration of a
	// family decides it.
	Help string
	// Labels are the series' label pairs, rendered in the given order. Names
	// must be valid legacy Prometheus label names; values may be anything
	// (they are escaped, invalid UTF-8 is replaced by U+FFFD).
	Labels []Label
}

type kind uint8

const (
	kindCounter kind = iota + 1
	kindGauge
	kindGaugeFunc
	kindHistogram
)

func (k kind) String() string {
	switch k {
	case kindCounter:
		return "counter"
	case kindGauge, kindGaugeFunc:
		return "gauge"
	case kindHistogram:
		return "histogram"
	}
	return "unknown"
}

// family is a Prometheus metric family with its headers rendered once.
type family struct {
	name       string
	typ        string // counter, gauge, histogram
	textHeader string // # HELP / # TYPE lines for the text format 0.0.4
	omHeader   string // # TYPE / # HELP lines for OpenMetrics 1.0
	refs       int    // live statistics of this family; guarded by Store.mu
}

// stat is one registered statistic. Everything but refs, published and pos
// is immutable after registration, so renderers read it without locking.
type stat struct {
	name string // Envoy dotted name
	fam  *family
	// labels are the label pairs without braces, a="x",b="y": with the
	// family's name, the Prometheus identity. The statistics of a scope
	// with the same labels share one string.
	labels string

	counter *Counter
	gauge   *Gauge
	hist    *histogram
	fn      func() int64

	kind kind
	// guarded by Store.mu
	published bool
	pos       int32 // index in the name-ordered view being built
	refs      int32
}

// histogram is a histogram statistic's values and its rendered line
// prefixes.
type histogram struct {
	Histogram
	bucketPrefix string // family_bucket{labels,
	sumPrefix    string // family_sum{labels}
	countPrefix  string // family_count{labels}
}

// seriesKey is a series' Prometheus identity.
type seriesKey struct{ family, labels string }

// appendSeries writes the series' identity: family{labels}, or family.
func (st *stat) appendSeries(b []byte) []byte {
	b = append(b, st.fam.name...)
	if st.labels == "" {
		return b
	}
	b = append(b, '{')
	b = append(b, st.labels...)
	return append(b, '}')
}

func seriesString(family, labels string) string {
	if labels == "" {
		return family
	}
	return family + "{" + labels + "}"
}

// snapshot is an immutable view of the published statistics.
type snapshot struct {
	gen     uint64
	series  []*stat // ordered by family name, then labels
	byName  []*stat // ordered by dotted name
	nameIdx []int32 // nameIdx[i] is the position of series[i] in byName

	filters atomic.Pointer[[]*filterEntry] // see filter.go
}

// Store holds the statistics of one proxy. Its methods are safe for
// concurrent use.
type Store struct {
	mu       sync.Mutex
	byKey    map[seriesKey]*stat // by Prometheus identity
	families map[string]*family
	gen      uint64
	batch    int     // depth of running Batch calls
	pending  []*stat // published during a batch, not yet in the view
	dirty    bool    // the view must be rebuilt when the batch ends
	snap     atomic.Pointer[snapshot]
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{
		byKey:    make(map[seriesKey]*stat),
		families: make(map[string]*family),
	}
	s.snap.Store(&snapshot{})
	return s
}

// Len returns the number of published statistics (a histogram counts once).
func (s *Store) Len() int { return len(s.snap.Load().series) }

// Generation returns a number that changes whenever the set of published
// statistics changes.
func (s *Store) Generation() uint64 { return s.snap.Load().gen }

// Batch runs fn and defers the rebuilds of the view that Publish and Release
// would do (by any goroutine) until the outermost Batch returns, then does
// one. Use it to apply a whole config update (e.g. 1000 clusters added or
// removed) at the cost of one rebuild. Until then the encoders keep
// rendering the previous view. Registration inside fn works as usual; fn
// must not call Batch on another goroutine and wait for it.
func (s *Store) Batch(fn func()) {
	s.mu.Lock()
	s.batch++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.batch--
		if s.batch == 0 && s.dirty {
			add := s.pending
			s.pending, s.dirty = nil, false
			s.rebuild(add)
		}
	}()
	fn()
}

// Scope is a group of statistics registered and removed together, e.g. all
// statistics of one cluster. Statistics registered in a scope render only
// after Publish; register the whole group, then publish it once (each
// Publish rebuilds the store's sorted view: O(total statistics)). Release
// removes the group. Methods are safe for concurrent use.
type Scope struct {
	store       *Store
	stats       []*stat // guarded by store.mu
	unpublished []*stat // guarded by store.mu
	released    bool    // guarded by store.mu
	// lastLabels is the label set rendered last, shared by the next
	// statistic with equal labels (a cluster's statistics mostly have one).
	lastLabels atomic.Pointer[renderedLabels]
}

type renderedLabels struct {
	in  []Label
	out string
}

// NewScope returns an empty scope.
func (s *Store) NewScope() *Scope {
	return &Scope{store: s}
}

// Counter registers a counter and returns its handle. Registering the
// Prometheus identity of a live counter returns that counter. It panics if
// the options are invalid or the identity or family is registered with
// another type: both are programming errors, not data errors.
func (sc *Scope) Counter(o Opts) *Counter {
	return sc.register(o, kindCounter, nil).counter
}

// Gauge registers a gauge; see Counter.
func (sc *Scope) Gauge(o Opts) *Gauge {
	return sc.register(o, kindGauge, nil).gauge
}

// GaugeFunc registers a gauge whose value fn computes at render time (it
// must be cheap and safe for concurrent calls). It always counts as used.
// Registering the identity of a live GaugeFunc keeps the first fn.
func (sc *Scope) GaugeFunc(o Opts, fn func() int64) {
	if fn == nil {
		panic("stats: GaugeFunc " + o.Family + ": nil func")
	}
	sc.register(o, kindGaugeFunc, fn)
}

// Histogram registers a histogram; see Counter.
func (sc *Scope) Histogram(o Opts) *Histogram {
	return &sc.register(o, kindHistogram, nil).hist.Histogram
}

func (sc *Scope) register(o Opts, k kind, fn func() int64) *stat {
	st := newStat(o, k, fn, sc.labelsOf) // validates and renders outside the lock
	s := sc.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.released {
		// A late registration on a removed group: hand out a working
		// handle that never renders rather than resurrecting the group.
		return st
	}
	if old, ok := s.byKey[seriesKey{o.Family, st.labels}]; ok {
		if old.kind != k {
			panic(fmt.Sprintf("stats: %s registered as %s and as %s", seriesString(o.Family, st.labels), kindName(old.kind), kindName(k)))
		}
		old.refs++
		sc.stats = append(sc.stats, old)
		if !old.published {
			sc.unpublished = append(sc.unpublished, old)
		}
		return old
	}
	fam, ok := s.families[o.Family]
	if !ok {
		fam = newFamily(o.Family, k.String(), o.Help)
		s.families[o.Family] = fam
	} else if fam.typ != k.String() {
		panic(fmt.Sprintf("stats: family %s registered as %s and as %s", o.Family, fam.typ, k.String()))
	}
	fam.refs++
	st.fam = fam
	st.refs = 1
	s.byKey[seriesKey{fam.name, st.labels}] = st
	sc.stats = append(sc.stats, st)
	sc.unpublished = append(sc.unpublished, st)
	return st
}

func kindName(k kind) string {
	if k == kindGaugeFunc {
		return "gauge func"
	}
	return k.String()
}

// Publish makes every statistic registered in the scope so far visible to
// the encoders, in one rebuild of the store's view.
func (sc *Scope) Publish() {
	s := sc.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.released || len(sc.unpublished) == 0 {
		return
	}
	add := make([]*stat, 0, len(sc.unpublished))
	for _, st := range sc.unpublished {
		if !st.published && st.refs > 0 {
			st.published = true
			add = append(add, st)
		}
	}
	sc.unpublished = nil
	switch {
	case len(add) == 0:
	case s.batch > 0:
		s.pending = append(s.pending, add...)
		s.dirty = true
	default:
		s.rebuild(add)
	}
}

// Release removes the scope's statistics (those not also held by another
// live scope) from the store. Handles stay safe to use; they just no longer
// render. Releasing twice is a no-op.
func (sc *Scope) Release() {
	s := sc.store
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.released {
		return
	}
	sc.released = true
	removed := false
	for _, st := range sc.stats {
		st.refs--
		if st.refs > 0 {
			continue
		}
		delete(s.byKey, seriesKey{st.fam.name, st.labels})
		st.fam.refs--
		if st.fam.refs == 0 {
			delete(s.families, st.fam.name)
		}
		if st.published {
			removed = true
		}
	}
	sc.stats, sc.unpublished = nil, nil
	switch {
	case !removed:
	case s.batch > 0:
		s.dirty = true
	default:
		s.rebuild(nil)
	}
}

func lessSeries(a, b *stat) int {
	if c := cmp.Compare(a.fam.name, b.fam.name); c != 0 {
		return c
	}
	return cmp.Compare(a.labels, b.labels)
}

func lessName(a, b *stat) int {
	if c := cmp.Compare(a.name, b.name); c != 0 {
		return c
	}
	return lessSeries(a, b)
}

// rebuild publishes a new view: the current one minus statistics whose
// reference count dropped to zero, plus the live ones of add. It merges
// sorted slices, so it costs O(total + len(add)·log len(add)). Called with
// s.mu held.
func (s *Store) rebuild(add []*stat) {
	old := s.snap.Load()
	series := mergeLive(old.series, add, lessSeries)
	byName := mergeLive(old.byName, add, lessName)
	for i, st := range byName {
		st.pos = int32(i)
	}
	nameIdx := make([]int32, len(series))
	for i, st := range series {
		nameIdx[i] = st.pos
	}
	s.gen++
	s.snap.Store(&snapshot{gen: s.gen, series: series, byName: byName, nameIdx: nameIdx})
}

// mergeLive returns a new slice with the live (refs > 0) elements of the
// sorted slice cur merged with add (sorted here, in place).
func mergeLive(cur, add []*stat, less func(a, b *stat) int) []*stat {
	slices.SortFunc(add, less)
	out := make([]*stat, 0, len(cur)+len(add))
	i, j := 0, 0
	for i < len(cur) || j < len(add) {
		var st *stat
		if j >= len(add) || (i < len(cur) && less(cur[i], add[j]) <= 0) {
			st = cur[i]
			i++
		} else {
			st = add[j]
			j++
		}
		if st.refs > 0 {
			out = append(out, st)
		}
	}
	return out
}

func newStat(o Opts, k kind, fn func() int64, render func([]Label) string) *stat {
	if !validMetricName(o.Family) {
		panic(fmt.Sprintf("stats: invalid metric family name %q", o.Family))
	}
	if o.Name == "" {
		panic("stats: empty statistic name for " + o.Family)
	}
	for _, l := range o.Labels {
		if !validLabelName(l.Name) || l.Name == "le" && k == kindHistogram {
			panic(fmt.Sprintf("stats: %s: invalid label name %q", o.Family, l.Name))
		}
	}
	labels := render(o.Labels)
	st := &stat{
		name:   sanitizeStatName(o.Name),
		labels: labels,
		kind:   k,
	}
	switch k {
	case kindCounter:
		st.counter = new(Counter)
	case kindGauge:
		st.gauge = new(Gauge)
	case kindGaugeFunc:
		st.fn = fn
	case kindHistogram:
		h := new(histogram)
		if labels == "" {
			h.bucketPrefix = o.Family + "_bucket{"
			h.sumPrefix = o.Family + "_sum"
			h.countPrefix = o.Family + "_count"
		} else {
			h.bucketPrefix = o.Family + "_bucket{" + labels + ","
			h.sumPrefix = o.Family + "_sum{" + labels + "}"
			h.countPrefix = o.Family + "_count{" + labels + "}"
		}
		st.hist = h
	}
	return st
}

// labelsOf renders label pairs, sharing the string of the scope's last
// rendering when the labels are equal.
func (sc *Scope) labelsOf(ls []Label) string {
	if last := sc.lastLabels.Load(); last != nil && slices.Equal(last.in, ls) {
		return last.out
	}
	out := renderLabels(ls)
	sc.lastLabels.Store(&renderedLabels{in: slices.Clone(ls), out: out})
	return out
}

// renderLabels writes label pairs without braces: a="x",b="y".
func renderLabels(ls []Label) string {
	if len(ls) == 0 {
		return ""
	}
	var lb strings.Builder
	for i, l := range ls {
		if i > 0 {
			lb.WriteByte(',')
		}
		lb.WriteString(l.Name)
		lb.WriteString(`="`)
		writeEscapedLabelValue(&lb, l.Value)
		lb.WriteByte('"')
	}
	return lb.String()
}

func newFamily(name, typ, help string) *family {
	f := &family{name: name, typ: typ}
	// Text 0.0.4: HELP escapes backslash and newline.
	var b strings.Builder
	if help != "" {
		b.WriteString("# HELP ")
		b.WriteString(name)
		b.WriteByte(' ')
		writeEscaped(&b, help, false)
		b.WriteByte('\n')
	}
	b.WriteString("# TYPE ")
	b.WriteString(name)
	b.WriteByte(' ')
	b.WriteString(typ)
	b.WriteByte('\n')
	f.textHeader = b.String()

	// OpenMetrics 1.0: a counter named *_total is the counter family
	// without the suffix; any other counter is typed unknown so that its
	// sample name stays exactly the text format's. HELP also escapes '"'.
	omName, omType := name, typ
	if typ == "counter" {
		if base, ok := strings.CutSuffix(name, "_total"); ok && base != "" {
			omName = base
		} else {
			omType = "unknown"
		}
	}
	b.Reset()
	b.WriteString("# TYPE ")
	b.WriteString(omName)
	b.WriteByte(' ')
	b.WriteString(omType)
	b.WriteByte('\n')
	if help != "" {
		b.WriteString("# HELP ")
		b.WriteString(omName)
		b.WriteByte(' ')
		writeEscaped(&b, help, true)
		b.WriteByte('\n')
	}
	f.omHeader = b.String()
	return f
}

// writeEscapedLabelValue escapes a label value for both the text format and
// OpenMetrics: backslash, double quote and line feed.
func writeEscapedLabelValue(b *strings.Builder, v string) {
	writeEscaped(b, v, true)
}

func writeEscaped(b *strings.Builder, v string, quote bool) {
	v = strings.ToValidUTF8(v, "\uFFFD")
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '"' && quote:
			b.WriteString(`\"`)
		default:
			b.WriteByte(c)
		}
	}
}

// sanitizeStatName replaces what Envoy does not keep in a statistic name
// (':' and, for the line-oriented text form, spaces and control characters)
// with '_'.
func sanitizeStatName(n string) string {
	if !strings.ContainsFunc(n, badStatNameRune) {
		return n
	}
	return strings.Map(func(r rune) rune {
		if badStatNameRune(r) {
			return '_'
		}
		return r
	}, strings.ToValidUTF8(n, "_"))
}

func badStatNameRune(r rune) bool {
	return r == ':' || r <= ' ' || r == 0x7f || r == utf8.RuneError
}

func validMetricName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

func validLabelName(n string) bool {
	if n == "" || strings.HasPrefix(n, "__") {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}
