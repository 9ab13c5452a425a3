package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/bench/internal/benchgrpc"
)

// The receive windows the client announces: large enough that the servers
// never wait for a WINDOW_UPDATE in a run (each stream receives ~1 KiB).
const (
	h2StreamWindow = 1 << 24
	h2ConnWindow   = 1 << 30
	// h2Refill: the connection's window is topped up once this much was received.
	h2Refill = 1 << 28
)

// h2Conn is one HTTP/2 connection with prior knowledge (h2c) shared by
// several stream slots: each slot (an h2Stream, one roundTripper) has at
// most one request in flight, so a connection carries up to as many
// concurrent streams as it has slots. Its reader goroutine reads every frame
// and completes the slot whose stream the frame ends.
type h2Conn struct {
	conn    net.Conn
	bw      *bufio.Writer
	fr      *http2.Framer
	grpc    bool
	size    int    // expected body (h2c) or BytesValue (gRPC) size
	block   []byte // the request's header block, encoded once (no dynamic table entries)
	reqData []byte // gRPC: the request message (an empty BytesValue), length-prefixed

	wmu        sync.Mutex // frame writes and stream ids
	nextID     uint32
	flushes    chan struct{} // a request waits in bw for flush
	dead       chan struct{} // closed when the reader stopped
	sendWindow int64         // connection-level send window (gRPC request bodies)

	mu      sync.Mutex
	streams map[uint32]*h2Stream
	rerr    error // set when the reader stopped: every later request fails with it

	dec       *hpack.Decoder
	cur       *h2Stream // the stream whose header block dec is decoding
	unacked   int       // DATA bytes received and not yet returned by WINDOW_UPDATE
	closeOnce sync.Once
}

// h2Stream is one slot of an h2Conn: one request at a time.
type h2Stream struct {
	c    *h2Conn
	done chan error
	// The response, filled by the reader.
	trailers   bool // the header block being decoded is the trailers
	status     int
	length     int // content-length, -1 when absent
	grpcStatus string
	grpcMsg    string
	gotGRPC    bool // grpc-status seen
	body       int  // DATA bytes received
	msg        []byte
	err        error // first problem found while decoding
}

var errH2GoAway = errors.New("server sent GOAWAY")

// dialH2 opens one h2c connection for slots stream slots.
func dialH2(c config, deadline time.Time, slots int) ([]roundTripper, error) {
	conn, err := dialConn(c, deadline)
	if err != nil {
		return nil, err
	}
	h := &h2Conn{
		conn: conn, bw: bufio.NewWriterSize(conn, 16<<10), grpc: c.mode == "grpc", size: c.size,
		nextID: 1, flushes: make(chan struct{}, 1), dead: make(chan struct{}), sendWindow: 65535, streams: make(map[uint32]*h2Stream, slots),
	}
	h.fr = http2.NewFramer(h.bw, bufio.NewReaderSize(conn, 64<<10))
	h.fr.SetReuseFrames() // a frame is used before the next is read
	h.dec = hpack.NewDecoder(4096, h.onField)
	h.block = requestBlock(c)
	if h.grpc {
		h.reqData = []byte{0, 0, 0, 0, 0} // uncompressed, 0 bytes: an empty BytesValue
	}
	// The preface, our settings, and the connection window.
	if _, err := h.bw.WriteString(http2.ClientPreface); err == nil {
		err = h.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow})
		if err == nil {
			err = h.fr.WriteWindowUpdate(0, h2ConnWindow-65535)
		}
		if err == nil {
			err = h.bw.Flush()
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	go h.read()
	go h.flush()
	rts := make([]roundTripper, slots)
	for i := range rts {
		rts[i] = &h2Stream{c: h, done: make(chan error, 1), msg: make([]byte, 0, 5+benchgrpc.Encoded(c.size))}
	}
	return rts, nil
}

// requestBlock encodes the request's headers once. Every field outside
// HPACK's static table is a never-indexed literal, so the block changes no
// dynamic table and can be sent again as it is.
func requestBlock(c config) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	path := c.path
	fields := []hpack.HeaderField{{Name: ":method", Value: "GET"}}
	if c.mode == "grpc" {
		if path == "/" {
			path = benchgrpc.Path
		}
		fields[0].Value = "POST"
	}
	fields = append(fields, hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":path", Value: path},
		hpack.HeaderField{Name: ":authority", Value: c.host})
	if c.mode == "grpc" {
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "application/grpc"},
			hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	fields = append(fields, hpack.HeaderField{Name: "user-agent", Value: "bench-loadgen"})
	for _, f := range fields {
		f.Sensitive = true
		_ = enc.WriteField(f) // writes to a bytes.Buffer cannot fail
	}
	return buf.Bytes()
}

