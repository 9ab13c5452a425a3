package dpconfig

import (
	"slices"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// specificity ranks how closely a selector matches: more matched tags
// first, then more exact (non-"*") values.
type specificity struct{ tags, exact int }

func (a specificity) less(b specificity) bool {
	return a.tags < b.tags || a.tags == b.tags && a.exact < b.exact
}

// matchTags tells whether a selector matches tags: every key present, with
// the same value or "*".
func matchTags(sel map[string]string, tags map[string]string) (specificity, bool) {
	var s specificity
	for k, v := range sel {
		have, ok := tags[k]
		if !ok || (v != "*" && v != have) {
			return specificity{}, false
		}
		s.tags++
		if v != "*" {
			s.exact++
		}
	}
	return s, true
}

// AllowedSources picks, among the TrafficPermissions whose destinations
// match tags, the most specific one (more matched tags, then more exact
// values, then the newest, then the first by name) and returns its sources.
// None matches: nothing is allowed (an empty list).
func AllowedSources(permissions []*resource.Object, tags map[string]string) []*meshv1.Selector {
	var (
		winner *resource.Object
		best   specificity
	)
	for _, tp := range permissions {
		spec := tp.TrafficPermission()
		if spec == nil {
			continue
		}
		found, top := false, specificity{}
		for _, d := range spec.Destinations {
			if s, ok := matchTags(d.Match, tags); ok && (!found || top.less(s)) {
				found, top = true, s
			}
		}
		if !found {
			continue
		}
		switch {
		case winner == nil, best.less(top):
		case top.less(best):
			continue
		case tp.Meta.CreationTime.After(winner.Meta.CreationTime):
		case tp.Meta.CreationTime.Equal(winner.Meta.CreationTime) && tp.Meta.Name < winner.Meta.Name:
		default:
			continue
		}
		winner, best = tp, top
	}
	if winner == nil {
		return nil
	}
	var out []*meshv1.Selector
	for _, src := range winner.TrafficPermission().Sources {
		out = append(out, &meshv1.Selector{Match: src.Match})
	}
	return out
}

// Allowed tells whether a peer with tags (every value it carries per key)
// matches one of the selectors.
func Allowed(selectors []*meshv1.Selector, peer map[string][]string) bool {
	for _, sel := range selectors {
		if peerMatches(sel.GetMatch(), peer) {
			return true
		}
	}
	return false
}

func peerMatches(sel map[string]string, peer map[string][]string) bool {
	for k, v := range sel {
		vs, ok := peer[k]
		if !ok || len(vs) == 0 || (v != "*" && !slices.Contains(vs, v)) {
			return false
		}
	}
	return true
}
