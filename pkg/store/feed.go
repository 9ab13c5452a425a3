package store

import (
	"context"
	"sync"
)

// feedBuffer is how many events a subscriber may fall behind before it gets
// a Resync instead of the events it missed.
const feedBuffer = 4096

// Feed fans change events out to subscribers. Publishing never blocks: a
// subscriber that falls behind loses the events it could not take and gets
// one Resync event instead. Backends embed a Feed and publish after commit.
type Feed struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch chan Event
	// resyncQueued is true while a Resync marker waits in ch for the events dropped before it.
	resyncQueued bool
}

// Watch subscribes until ctx is done; the channel is then closed.
func (f *Feed) Watch(ctx context.Context) <-chan Event {
	// One extra slot is reserved for the Resync marker, so it always fits.
	s := &subscriber{ch: make(chan Event, feedBuffer+1)}
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[*subscriber]struct{}{}
	}
	f.subs[s] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, s)
		close(s.ch)
		f.mu.Unlock()
	}()
	return s.ch
}

// Publish delivers events to every subscriber without blocking. Only Publish
// sends (under f.mu), so the length checks cannot race with another sender.
func (f *Feed) Publish(events ...Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for s := range f.subs {
		for _, e := range events {
			switch {
			case len(s.ch) < feedBuffer:
				s.ch <- e
				s.resyncQueued = false
			case !s.resyncQueued:
				s.ch <- Event{Type: Resync}
				s.resyncQueued = true
			}
		}
	}
}