func (s *h2Stream) roundTrip() error {
	h := s.c
	s.trailers, s.status, s.length, s.gotGRPC, s.body, s.msg, s.err = false, 0, -1, false, 0, s.msg[:0], nil
	s.grpcStatus, s.grpcMsg = "", ""
	h.wmu.Lock()
	id := h.nextID
	h.nextID += 2
	h.mu.Lock()
	if h.rerr != nil {
		h.mu.Unlock()
		h.wmu.Unlock()
		return h.rerr
	}
	h.streams[id] = s
	h.mu.Unlock()
	err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block, EndStream: !h.grpc, EndHeaders: true})
	if err == nil && h.grpc {
		if h.sendWindow < int64(len(h.reqData)) {
			err = errors.New("the server's flow-control window for the connection is exhausted (it sent no WINDOW_UPDATE)")
		} else {
			h.sendWindow -= int64(len(h.reqData))
			err = h.fr.WriteData(id, true, h.reqData)
		}
	}
	h.wmu.Unlock()
	if err != nil {
		h.conn.Close() // the reader fails every stream, this one included
		return fmt.Errorf("write: %w", err)
	}
	select {
	case h.flushes <- struct{}{}:
	default: // a flush is already due: it sends these frames too
	}
	return <-s.done
}

// flush writes out the buffered requests. It first yields, so that the
// other slots made ready by the same read queue their requests behind this
// one: the requests of one batch leave in one write, as a pipelining
// client's do, instead of a syscall each.
func (h *h2Conn) flush() {
	for {
		select {
		case <-h.flushes:
		case <-h.dead:
			return
		}
		runtime.Gosched()
		h.wmu.Lock()
		err := h.bw.Flush()
		h.wmu.Unlock()
		if err != nil {
			h.conn.Close() // the reader fails every stream in flight
			return
		}
	}
}

func (s *h2Stream) close() {
	s.c.closeOnce.Do(func() { s.c.conn.Close() })
}

// read reads frames until the connection fails or closes, then fails every
// stream in flight and every later request with the reason.
func (h *h2Conn) read() {
	err := h.readFrames()
	h.conn.Close()
	h.mu.Lock()
	h.rerr = err
	close(h.dead)
	for id, s := range h.streams {
		s.done <- err
		delete(h.streams, id)
	}
	h.mu.Unlock()
}

func (h *h2Conn) stream(id uint32) *h2Stream {
	h.mu.Lock()
	s := h.streams[id]
	h.mu.Unlock()
	return s
}

// finish completes s (stream id) with its verdict.
func (h *h2Conn) finish(id uint32, s *h2Stream, err error) {
	h.mu.Lock()
	delete(h.streams, id)
	h.mu.Unlock()
	s.done <- err
}

func (h *h2Conn) readFrames() error {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("reading a frame: %w", eofIsShort(err))
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := h.write(func() error { return h.fr.WriteSettingsAck() }); err != nil {
					return err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := h.write(func() error { return h.fr.WritePing(true, f.Data) }); err != nil {
					return err
				}
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				h.wmu.Lock()
				h.sendWindow += int64(f.Increment)
				h.wmu.Unlock()
			}
		case *http2.GoAwayFrame:
			return fmt.Errorf("%w (%v, last stream %d)", errH2GoAway, f.ErrCode, f.LastStreamID)
		case *http2.RSTStreamFrame:
			if s := h.stream(f.StreamID); s != nil {
				h.finish(f.StreamID, s, fmt.Errorf("stream reset by the server: %v", f.ErrCode))
			}
		case *http2.HeadersFrame:
			if err := h.headers(f); err != nil {
				return err
			}
		case *http2.DataFrame:
			if err := h.data(f); err != nil {
				return err
			}
		}
	}
}

