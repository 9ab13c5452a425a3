//go:build linux

package sock

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Conn is the connection below one of the proxy's TLS connections: the
// proxy's wrappers down to a plain TCP socket, which a relay may read and
// write itself. Read and Write go through the wrappers, except
//   - inside the Serve of its Reader, where Read reads the socket (ErrWouldBlock
//     once it is empty), so that the TLS connection above decrypts what a
//     read callback read;
//   - while TryWrites is on, where Write writes to the socket what it takes
//     without waiting and keeps the rest, which Flush (or the next Write)
//     writes: a TLS connection's Write inside a read callback never waits
//     on its peer.
//
// What is read and written on the socket is counted into the wrappers'
// counters.
type Conn struct {
	net.Conn
	end End
	rd  *Reader

	trying  atomic.Bool
	mu      sync.Mutex // writes: a TLS connection's, and Flush
	w       *Writer
	pending []byte
}

// NewConn wraps c for a TLS connection on top; c itself when its socket
// cannot be reached below the wrappers.
func NewConn(c net.Conn) net.Conn {
	e, ok := Unwrap(c, false)
	if !ok {
		return c
	}
	w := newWriter(e)
	if w == nil {
		return c
	}
	return &Conn{Conn: c, end: e, w: w}
}

// Reader is the socket's reader (made on first use, counting into the
// wrappers' read counter); nil when the socket cannot be read. The bytes
// the wrappers may have read ahead are not its: a caller checks
// Unwrap(c.Conn, true) first.
func (c *Conn) Reader() *Reader {
	if c.rd == nil {
		c.rd = NewReader(c.end.TCP, c.end.Rx)
	}
	return c.rd
}

// TCP is the socket's connection.
func (c *Conn) TCP() *net.TCPConn { return c.end.TCP }

func (c *Conn) Read(p []byte) (int, error) {
	if c.rd != nil && c.rd.serving {
		return c.rd.Read(p)
	}
	return c.Conn.Read(p)
}

// TryWrites turns writes that never wait on or off (see Conn).
func (c *Conn) TryWrites(on bool) { c.trying.Store(on) }

// Pending is how many written bytes wait for Flush.
func (c *Conn) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

// Flush writes the bytes that wait, waiting for the socket to take them.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flush()
}

func (c *Conn) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	n, err := c.Conn.Write(c.pending) // all of it, or an error
	if err != nil {
		c.pending = c.pending[n:]
		return err
	}
	c.pending = c.pending[:0] // its buffer serves the next wait
	return nil
}

func (c *Conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.trying.Load() {
		if err := c.flush(); err != nil {
			return 0, err
		}
		return c.Conn.Write(b)
	}
	rest := b
	if len(c.pending) == 0 {
		n, err := c.w.TryWrite(b)
		if err != nil {
			return n, err
		}
		rest = b[n:]
	}
	c.pending = append(c.pending, rest...)
	return len(b), nil
}

// Writer writes a TCP connection's socket itself, never waiting: what the
// socket does not take at once is left to the caller. What it writes is
// counted into the wrappers' write counter. Its writes are for one
// goroutine at a time.
type Writer struct {
	rc  syscall.RawConn
	tx  *stats.Counter
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// NewWriter readies writes of c's socket below the proxy's wrappers; nil
// when it cannot be reached.
func NewWriter(c net.Conn) *Writer {
	e, ok := Unwrap(c, false)
	if !ok {
		return nil
	}
	return newWriter(e)
}

func newWriter(e End) *Writer {
	rc, err := e.TCP.SyscallConn()
	if err != nil {
		return nil
	}
	w := &Writer{rc: rc, tx: e.Tx}
	w.fn = w.write
	return w
}

// TryWrite writes b until the socket is full: n < len(b) with a nil error
// says it took no more now.
func (w *Writer) TryWrite(b []byte) (n int, err error) {
	w.b, w.n, w.err = b, 0, nil
	if err := w.rc.Write(w.fn); err != nil {
		w.b = nil
		return 0, err
	}
	n, err = w.n, w.err
	w.b, w.err = nil, nil
	return n, err
}

func (w *Writer) write(fd uintptr) bool {
	n, err := WriteFD(int(fd), w.b, w.tx)
	w.n = n
	if err != unix.EAGAIN {
		w.err = err
	}
	return true
}

// WriteFD writes b to the socket fd (inside a RawConn callback) until all
// of it is written or the socket refuses more (unix.EAGAIN when it is
// full, or its error), counting what it wrote into tx (nil: not counted).
func WriteFD(fd int, b []byte, tx *stats.Counter) (n int, err error) {
	for n < len(b) {
		m, err := unix.Write(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
		if tx != nil {
			tx.Add(uint64(m))
		}
	}
	return n, nil
}
