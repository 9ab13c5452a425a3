package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// roundTripper sends one request on a persistent connection and reads its
// whole response. It must not allocate: it runs once per request.
type roundTripper interface {
	roundTrip() error
	close()
}

// dialSlots opens one connection with slots request slots on it (more than
// one only in the HTTP/2 modes).
func dialSlots(c config, deadline time.Time, slots int) ([]roundTripper, error) {
	if c.mode == "h2c" || c.mode == "grpc" {
		return dialH2(c, deadline, slots)
	}
	rt, err := dial(c, deadline)
	if err != nil {
		return nil, err
	}
	return []roundTripper{rt}, nil
}

// dialConn connects to c.addr with one deadline for the whole run instead
// of one per request: a hung path fails the run at the latest at its
// planned end plus -timeout.
func dialConn(c config, deadline time.Time) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func dial(c config, deadline time.Time) (roundTripper, error) {
	conn, err := dialConn(c, deadline)
	if err != nil {
		return nil, err
	}
	if c.mode == "tcp" {
		msg := make([]byte, c.size)
		for i := range msg {
			msg[i] = byte('a' + i%26)
		}
		return &echoConn{conn: conn, msg: msg, buf: make([]byte, c.size)}, nil
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bench-loadgen\r\n\r\n", c.path, c.host)
	return &httpConn{conn: conn, br: bufio.NewReaderSize(conn, 16<<10), req: []byte(req)}, nil
}

// httpConn is a minimal HTTP/1.1 keep-alive client: it writes a prebuilt GET
// and accepts only "200" answers framed by Content-Length on a connection
// that stays open.
type httpConn struct {
	conn net.Conn
	br   *bufio.Reader
	req  []byte
}

var (
	errNoLength  = errors.New("response without Content-Length (chunked or close-delimited bodies are not accepted)")
	errConnClose = errors.New("server asked to close the connection (Connection: close): configure keep-alive without a request limit")
)

func (h *httpConn) roundTrip() error {
	if _, err := h.conn.Write(h.req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	line, err := h.br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("reading status line: %w", eofIsShort(err))
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return fmt.Errorf("malformed status line %q", bytes.TrimSpace(line))
	}
	if line[9] != '2' || line[10] != '0' || line[11] != '0' || (len(line) > 12 && line[12] != ' ' && line[12] != '\r') {
		return fmt.Errorf("status %q, want 200", bytes.TrimSpace(line))
	}
	http10 := line[7] == '0'
	length := -1
	keepAlive := false
	for {
		line, err = h.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("reading headers: %w", eofIsShort(err))
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("malformed header line %q", bytes.TrimSpace(line))
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, ok := parseLength(value)
			if !ok {
				return fmt.Errorf("bad Content-Length %q", value)
			}
			length = n
		case asciiEqualFold(name, "transfer-encoding"):
			return errNoLength
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(value, "close") {
				return errConnClose
			}
			keepAlive = asciiEqualFold(value, "keep-alive")
		}
	}
	if http10 && !keepAlive {
		return errConnClose
	}
	if length < 0 {
		return errNoLength
	}
	if n, err := h.br.Discard(length); err != nil {
		return fmt.Errorf("short body: %d of %d bytes: %w", n, length, eofIsShort(err))
	}
	return nil
}

func (h *httpConn) close() { h.conn.Close() }

// echoConn writes a fixed message and expects it back byte for byte.
type echoConn struct {
	conn net.Conn
	msg  []byte
	buf  []byte
}

func (e *echoConn) roundTrip() error {
	if _, err := e.conn.Write(e.msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n, err := io.ReadFull(e.conn, e.buf); err != nil {
		return fmt.Errorf("short echo: %d of %d bytes: %w", n, len(e.buf), eofIsShort(err))
	}
	if !bytes.Equal(e.buf, e.msg) {
		return errors.New("echo differs from the message sent")
	}
	return nil
}

func (e *echoConn) close() { e.conn.Close() }

// parseLength parses a decimal Content-Length without allocating.
func parseLength(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 12 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func eofIsShort(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

func probe(c config) error {
	rts, err := dialSlots(c, time.Now().Add(5*time.Second), 1)
	if err != nil {
		return err
	}
	defer rts[0].close()
	return rts[0].roundTrip()
}