// write runs one frame write from the reader and flushes it.
func (h *h2Conn) write(fn func() error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	err := fn()
	if err == nil {
		err = h.bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// headers decodes a header block (HEADERS and its CONTINUATIONs) into its
// stream. Every block is decoded, also of unknown streams: HPACK's table is
// one per connection.
func (h *h2Conn) headers(f *http2.HeadersFrame) error {
	s := h.stream(f.StreamID)
	h.cur = s
	if s != nil {
		s.trailers = s.status != 0
	}
	if _, err := h.dec.Write(f.HeaderBlockFragment()); err != nil {
		return fmt.Errorf("decoding headers: %w", err)
	}
	ended := f.HeadersEnded()
	for !ended {
		cf, err := h.fr.ReadFrame()
		if err != nil {
			return fmt.Errorf("reading a frame: %w", eofIsShort(err))
		}
		c, ok := cf.(*http2.ContinuationFrame)
		if !ok || c.StreamID != f.StreamID {
			return fmt.Errorf("expected CONTINUATION of stream %d, got %v", f.StreamID, cf.Header())
		}
		if _, err := h.dec.Write(c.HeaderBlockFragment()); err != nil {
			return fmt.Errorf("decoding headers: %w", err)
		}
		ended = c.HeadersEnded()
	}
	if err := h.dec.Close(); err != nil {
		return fmt.Errorf("decoding headers: %w", err)
	}
	h.cur = nil
	if s != nil && f.StreamEnded() {
		h.finish(f.StreamID, s, s.verdict())
	}
	return nil
}

// onField records one response header field of the current stream.
func (h *h2Conn) onField(f hpack.HeaderField) {
	s := h.cur
	if s == nil || s.err != nil {
		return
	}
	switch {
	case f.Name == ":status":
		if s.trailers {
			s.err = errors.New("trailers carry :status")
			return
		}
		n, err := strconv.Atoi(f.Value)
		if err != nil {
			s.err = fmt.Errorf("bad :status %q", f.Value)
			return
		}
		s.status = n
	case f.Name == "content-length" && !s.trailers:
		n, ok := parseLength([]byte(f.Value))
		if !ok {
			s.err = fmt.Errorf("bad content-length %q", f.Value)
			return
		}
		s.length = n
	case f.Name == "grpc-status":
		s.grpcStatus, s.gotGRPC = f.Value, true
	case f.Name == "grpc-message":
		s.grpcMsg = f.Value
	}
}

func (h *h2Conn) data(f *http2.DataFrame) error {
	h.unacked += int(f.Length)
	if h.unacked >= h2Refill {
		n := h.unacked
		h.unacked = 0
		if err := h.write(func() error { return h.fr.WriteWindowUpdate(0, uint32(n)) }); err != nil {
			return err
		}
	}
	s := h.stream(f.StreamID)
	if s == nil {
		return nil
	}
	d := f.Data()
	s.body += len(d)
	if h.grpc && len(s.msg)+len(d) <= cap(s.msg) {
		s.msg = append(s.msg, d...)
	}
	if f.StreamEnded() {
		h.finish(f.StreamID, s, s.verdict())
	}
	return nil
}

// verdict checks a whole response: HTTP/2 200 with exactly the expected
// body; for gRPC also grpc-status 0 and one uncompressed BytesValue of the
// expected size.
func (s *h2Stream) verdict() error {
	h := s.c
	if s.err != nil {
		return s.err
	}
	if s.status != 200 {
		if s.gotGRPC && s.grpcStatus != "0" {
			return fmt.Errorf("status %d, grpc-status %s (%s), want 200", s.status, s.grpcStatus, s.grpcMsg)
		}
		return fmt.Errorf("status %d, want 200", s.status)
	}
	if s.length >= 0 && s.length != s.body {
		return fmt.Errorf("short body: %d bytes, content-length %d", s.body, s.length)
	}
	if !h.grpc {
		if s.body != h.size {
			return fmt.Errorf("body of %d bytes, want %d", s.body, h.size)
		}
		return nil
	}
	switch {
	case !s.gotGRPC:
		return errors.New("no grpc-status in the trailers")
	case s.grpcStatus != "0":
		return fmt.Errorf("grpc-status %s (%s), want 0", s.grpcStatus, s.grpcMsg)
	}
	want := benchgrpc.Encoded(h.size)
	if s.body != 5+want || len(s.msg) != 5+want {
		return fmt.Errorf("gRPC response of %d bytes, want one %d-byte message", s.body, want)
	}
	if s.msg[0] != 0 || int(binary.BigEndian.Uint32(s.msg[1:5])) != want {
		return fmt.Errorf("gRPC message prefix %x, want uncompressed, length %d", s.msg[:5], want)
	}
	m := s.msg[5:]
	n, k := binary.Uvarint(m[1:])
	if m[0] != 0x0a || k <= 0 || int(n) != h.size {
		return fmt.Errorf("gRPC message is not a BytesValue of %d bytes", h.size)
	}
	return nil
}
