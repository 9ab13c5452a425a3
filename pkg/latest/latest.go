// Package latest holds the newest value of something that changes (a store
// view, a snapshot) and wakes whoever waits for the next one. Readers never
// block writers: each Set closes the channel that Get handed out before.
package latest

import "sync"

// Value is the newest T and a signal of its replacement. The zero Value
// holds the zero T. It is safe for concurrent use.
type Value[T any] struct {
	mu      sync.Mutex
	v       T
	changed chan struct{}
}

// Set replaces the value and wakes every waiter.
func (l *Value[T]) Set(v T) {
	l.mu.Lock()
	l.v = v
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	l.mu.Unlock()
}

// Get returns the value and a channel that is closed when it is replaced.
func (l *Value[T]) Get() (T, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.v, l.changed
}

// Load returns the value.
func (l *Value[T]) Load() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v
}
