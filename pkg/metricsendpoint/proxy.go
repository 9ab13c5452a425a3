package metricsendpoint

import (
	"bytes"
	"io"
	"regexp"
	"sync"

	"github.com/cespare/xxhash/v2"
	dto "github.com/prometheus/client_model/go"

	"github.com/kumametrics/mesh/pkg/stats"
)

// The store offers no listing of its families or series, only its encoders,
// so the two facts this package needs from it are read from a full
// rendering, once per generation of the store's view (registrations change
// it, recording does not).

// proxyFamilies is the set of names the proxy's families occupy.
type proxyFamilies struct {
	gen   uint64
	names nameSet
}

// seriesSet is the set of sample-line identities (the line up to the value)
// of the statistics that a filter expression matches, as xxhash values.
type seriesSet struct {
	gen  uint64
	expr string
	ids  map[uint64]struct{}
}

var renderBuffers = sync.Pool{New: func() any { return new([]byte) }}

// render appends the whole rendering of the store (text format) with o to a
// pooled buffer and calls fn with it.
func (e *Endpoint) render(o stats.RenderOptions, fn func(b []byte)) {
	bp := renderBuffers.Get().(*[]byte)
	b := e.store.Append((*bp)[:0], stats.FormatPrometheus, o)
	fn(b)
	if cap(b) <= 8<<20 {
		*bp = b[:0]
		renderBuffers.Put(bp)
	}
}

// proxyFamilyNames returns the names occupied by every family registered in
// the store, whatever the filters of a scrape: the proxy's names stay
// reserved even when a filter hides them, so an application's family does
// not come and go with the filter.
func (e *Endpoint) proxyFamilyNames() nameSet {
	gen := e.store.Generation() // read before rendering: a newer view only causes a recomputation
	if c := e.proxyNames.Load(); c != nil && c.gen == gen {
		return c.names
	}
	names := make(nameSet)
	var scratch []string
	e.render(stats.RenderOptions{}, func(b []byte) {
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			rest, ok := bytes.CutPrefix(line, []byte("# TYPE "))
			if !ok {
				continue
			}
			name, typ, _ := bytes.Cut(rest, []byte(" "))
			scratch = reservedNames(scratch[:0], string(name), familyType(string(typ)))
			names.add(scratch, "")
		}
	})
	e.proxyNames.Store(&proxyFamilies{gen: gen, names: names})
	return names
}

func familyType(t string) dto.MetricType {
	switch t {
	case "counter":
		return dto.MetricType_COUNTER
	case "gauge":
		return dto.MetricType_GAUGE
	case "histogram":
		return dto.MetricType_HISTOGRAM
	case "summary":
		return dto.MetricType_SUMMARY
	}
	return dto.MetricType_UNTYPED
}

// configSeries returns the series that the config's filter matches.
func (e *Endpoint) configSeries(re *regexp.Regexp) map[uint64]struct{} {
	gen, expr := e.store.Generation(), re.String()
	if c := e.cfgSeries.Load(); c != nil && c.gen == gen && c.expr == expr {
		return c.ids
	}
	ids := make(map[uint64]struct{})
	e.render(stats.RenderOptions{Filter: re}, func(b []byte) {
		for len(b) > 0 {
			line := b
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				line, b = b[:i], b[i+1:]
			} else {
				b = nil
			}
			if len(line) == 0 || line[0] == '#' {
				continue
			}
			ids[xxhash.Sum64(seriesID(line))] = struct{}{}
		}
	})
	e.cfgSeries.Store(&seriesSet{gen: gen, expr: expr, ids: ids})
	return ids
}

// seriesID returns a sample line (without its newline) up to its value: the
// value is after the last space (label values may hold spaces, values and
// the store's lines have no timestamp).
func seriesID(line []byte) []byte {
	if i := bytes.LastIndexByte(line, ' '); i >= 0 {
		return line[:i]
	}
	return line
}

// lineFilter passes on the sample lines of a rendering whose series are in
// keep, with their family's header lines; a family without a kept sample
// loses its header too. Other comment lines (# EOF) pass.
type lineFilter struct {
	w        io.Writer
	keep     map[uint64]struct{}
	carry    []byte // an incomplete line from the previous Write
	header   []byte // header lines of the current family, not yet written
	inHeader bool
	out      []byte
	err      error
}

