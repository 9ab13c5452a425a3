package metricsendpoint

import (
	"regexp"
	"sync/atomic"
)

// maxCachedQueryFilters bounds the compiled ?filter= expressions kept. A
// scraper sends the same few expressions on every scrape (Prometheus'
// `params`); an operator's ad-hoc ones come and go.
const maxCachedQueryFilters = 8

// queryFilters keeps recently compiled ?filter= expressions, most recent
// first, in an immutable list replaced by compare-and-swap: concurrent
// scrapes never wait for each other. Only valid expressions are kept.
type queryFilters struct {
	list atomic.Pointer[[]*regexp.Regexp]
}

// compile returns the compiled expr, from the cache when it is there.
func (c *queryFilters) compile(expr string) (*regexp.Regexp, error) {
	cur := c.list.Load()
	if cur != nil {
		for _, re := range *cur {
			if re.String() == expr {
				return re, nil
			}
		}
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, err
	}
	var old []*regexp.Regexp
	if cur != nil {
		old = *cur
	}
	next := make([]*regexp.Regexp, 0, maxCachedQueryFilters)
	next = append(next, re)
	next = append(next, old[:min(len(old), maxCachedQueryFilters-1)]...)
	c.list.CompareAndSwap(cur, &next) // a lost race only costs a later recompilation
	return re, nil
}
