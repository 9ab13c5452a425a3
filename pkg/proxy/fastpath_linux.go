//go:build linux

package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/pkg/proxy/sock"
	"github.com/kumametrics/mesh/pkg/stats"
)

// spliceMax is the most one splice is asked to move: more than a pipe
// holds, so each call moves what the pipe takes.
const spliceMax = 1 << 20

// bulkMin is the least a splice must move for the next read to splice
// too: below it the direction goes back to read(2) and write(2), cheaper
// for small messages than two splices and a pipe.
const bulkMin = 32 << 10

// kernelPipe is a pipe pair the bytes of one direction pass through inside
// the kernel.
type kernelPipe struct {
	r, w    int
	cleanup runtime.Cleanup
}

// close closes the pipe now (it held bytes when its pipe ended).
func (p *kernelPipe) close() {
	p.cleanup.Stop()
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// kernelPipes holds empty pipes; a pipe the pool drops is closed by its
// cleanup.
var kernelPipes = sync.Pool{New: func() any {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	p := &kernelPipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, func(fds [2]int) {
		_ = unix.Close(fds[0])
		_ = unix.Close(fds[1])
	}, fds)
	return p
}}

// recheckEvery is how long a relay that trusts TCP_INQ waits for
// readiness before it asks the socket once more: a reset that arrived
// together with the last bytes (which TCP_INQ does not tell, unlike a
// FIN) is seen at the latest this long after.
const recheckEvery = 30 * time.Second

// recheckTest, when not zero, replaces recheckEvery (nanoseconds; tests).
var recheckTest atomic.Int64

// recheckAt is when a relay trusting TCP_INQ asks its socket next.
func recheckAt() time.Time {
	if d := recheckTest.Load(); d != 0 {
		return time.Now().Add(time.Duration(d))
	}
	return time.Now().Add(recheckEvery)
}

// fastPipe moves src to dst on the sockets themselves when each is plain
// TCP below the proxy's own wrappers, or a TLS connection over such a
// socket (sock.Conn), counting what each system call moved into the
// wrappers' counters. applied is false, nothing moved, when the fast path
// does not apply; failed says src or dst failed (not a plain end of src).
func fastPipe(dst, src net.Conn, paths *pipePaths) (applied, failed bool) {
	var r relay
	ahead, ok := r.readsFrom(src)
	if !ok || !r.writesTo(dst) {
		return false, false
	}
	paths.spliced.Add(1)
	if ahead > 0 {
		if err := handOn(dst, src, ahead); err != nil {
			return true, true
		}
	}
	mode := pathMode.Load()
	r.spliceOnly = mode == pathSplice && !r.noSplice
	r.splicing = r.spliceOnly
	r.inq = mode == pathFast && r.rd.Inq()
	if r.inq {
		_ = r.src.SetReadDeadline(recheckAt())
	}
	r.run()
	return true, r.failed
}

// readsFrom readies the relay's reads of src: on its socket, or through
// its TLS connection over the socket. ahead is what src's wrappers read
// ahead (plain src only: a TLS connection's wrappers must hold none).
func (r *relay) readsFrom(src net.Conn) (ahead int, ok bool) {
	if tc, isTLS := src.(*tls.Conn); isTLS {
		sc, ok := tc.NetConn().(*sock.Conn)
		if !ok {
			return 0, false
		}
		if e, ok := sock.Unwrap(sc.Conn, true); !ok || e.Ahead > 0 {
			return 0, false
		}
		if r.rd = sc.Reader(); r.rd == nil {
			return 0, false
		}
		r.tlsSrc, r.src, r.noSplice = tc, sc.TCP(), true
	} else {
		se, ok := sock.Unwrap(src, true)
		if !ok {
			return 0, false
		}
		if r.rd = sock.NewReader(se.TCP, se.Rx); r.rd == nil {
			return 0, false
		}
		r.src, r.rx, ahead = se.TCP, se.Rx, se.Ahead
	}
	r.rc = r.rd.RawConn()
	return ahead, true
}

// writesTo readies the relay's writes to dst: on its socket, or through
// its TLS connection over the socket.
func (r *relay) writesTo(dst net.Conn) bool {
	if tc, isTLS := dst.(*tls.Conn); isTLS {
		sc, ok := tc.NetConn().(*sock.Conn)
		if !ok {
			return false
		}
		r.tlsDst, r.dstSock, r.noSplice = tc, sc, true
		return true
	}
	de, ok := sock.Unwrap(dst, false)
	if !ok {
		return false
	}
	wc, err := de.TCP.SyscallConn()
	if err != nil {
		return false
	}
	r.wc, r.tx = wc, de.Tx
	return true
}

