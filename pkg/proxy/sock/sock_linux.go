//go:build linux

package sock

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/pkg/stats"
)

// Reader reads one TCP connection with recvmsg(2), counting what it read
// into Rx. Its methods are for one goroutine.
type Reader struct {
	tcp *net.TCPConn
	rc  syscall.RawConn
	rx  *stats.Counter
	// inq: the kernel reports with each read what the socket holds.
	inq bool

	msg  unix.Msghdr
	iov  unix.Iovec
	cmsg [unix.SizeofCmsghdr + 8]byte

	// Inside Serve: the socket, and whether the last read emptied it.
	fd      uintptr
	serving bool
	drained bool
	step    func() bool
	stepFn  func(fd uintptr) bool
}

// NewReader readies reads of c, counted into rx (nil: not counted); nil
// when c's socket cannot be reached.
func NewReader(c *net.TCPConn, rx *stats.Counter) *Reader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &Reader{tcp: c, rc: rc, rx: rx}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_INQ, 1)
	}); err == nil && serr == nil {
		r.inq = true
	}
	r.msg.Iov = &r.iov
	r.msg.SetIovlen(1)
	if r.inq {
		r.msg.Control = &r.cmsg[0]
	}
	r.stepFn = r.callback
	return r
}

// RawConn is the connection's socket, for a caller that runs its own
// reads on it with Recv.
func (r *Reader) RawConn() syscall.RawConn { return r.rc }

// Inq says whether the kernel reports what the socket holds (TCP_INQ);
// without it a reader learns that the socket is empty only from EAGAIN.
func (r *Reader) Inq() bool { return r.inq }

// Recv reads once from fd into b (len(b) > 0), counting what it read.
// more is false when the socket is known to hold nothing more: EAGAIN, or
// TCP_INQ said so after this read. n == 0 with a nil error is the peer's
// end.
func (r *Reader) Recv(fd uintptr, b []byte) (n int, more bool, err error) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	if r.inq {
		r.msg.SetControllen(len(r.cmsg)) // the kernel sets it to what it wrote
	}
	for {
		r0, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, false, e
		}
		n = int(r0)
		break
	}
	if n > 0 && r.rx != nil {
		r.rx.Add(uint64(n))
	}
	if !r.inq || n == 0 {
		return n, n > 0, nil
	}
	// One control message is asked for: TCP_CM_INQ, an int.
	h := (*unix.Cmsghdr)(unsafe.Pointer(&r.cmsg[0]))
	if r.msg.Controllen < unix.SizeofCmsghdr+4 || h.Level != unix.SOL_TCP || h.Type != unix.TCP_CM_INQ {
		return n, true, nil
	}
	return n, *(*int32)(unsafe.Pointer(&r.cmsg[unix.SizeofCmsghdr])) != 0, nil
}

// Serve calls step inside the poller's read callback whenever the socket
// may have bytes, until step returns true; step reads through Read until
// ErrWouldBlock, then returns false to wait. Serve returns nil when step
// returned true, or the poller's error: the connection closed, or its
// read deadline passed (os.ErrDeadlineExceeded; Serve may be called
// again).
func (r *Reader) Serve(step func() (done bool)) error {
	r.step = step
	err := r.rc.Read(r.stepFn)
	r.step = nil
	return err
}

func (r *Reader) callback(fd uintptr) bool {
	r.fd, r.serving, r.drained = fd, true, false
	done := r.step()
	r.serving = false
	return done
}

// Read reads from the socket inside Serve's step: ErrWouldBlock once the
// socket is empty (without a system call when the last read said so),
// io.EOF at the peer's end. Outside Serve it reads through the connection
// (waiting for bytes as net.Conn's Read does), counted the same.
func (r *Reader) Read(p []byte) (int, error) {
	if !r.serving {
		n, err := r.tcp.Read(p)
		if n > 0 && r.rx != nil {
			r.rx.Add(uint64(n))
		}
		return n, err
	}
	if r.drained || len(p) == 0 {
		return 0, ErrWouldBlock
	}
	n, more, err := r.Recv(r.fd, p)
	switch {
	case err == unix.EAGAIN:
		r.drained = true
		return 0, ErrWouldBlock
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	r.drained = !more
	return n, nil
}
