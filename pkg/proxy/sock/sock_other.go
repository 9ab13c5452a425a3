//go:build !linux

package sock

import (
	"net"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Reader: no socket reads here; NewReader returns nil and callers read
// through the connection.
type Reader struct{}

// NewReader returns nil: not on this system.
func NewReader(*net.TCPConn, *stats.Counter) *Reader { return nil }

// Inq is false.
func (*Reader) Inq() bool { return false }

// Recv is never called.
func (*Reader) Recv(uintptr, []byte) (int, bool, error) { return 0, false, errNotServing }

// Serve is never called.
func (*Reader) Serve(func() bool) error { return errNotServing }

// Read is never called.
func (*Reader) Read([]byte) (int, error) { return 0, errNotServing }

// NewConn returns c: no socket writes here.
func NewConn(c net.Conn) net.Conn { return c }

// Writer: no socket writes here; NewWriter returns nil.
type Writer struct{}

// NewWriter returns nil: not on this system.
func NewWriter(net.Conn) *Writer { return nil }

// TryWrite is never called.
func (*Writer) TryWrite([]byte) (int, error) { return 0, errNotServing }
