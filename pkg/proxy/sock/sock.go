// Package sock reads the proxy's plain TCP connections on the socket
// itself, inside the runtime poller's read callback, with TCP_INQ: each
// read says whether the socket holds more (bytes, or the peer's end), so
// that a reader that emptied it waits for the poller's next readiness
// instead of asking once more only to be told EAGAIN — one system call per
// read saved, which on these machines costs as much as the read.
//
// It also looks through the proxy's own connection wrappers (Unwrap) to
// the *net.TCPConn below them and the counters they keep, so that what is
// read and written on the socket is counted as the wrappers would.
package sock

import (
	"errors"
	"net"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Wrapper is one of the proxy's own wrappers around a connection that adds
// nothing to its bytes: Unwrap looks through it.
type Wrapper interface {
	// UnwrapTCP returns the wrapped connection and the counters of the
	// bytes read from (rx) and written to (tx) the wrapper, nil when it
	// keeps none.
	UnwrapTCP() (inner net.Conn, rx, tx *stats.Counter)
}

// ReadAheader is a Wrapper that may hold bytes it read ahead from its
// connection: they must be read through it before the socket.
type ReadAheader interface{ ReadAhead() int }

// End is a connection as the socket paths see it: the TCP connection
// below the wrappers, their counters, and the bytes they read ahead.
type End struct {
	TCP    *net.TCPConn
	Rx, Tx *stats.Counter
	Ahead  int
}

// Unwrap looks through the proxy's wrappers of c down to a plain
// *net.TCPConn; false for anything else (a TLS connection), or for a chain
// with more than one counting wrapper per direction. Only a reading end
// (reads true) asks for the bytes read ahead: its reads are its own
// goroutine's.
func Unwrap(c net.Conn, reads bool) (End, bool) {
	var e End
	for {
		if ra, ok := c.(ReadAheader); ok && reads {
			e.Ahead += ra.ReadAhead()
		}
		switch v := c.(type) {
		case *net.TCPConn:
			e.TCP = v
			return e, true
		case Wrapper:
			inner, rx, tx := v.UnwrapTCP()
			if rx != nil {
				if e.Rx != nil {
					return e, false
				}
				e.Rx = rx
			}
			if tx != nil {
				if e.Tx != nil {
					return e, false
				}
				e.Tx = tx
			}
			c = inner
		default:
			return e, false
		}
	}
}

// ErrWouldBlock is what Reader.Read returns inside Serve when the socket
// is (known to be) empty: the step returns, and Serve waits for the
// poller. It is a temporary net.Error, which a reader above (a framer, a
// TLS connection) is to treat as "try again".
var ErrWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "sock: would block" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

var _ net.Error = wouldBlock{}

// errNotServing: a Reader's method called where there is no socket to read
// (not on Linux).
var errNotServing = errors.New("sock: no socket reads on this system")