// relay moves the bytes of one direction, src (rc) to dst (wc), with
// system calls on the two sockets. Small reads go through a pooled
// buffer with recvmsg(2) and write(2); a read that fills the buffer
// turns to splice(2) through a kernel pipe until the flow is small again.
// A TLS side is read or written through its tls.Conn, over the same
// system calls: src's inside the poller's read callback (rd.Serve), dst's
// without waiting there (sock.Conn's TryWrites); TLS never splices.
//
// With TCP_INQ the kernel says with each read whether the socket holds
// more (bytes or an end): when it holds none, the relay waits for the
// poller's next readiness instead of asking once more only to be told
// EAGAIN, one system call per read saved (haproxy's "buffer exhausted"
// rule, made safe against a FIN that arrived with the last bytes).
type relay struct {
	rd     *sock.Reader // src's reads
	rc, wc syscall.RawConn
	src    *net.TCPConn
	rx, tx *stats.Counter

	// tlsSrc: src is read through TLS (rd's socket below it). tlsDst: dst
	// is written through TLS, over dstSock.
	tlsSrc, tlsDst *tls.Conn
	dstSock        *sock.Conn
	// held: dstSock holds bytes of a TLS write that wait for dst.
	held bool

	readFn, writeFn, tryFn func(fd uintptr) bool
	stepFn                 func() bool
	werr                   error // the last write's error (tryFn)

	// inq: the relay trusts what the socket reports with each read
	// (TCP_INQ); src's read deadline makes it ask the socket once every
	// recheckEvery.
	inq bool
	// spliceOnly: every read splices (the path before the relay; kept to
	// compare). splicing: the next read splices. noSplice: the kernel
	// refused to splice from src, or a side is TLS.
	spliceOnly, splicing, noSplice bool

	pipe *kernelPipe // while splicing
	buf  *[]byte     // while a read's bytes wait to leave
	out  []byte      // what is left to write of buf
	left int         // what is left to write of pipe

	done   bool // src ended, or either side failed
	failed bool // either side failed
}

// run relays until src ends or either side fails. A read's bytes are
// written inside the read's callback as far as dst takes them without
// waiting; the rest is written after it, outside src's read lock, so that
// closing src never waits on dst.
func (r *relay) run() {
	r.readFn, r.writeFn, r.tryFn, r.stepFn = r.readable, r.writable, r.tryWrite, r.readTLS
	for !r.done {
		var err error
		if r.tlsSrc != nil {
			err = r.rd.Serve(r.stepFn)
		} else {
			err = r.rc.Read(r.readFn)
		}
		if err != nil {
			if r.inq && errors.Is(err, os.ErrDeadlineExceeded) {
				// The next read asks the socket before it waits.
				_ = r.src.SetReadDeadline(recheckAt())
				continue
			}
			r.failed = true // closed
			break
		}
		if r.done {
			break
		}
		if err := r.writeWaiting(); err != nil {
			r.failed = true
		}
		if r.done || r.failed {
			break
		}
		r.release()
	}
	r.release()
	if r.pipe != nil {
		if r.left == 0 {
			kernelPipes.Put(r.pipe)
		} else {
			r.pipe.close()
		}
		r.pipe = nil
	}
}

// writeWaiting writes what waits for dst, waiting for dst to take it.
func (r *relay) writeWaiting() error {
	if r.tlsDst != nil {
		r.held = false
		return r.dstSock.Flush()
	}
	return r.wc.Write(r.writeFn)
}

// waits says whether bytes wait for dst.
func (r *relay) waits() bool { return len(r.out) > 0 || r.left > 0 || r.held }

// release gives the read buffer back once its bytes have left.
func (r *relay) release() {
	if r.buf != nil && len(r.out) == 0 {
		copyBuffers.Put(r.buf)
		r.buf = nil
	}
}

// readable reads from src and writes to dst as far as it can without
// waiting for dst. It returns false to wait for src to be readable; true
// when src is done or when bytes wait for dst.
func (r *relay) readable(fd uintptr) bool {
	for {
		var more bool
		if r.splicing {
			more = r.spliceIn(int(fd))
		} else {
			more = r.readIn(int(fd))
		}
		if r.done || r.waits() {
			return true
		}
		if !more {
			return false
		}
	}
}

