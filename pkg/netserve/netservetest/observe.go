package netservetest

import (
	"bytes"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Counter is a netserve.Counter a test reads.
type Counter struct{ atomic.Int64 }

// Inc counts one.
func (c *Counter) Inc() { c.Add(1) }

// Logs is what a logger made by NewLogger wrote, in slog's text form, for
// checking that an episode or a panic was logged.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// NewLogger returns a logger writing to the Logs it returns.
func NewLogger() (*slog.Logger, *Logs) {
	l := &Logs{}
	return slog.New(slog.NewTextHandler(l, nil)), l
}
