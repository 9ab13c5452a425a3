package proxy

import (
	"context"
	"io"
	"net"
	"sync"

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
		pipe(up, down)
	}()
	pipe(down, up)
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

// pipe copies src to dst, then half-closes dst (or closes it).
func pipe(dst, src net.Conn) {
	bp := copyBuffers.Get().(*[]byte)
	_, _ = io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
	copyBuffers.Put(bp)
	if hc, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = hc.CloseWrite()
	} else {
		_ = dst.Close()
	}
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
