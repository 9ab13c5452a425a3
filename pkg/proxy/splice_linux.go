//go:build linux

package proxy

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/pkg/stats"
)

// spliceMax is the most one splice is asked to move: more than a pipe
// holds, so each call moves what the pipe takes.
const spliceMax = 1 << 20

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

// splicePipe moves src to dst with splice(2) when both are plain TCP
// below the proxy's own wrappers, counting each chunk into the wrappers'
// counters as it moves. It returns false, having moved nothing, when the
// fast path does not apply; true when src is done (EOF or an error).
func splicePipe(dst, src net.Conn, paths *pipePaths) bool {
	se, ok := unwrapTCP(src, true)
	if !ok {
		return false
	}
	de, ok := unwrapTCP(dst, false)
	if !ok {
		return false
	}
	p, _ := kernelPipes.Get().(*kernelPipe)
	if p == nil {
		return false
	}
	paths.spliced.Add(1)
	if se.ahead > 0 {
		if err := handOn(dst, src, se.ahead); err != nil {
			kernelPipes.Put(p)
			return true
		}
	}
	empty, unsupported := spliceLoop(p, de.tcp, se.tcp, se.rx, de.tx)
	if empty {
		kernelPipes.Put(p)
	} else {
		p.close()
	}
	if unsupported {
		// Nothing is held in the pipe: the copy goes on from where the
		// kernel stopped.
		copyPipe(dst, src, paths)
	}
	return true
}

// spliceLoop moves src to dst through p until src ends or either fails,
// the netpoller waiting for readiness. empty says whether p holds no
// bytes at the end; unsupported that the kernel refused to splice from
// src (EINVAL, ENOSYS) with p empty.
func spliceLoop(p *kernelPipe, dst, src *net.TCPConn, rx, tx *stats.Counter) (empty, unsupported bool) {
	rc, err := src.SyscallConn()
	if err != nil {
		return true, false
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		return true, false
	}
	var n, m int64
	var serr error
	read := func(fd uintptr) bool {
		for {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, spliceMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	}
	left := 0
	write := func(fd uintptr) bool {
		for {
			m, serr = unix.Splice(p.r, nil, int(fd), nil, left, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	}
	for {
		if err := rc.Read(read); err != nil {
			return true, false // closed, or past a deadline
		}
		if serr != nil {
			return true, errors.Is(serr, syscall.EINVAL) || errors.Is(serr, syscall.ENOSYS)
		}
		if n == 0 {
			return true, false // EOF
		}
		if rx != nil {
			rx.Add(uint64(n))
		}
		for left = int(n); left > 0; {
			if err := wc.Write(write); err != nil || serr != nil || m <= 0 {
				return false, false
			}
			left -= int(m)
			if tx != nil {
				tx.Add(uint64(m))
			}
		}
	}
}
