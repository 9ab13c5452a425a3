package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/kumametrics/mesh/pkg/netserve"
)

// newHandler builds the handler of a route.
func (p *Proxy) newHandler(rt route) connHandler {
	switch rt.protocol {
	case "http":
		return p.newHTTP1(rt)
	case "http2", "grpc":
		return newHTTP2(p, rt)
	case protocolPassthrough:
		return p.newPassthrough(rt)
	}
	c := rt.cluster
	return &tcpProxy{c: c, log: p.log, panics: rt.panics, upstream: func(ctx context.Context, _ net.Conn) (net.Conn, error) {
		conn, _, err := c.Dial(ctx)
		return conn, err
	}}
}

// tcpProxy copies bytes between a downstream connection and an upstream
// connection of its cluster.
type tcpProxy struct {
	c   *cluster
	log interface {
		Debug(msg string, args ...any)
	}
	panics *netserve.Panics
	// upstream connects for a downstream connection: to an endpoint of the
	// cluster, or to a passthrough's original destination.
	upstream func(ctx context.Context, down net.Conn) (net.Conn, error)
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (t *tcpProxy) ServeConn(down net.Conn, external bool) {
	up, err := t.upstream(context.Background(), down)
	if err != nil {
		t.log.Debug("tcp: no upstream", "cluster", t.c.name, "err", err)
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		defer t.panics.Recover(closers{up, down})
		pipe(up, down, &t.c.pipes)
	}()
	pipe(down, up, &t.c.pipes)
	<-done
}

// closers closes every connection it holds.
type closers []io.Closer

func (cs closers) Close() error {
	for _, c := range cs {
		_ = c.Close()
	}
	return nil
}

// pipe moves src to dst, then half-closes dst (or closes it): on the
// sockets themselves when both are plain TCP below the proxy's own
// wrappers, through a user-space buffer otherwise (mTLS, or no fast path
// on this system). When either side fails (a reset, a write that cannot
// go), it closes both: the other direction ends too and each peer sees
// its connection end, not a half-close that waits for more.
func pipe(dst, src net.Conn, paths *pipePaths) {
	applied, failed := false, false
	if pathMode.Load() != pathCopy {
		applied, failed = fastPipe(dst, src, paths)
	}
	if !applied {
		failed = copyPipe(dst, src, paths)
	}
	if failed {
		_ = src.Close()
		_ = dst.Close()
		return
	}
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

// pipePaths counts the directions of a cluster's connections each path
// started to move (a debug counter the tests read to see which path was
// taken; not exported as a statistic).
type pipePaths struct{ spliced, copied atomic.Uint64 }

// The TCP paths a direction can take; pathMode picks one for benchmarks
// comparing them (pathFast otherwise).
const (
	pathFast      = iota // system calls on the sockets, counted from their results
	pathFastNoInq        // the same, asking the socket until EAGAIN (TCP_INQ not trusted)
	pathSplice           // every read spliced (the fast path before the relay)
	pathCopy             // the user-space copy through the wrappers
)

var pathMode atomic.Int32

// copyPipe copies src to dst through a pooled buffer, every byte through
// the wrappers (which count it); failed says src or dst failed (not a
// plain end of src).
func copyPipe(dst, src net.Conn, paths *pipePaths) (failed bool) {
	paths.copied.Add(1)
	bp := copyBuffers.Get().(*[]byte)
	_, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	copyBuffers.Put(bp)
	return err != nil
}

// handOn copies the n bytes src's wrappers read ahead to dst, through the
// wrappers (which count them).
func handOn(dst, src net.Conn, n int) error {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	for n > 0 {
		k, err := src.Read((*bp)[:min(n, len(*bp))])
		if k > 0 {
			if _, werr := dst.Write((*bp)[:k]); werr != nil {
				return werr
			}
			n -= k
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// closeWrite half-closes c when it supports it (a TCP connection): the
// CloseWrite of the connection wrappers that pipe half-closes.
func closeWrite(c net.Conn) error {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo so that io.CopyBuffer
// uses the buffer and the counting wrappers see every byte.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func (t *tcpProxy) Drain(context.Context) {}
func (t *tcpProxy) Close()                {}
