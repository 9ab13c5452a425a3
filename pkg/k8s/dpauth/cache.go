package dpauth

import (
	"container/list"
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// reviewCache keeps the API server's answers about tokens for a while, at
// most size of them (the least recently used go first), so that proxies
// reconnecting, or calling again (a certificate after the stream), do not
// each cost a TokenReview; concurrent calls with one token share one review.
// Tokens are kept as their SHA-256 only.
type reviewCache struct {
	size int
	now  func() time.Time

	mu       sync.Mutex
	entries  map[[32]byte]*list.Element // of *cached
	lru      *list.List                 // front: most recently used
	inflight map[[32]byte]*review
}

type cached struct {
	key   [32]byte
	id    identity
	until time.Time
}

// review is one TokenReview in flight; done closes when id and err are set.
type review struct {
	done chan struct{}
	id   identity
	err  error
}

func newReviewCache(size int, now func() time.Time) *reviewCache {
	return &reviewCache{size: size, now: now, entries: map[[32]byte]*list.Element{}, lru: list.New(), inflight: map[[32]byte]*review{}}
}

// get returns the answer about token: the cached one while it lasts, else
// the one fetch gives (with the time until which it may be kept; errors are
// not kept). The first caller fetches, under its ctx; concurrent callers
// with the same token wait for its answer (or their ctx's end).
func (c *reviewCache) get(ctx context.Context, token string, fetch func(context.Context) (identity, time.Time, error)) (identity, error) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*cached)
		if c.now().Before(e.until) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.id, nil
		}
		c.remove(el)
	}
	if r, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		select {
		case <-r.done:
			return r.id, r.err
		case <-ctx.Done():
			return identity{}, ctx.Err()
		}
	}
	r := &review{done: make(chan struct{})}
	c.inflight[key] = r
	c.mu.Unlock()

	id, until, err := fetch(ctx)
	c.mu.Lock()
	delete(c.inflight, key)
	if err == nil && c.now().Before(until) {
		c.add(&cached{key: key, id: id, until: until})
	}
	c.mu.Unlock()
	r.id, r.err = id, err
	close(r.done)
	return id, err
}

// add keeps e, making room: expired entries first, then the least recently
// used. c.mu is held.
func (c *reviewCache) add(e *cached) {
	if el, ok := c.entries[e.key]; ok {
		c.remove(el)
	}
	if len(c.entries) >= c.size {
		now := c.now()
		for el := c.lru.Back(); el != nil; {
			prev := el.Prev()
			if !now.Before(el.Value.(*cached).until) {
				c.remove(el)
			}
			el = prev
		}
	}
	for len(c.entries) >= c.size {
		c.remove(c.lru.Back())
	}
	c.entries[e.key] = c.lru.PushFront(e)
}

func (c *reviewCache) remove(el *list.Element) {
	delete(c.entries, el.Value.(*cached).key)
	c.lru.Remove(el)
}

// len is the number of answers kept.
func (c *reviewCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
