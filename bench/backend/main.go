// Command backend is the upstream of the proxy benchmarks: an HTTP/1.1
// server that answers every request with 200 and a fixed body (1 KiB by
// default), a TCP echo server, an HTTP/2 server with prior knowledge (h2c,
// net/http) with the same answer, and a gRPC server (grpc-go) whose unary
// call (bench/internal/benchgrpc) answers with a BytesValue of that size.
//
// The HTTP side is hand-written (request line, headers, Content-Length
// bodies; one prebuilt answer written with a single write) so that it costs
// a few microseconds per request and is never the bottleneck: it shares a
// CPU with the load generator.
//
//	backend -http 127.0.0.1:18001 -tcp 127.0.0.1:18002 -h2c 127.0.0.1:18003 -grpc 127.0.0.1:18004
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/kumametrics/mesh/bench/internal/benchgrpc"
	"github.com/kumametrics/mesh/pkg/netserve"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18001", "HTTP listen address (empty: off)")
	tcpAddr := flag.String("tcp", "127.0.0.1:18002", "TCP echo listen address (empty: off)")
	h2cAddr := flag.String("h2c", "", "HTTP/2 (h2c, prior knowledge) listen address (empty: off)")
	grpcAddr := flag.String("grpc", "", "gRPC (h2c) listen address (empty: off)")
	size := flag.Int("body", 1024, "HTTP response body size in bytes (also the gRPC answer's BytesValue)")
	flag.Parse()

	answer := httpAnswer(*size)
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			fatal(err)
		}
		go serve(ln, func(c net.Conn) { serveHTTP(c, answer) })
	}
	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			fatal(err)
		}
		go serve(ln, serveEcho)
	}
	if *h2cAddr != "" {
		ln, err := net.Listen("tcp", *h2cAddr)
		if err != nil {
			fatal(err)
		}
		go func() { fatal(newH2CServer(*size).Serve(ln)) }()
	}
	if *grpcAddr != "" {
		ln, err := net.Listen("tcp", *grpcAddr)
		if err != nil {
			fatal(err)
		}
		go func() { fatal(newGRPCServer(*size).Serve(ln)) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "backend:", err)
	os.Exit(1)
}

func serve(ln net.Listener, handle func(net.Conn)) {
	// Under heavy load accepts may fail for a while (out of descriptors):
	// they are retried; only a permanent failure ends the backend.
	err := netserve.Serve(ln, netserve.AcceptOptions{Name: ln.Addr().String()}, func(c net.Conn) {
		go func() {
			defer c.Close()
			handle(c)
		}()
	})
	if err != nil {
		fatal(err)
	}
}

func httpAnswer(size int) []byte {
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size)
	return append([]byte(head), body...)
}

var errBadRequest = errors.New("bad request")

// serveHTTP answers the requests of one connection until the client closes
// it or asks for close. Pipelined requests are answered in order.
func serveHTTP(c net.Conn, answer []byte) {
	br := bufio.NewReaderSize(c, 16<<10)
	for {
		keepAlive, err := readRequest(br)
		if err != nil {
			if errors.Is(err, errBadRequest) {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			return
		}
		if _, err := c.Write(answer); err != nil || !keepAlive {
			return
		}
	}
}

// readRequest consumes one request (line, headers, Content-Length body) and
// reports whether the connection stays open after the answer.
func readRequest(br *bufio.Reader) (keepAlive bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	// "GET / HTTP/1.1\r\n"
	proto := bytes.TrimRight(line, "\r\n")
	if i := bytes.LastIndexByte(proto, ' '); i > 0 {
		proto = proto[i+1:]
	}
	switch string(proto) { // no allocation: the conversion is only compared
	case "HTTP/1.1":
		keepAlive = true
	case "HTTP/1.0":
	default:
		return false, errBadRequest
	}
	length := 0
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return false, err
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false, errBadRequest
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			length = 0
			for _, d := range value {
				if d < '0' || d > '9' || length > 1<<30 {
					return false, errBadRequest
				}
				length = length*10 + int(d-'0')
			}
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			return false, errBadRequest // request bodies must have a length
		case bytes.EqualFold(name, []byte("connection")):
			if bytes.EqualFold(value, []byte("close")) {
				keepAlive = false
			} else if bytes.EqualFold(value, []byte("keep-alive")) {
				keepAlive = true
			}
		}
	}
	if _, err := br.Discard(length); err != nil {
		return false, err
	}
	return keepAlive, nil
}

// serveEcho writes back whatever it reads.
func serveEcho(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// newH2CServer answers every request, over HTTP/2 with prior knowledge
// only, with 200 and the same body as the HTTP/1.1 server.
func newH2CServer(size int) *http.Server {
	body := httpAnswer(size)
	body = body[len(body)-size:]
	length := []string{strconv.Itoa(size)}
	ctype := []string{"application/octet-stream"}
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Protocols:         &p,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Minute,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"], h["Content-Length"] = ctype, length
			_, _ = w.Write(body)
		}),
	}
}

// newGRPCServer serves the benchmarks' unary call, answering with size bytes.
func newGRPCServer(size int) *grpc.Server {
	s := grpc.NewServer()
	benchgrpc.Register(s, size)
	return s
}
