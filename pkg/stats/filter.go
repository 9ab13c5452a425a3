package stats

import "regexp"

// maxCachedFilters bounds the filter cache of one view. A proxy sees one
// configured filter plus the odd ad-hoc ?filter= from an operator.
const maxCachedFilters = 8

// filterEntry is the match result of one regular expression against every
// dotted name of a view, as a bitset in name order.
type filterEntry struct {
	expr string
	bits []uint64
}

func (e *filterEntry) has(pos int32) bool {
	return e.bits[pos>>6]&(1<<(uint(pos)&63)) != 0
}

// filters are the match results a rendering applies; a name is kept when
// every set one matches it.
type filters struct{ a, b *filterEntry }

func (f filters) keep(pos int32) bool {
	return (f.a == nil || f.a.has(pos)) && (f.b == nil || f.b.has(pos))
}

// filter returns the match result of re against the view's names, computing
// it at most once per (expression, view) in the common case. The cache lives
// in the immutable view, so a registration change (a new view) invalidates
// it, and it is updated by compare-and-swap: concurrent scrapes never block
// each other, registration or the data path. Two scrapes racing on a new
// expression may both compute it; one result wins.
func (sn *snapshot) filter(re *regexp.Regexp) *filterEntry {
	expr := re.String()
	var computed *filterEntry
	for {
		cur := sn.filters.Load()
		var list []*filterEntry
		if cur != nil {
			list = *cur
			for _, e := range list {
				if e.expr == expr {
					return e
				}
			}
		}
		if computed == nil {
			computed = &filterEntry{expr: expr, bits: make([]uint64, (len(sn.byName)+63)/64)}
			for i, st := range sn.byName {
				if re.MatchString(st.name) {
					computed.bits[i>>6] |= 1 << (uint(i) & 63)
				}
			}
		}
		keep := min(len(list), maxCachedFilters-1)
		next := make([]*filterEntry, 0, keep+1)
		next = append(next, computed)
		next = append(next, list[:keep]...)
		if sn.filters.CompareAndSwap(cur, &next) {
			return computed
		}
	}
}
