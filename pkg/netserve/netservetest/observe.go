package netservetest

import (
	"log/slog"
	"sync/atomic"

	"github.com/kumametrics/mesh/internal/syncbuffer"
)

// Counter is a netserve.Counter a test reads.
type Counter struct{ atomic.Int64 }

// Inc counts one.
func (c *Counter) Inc() { c.Add(1) }

// NewLogger returns a logger writing slog's text form to the buffer it
// returns, for checking that an episode or a panic was logged.
func NewLogger() (*slog.Logger, *syncbuffer.Buffer) {
	b := &syncbuffer.Buffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}
