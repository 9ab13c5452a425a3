package mads

import (
	"bufio"
	"bytes"
	"net"
	"time"

	"github.com/kumametrics/mesh/pkg/netfeed"
	"github.com/kumametrics/mesh/pkg/netserve"
)

// http2Preface opens every HTTP/2 connection with prior knowledge, as gRPC
// clients make them.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// sniffTimeout bounds how long a new connection may take to send its first bytes.
const sniffTimeout = 10 * time.Second

// splitter hands every connection accepted on a listener to the gRPC server
// (HTTP/2 preface) or to the HTTP server (anything else). Connections are
// sniffed concurrently, so a slow client delays only itself.
type splitter struct {
	ln     net.Listener
	accept netserve.AcceptOptions
	panics *netserve.Panics
	grpc   *netfeed.Listener
	http   *netfeed.Listener
}

func newSplitter(ln net.Listener, accept netserve.AcceptOptions) *splitter {
	return &splitter{
		ln: ln, accept: accept, panics: &netserve.Panics{Name: accept.Name, Log: accept.Log},
		grpc: netfeed.New(ln.Addr()), http: netfeed.New(ln.Addr()),
	}
}

// run accepts until the listener is closed (nil) or fails for good (the
// error); temporary failures (out of file descriptors) are retried.
func (s *splitter) run() error {
	defer s.closeFeeds()
	err := netserve.Serve(s.ln, s.accept, func(c net.Conn) { go s.route(c) })
	if err != nil {
		s.accept.Log.Error("the monitoring assignment server stopped accepting connections", "err", err)
	}
	return err
}

func (s *splitter) route(c net.Conn) {
	defer s.panics.Recover(c)
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	r := bufio.NewReaderSize(c, 4096)
	isGRPC := false
	for n := 1; n <= len(http2Preface); n++ {
		b, err := r.Peek(n)
		if err != nil {
			_ = c.Close()
			return
		}
		if b[n-1] != http2Preface[n-1] {
			break
		}
		if n == len(http2Preface) {
			isGRPC = bytes.Equal(b, http2Preface)
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: r}
	target := s.http
	if isGRPC {
		target = s.grpc
	}
	if !target.Feed(pc) {
		_ = c.Close()
	}
}

func (s *splitter) close() {
	_ = s.ln.Close()
	s.closeFeeds()
}

func (s *splitter) closeFeeds() {
	_ = s.grpc.Close()
	_ = s.http.Close()
}

// peekedConn reads first what was peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
