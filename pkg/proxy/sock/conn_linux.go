//go:build linux

package sock

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
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
	wc      syscall.RawConn
	pending []byte
	werr    error
	wb      []byte
	writeFn func(fd uintptr) bool
}

// NewConn wraps c for a TLS connection on top; c itself when its socket
// cannot be reached below the wrappers.
func NewConn(c net.Conn) net.Conn {
	e, ok := Unwrap(c, false)
	if !ok {
		return c
	}
	wc, err := e.TCP.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{Conn: c, end: e, wc: wc}
	sc.writeFn = sc.writeNow
	return sc
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
		c.wb, c.werr = b, nil
		if err := c.wc.Write(c.writeFn); err != nil {
			return 0, err
		}
		rest, c.wb = c.wb, nil
		if c.werr != nil && c.werr != unix.EAGAIN {
			return len(b) - len(rest), c.werr
		}
	}
	c.pending = append(c.pending, rest...)
	return len(b), nil
}

// writeNow writes c.wb to fd until it is written or the socket is full,
// never waiting.
func (c *Conn) writeNow(fd uintptr) bool {
	for len(c.wb) > 0 {
		n, err := unix.Write(int(fd), c.wb)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			c.werr = err
			break
		}
		c.wb = c.wb[n:]
		if c.end.Tx != nil {
			c.end.Tx.Add(uint64(n))
		}
	}
	return true
}