const lineFilterFlushAt = 32 << 10

var lineFilters = sync.Pool{New: func() any {
	return &lineFilter{out: make([]byte, 0, lineFilterFlushAt+4096)}
}}

// newLineFilter returns a pooled filter; give it back with release.
func newLineFilter(w io.Writer, keep map[uint64]struct{}) *lineFilter {
	f := lineFilters.Get().(*lineFilter)
	f.w, f.keep = w, keep
	return f
}

// release resets the filter and returns it to the pool, unless one of its
// buffers grew beyond reason.
func (f *lineFilter) release() {
	if cap(f.out) > 1<<20 || cap(f.carry) > 1<<20 || cap(f.header) > 1<<20 {
		return
	}
	*f = lineFilter{out: f.out[:0], carry: f.carry[:0], header: f.header[:0]}
	lineFilters.Put(f)
}

func (f *lineFilter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n := len(p)
	if len(f.carry) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.carry = append(f.carry, p...)
			return n, nil
		}
		f.carry = append(f.carry, p[:i+1]...)
		f.line(f.carry)
		f.carry = f.carry[:0]
		p = p[i+1:]
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			f.carry = append(f.carry, p...)
			break
		}
		f.line(p[:i+1])
		p = p[i+1:]
	}
	if len(f.out) >= lineFilterFlushAt {
		f.flushOut()
	}
	return n, f.err
}

// line handles one complete line, newline included.
func (f *lineFilter) line(l []byte) {
	if l[0] == '#' {
		if bytes.HasPrefix(l, []byte("# HELP ")) || bytes.HasPrefix(l, []byte("# TYPE ")) || bytes.HasPrefix(l, []byte("# UNIT ")) {
			if !f.inHeader {
				f.header, f.inHeader = f.header[:0], true
			}
			f.header = append(f.header, l...)
			return
		}
		f.header, f.inHeader = f.header[:0], false
		f.out = append(f.out, l...)
		return
	}
	f.inHeader = false
	if _, ok := f.keep[xxhash.Sum64(seriesID(l[:len(l)-1]))]; !ok {
		return
	}
	if len(f.header) > 0 {
		f.out = append(f.out, f.header...)
		f.header = f.header[:0]
	}
	f.out = append(f.out, l...)
}

func (f *lineFilter) flushOut() {
	if len(f.out) == 0 || f.err != nil {
		return
	}
	_, f.err = f.w.Write(f.out)
	f.out = f.out[:0]
}

// Flush writes what is buffered, including an unterminated last line (which
// the store never produces).
func (f *lineFilter) Flush() error {
	if len(f.carry) > 0 {
		f.carry = append(f.carry, '\n')
		f.line(f.carry)
		f.carry = f.carry[:0]
	}
	f.flushOut()
	return f.err
}

// eofStripper passes everything on except a final "# EOF\n", which it holds
// back (the last len(eofLine) bytes are always held until more arrive).
type eofStripper struct {
	w    io.Writer
	tail [len(eofLine)]byte
	n    int
}

const eofLine = "# EOF\n"

func (s *eofStripper) Write(p []byte) (int, error) {
	total := len(p)
	if s.n+len(p) <= len(s.tail) {
		s.n += copy(s.tail[s.n:], p)
		return total, nil
	}
	emit := s.n + len(p) - len(s.tail) // bytes of tail+p that are surely not the last ones
	if emit < s.n {
		// Only part of the held bytes goes out; p joins the rest.
		if _, err := s.w.Write(s.tail[:emit]); err != nil {
			return 0, err
		}
		k := copy(s.tail[:], s.tail[emit:s.n])
		k += copy(s.tail[k:], p)
		s.n = k
		return total, nil
	}
	if s.n > 0 {
		if _, err := s.w.Write(s.tail[:s.n]); err != nil {
			return 0, err
		}
	}
	cut := len(p) - len(s.tail)
	if _, err := s.w.Write(p[:cut]); err != nil {
		return 0, err
	}
	s.n = copy(s.tail[:], p[cut:])
	return total, nil
}

// Finish writes the held bytes unless they are the # EOF line.
func (s *eofStripper) Finish() error {
	if string(s.tail[:s.n]) == eofLine {
		s.n = 0
		return nil
	}
	_, err := s.w.Write(s.tail[:s.n])
	s.n = 0
	return err
}
