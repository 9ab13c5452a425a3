package metricsendpoint

import (
	"bytes"
	"io"
	"sync"

	dto "github.com/prometheus/client_model/go"

	"github.com/kumametrics/mesh/pkg/stats"
)

// The store offers no listing of its families or series, only its encoders,
// so the fact this package needs from it (the names its families occupy) is
// read from a full rendering, once per generation of the store's view (registrations change
// it, recording does not).

// proxyFamilies is the set of names the proxy's families occupy.
type proxyFamilies struct {
	gen   uint64
	names nameSet
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