// readIn reads once into a pooled buffer and writes what it read. more
// says whether src may hold more (false: wait for readiness first).
func (r *relay) readIn(fd int) (more bool) {
	r.buf = copyBuffers.Get().(*[]byte)
	n, more, err := r.rd.Recv(uintptr(fd), *r.buf)
	switch {
	case err == unix.EAGAIN:
		r.release()
		return false
	case err != nil || n == 0:
		r.release()
		r.done, r.failed = true, err != nil
		return false
	}
	r.out = (*r.buf)[:n]
	r.writeOut()
	if r.done || r.waits() {
		return false
	}
	full := n == len(*r.buf)
	r.release()
	if full && !r.noSplice {
		r.splicing = true // bulk: the kernel moves it from now on
	}
	// Without TCP_INQ only EAGAIN says src is empty.
	return !r.inq || more
}

// readTLS reads src through TLS inside the poller's read callback (the
// step of rd.Serve) and writes what it decrypts as readable does. The TLS
// connection reads the socket through rd: ErrWouldBlock when it is empty,
// which leaves any part of a record read in the connection's buffer.
func (r *relay) readTLS() bool {
	for {
		r.buf = copyBuffers.Get().(*[]byte)
		n, err := r.tlsSrc.Read(*r.buf)
		if n > 0 {
			r.out = (*r.buf)[:n]
			r.writeOut()
			if r.done || r.waits() {
				return true // an end or an error comes again with the next read
			}
		}
		r.release()
		switch {
		case err == nil:
		case err == sock.ErrWouldBlock:
			return false
		default:
			r.done, r.failed = true, err != io.EOF
			return true
		}
	}
}

// writeOut writes what waits to dst as far as dst takes it without
// waiting. Through TLS, all of it is written: what dst does not take
// waits in dstSock (held).
func (r *relay) writeOut() {
	if r.tlsDst != nil {
		r.dstSock.TryWrites(true)
		_, err := r.tlsDst.Write(r.out)
		r.dstSock.TryWrites(false)
		r.out = r.out[:0]
		r.held = r.dstSock.Pending() > 0
		if err != nil {
			r.done, r.failed = true, true
		}
		return
	}
	if err := r.wc.Write(r.tryFn); err != nil || (r.werr != nil && r.werr != unix.EAGAIN) {
		r.done, r.failed = true, true
	}
}

// tryWrite writes what waits to dst once, never waiting (writeOut).
func (r *relay) tryWrite(fd uintptr) bool {
	r.werr = r.write(int(fd))
	return true
}

// writable writes what waits to dst; false to wait for dst to be
// writable.
func (r *relay) writable(fd uintptr) bool {
	err := r.write(int(fd))
	if err == unix.EAGAIN {
		return false
	}
	if err != nil {
		r.done, r.failed = true, true
	}
	return true
}

// write writes r.out, or what the pipe holds, to fd until done or EAGAIN.
func (r *relay) write(fd int) error {
	if len(r.out) > 0 {
		n, err := sock.WriteFD(fd, r.out, r.tx)
		r.out = r.out[n:]
		if err != nil {
			return err
		}
	}
	for r.left > 0 {
		m, err := unix.Splice(r.pipe.r, nil, fd, nil, r.left, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if m <= 0 {
			return unix.EPIPE
		}
		r.left -= int(m)
		if r.tx != nil {
			r.tx.Add(uint64(m))
		}
	}
	return nil
}

// spliceIn splices once from src into the pipe and on to dst. more says
// whether src may hold more.
func (r *relay) spliceIn(fd int) (more bool) {
	if r.pipe == nil {
		p, _ := kernelPipes.Get().(*kernelPipe)
		if p == nil {
			r.splicing, r.noSplice = false, true
			return true
		}
		r.pipe = p
	}
	var n int64
	var err error
	for {
		n, err = unix.Splice(fd, nil, r.pipe.w, nil, spliceMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.EAGAIN:
		r.dropPipe()
		return false
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS):
		// Nothing is held in the pipe: reads go on from where the
		// kernel stopped.
		r.noSplice = true
		r.dropPipe()
		return true
	case err != nil || n == 0:
		r.done, r.failed = true, err != nil
		return false
	}
	if r.rx != nil {
		r.rx.Add(uint64(n))
	}
	r.left = int(n)
	r.writeOut()
	if r.done || r.waits() {
		return false
	}
	if n < bulkMin {
		r.dropPipe()
	}
	return true
}

// dropPipe gives the (empty) pipe back and turns to reads, unless every
// read splices.
func (r *relay) dropPipe() {
	if r.spliceOnly && !r.noSplice {
		return
	}
	r.splicing = false
	if r.pipe != nil {
		kernelPipes.Put(r.pipe)
		r.pipe = nil
	}
}
