package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file holds the raw HTTP/2 peers of the conformance tests
// (h2conform_test.go): h2client, a client that sees every frame and checks
// the flow control of what it receives, and frameBackend, an upstream that
// answers with the frames a test chooses.

// defaultWindow is HTTP/2's initial flow-control window (RFC 9113 §6.9.2),
// of a connection always and of a stream unless SETTINGS say otherwise.
const defaultWindow = 65535

// defaultMaxFrame is SETTINGS_MAX_FRAME_SIZE until a peer says more.
const defaultMaxFrame = 16384

// rframe is a frame as the client read it, copied out of the framer.
type rframe struct {
	typ    http2.FrameType
	stream uint32
	length uint32 // the payload length on the wire, padding included
	end    bool   // END_STREAM
	ack    bool   // SETTINGS, PING
	fields []hpack.HeaderField
	data   []byte // DATA without padding; PING's payload
	code   http2.ErrCode
	lastID uint32 // GOAWAY
	// closed is set, with no frame, when the connection ended.
	closed error
}

func (f rframe) String() string {
	if f.closed != nil {
		return fmt.Sprintf("connection ended (%v)", f.closed)
	}
	s := fmt.Sprintf("%v stream=%d len=%d", f.typ, f.stream, f.length)
	switch f.typ {
	case http2.FrameRSTStream, http2.FrameGoAway:
		s += " " + f.code.String()
	case http2.FrameHeaders:
		s += fmt.Sprintf(" %v", f.fields)
	}
	if f.end {
		s += " END_STREAM"
	}
	return s
}

// h2client is one client connection speaking HTTP/2 with prior knowledge.
// A goroutine reads every frame: it answers the peer's SETTINGS and PING,
// checks that no DATA exceeds the windows this client advertised, returns
// the credit at once (WINDOW_UPDATE) unless the stream is held, and queues
// the frames by stream (stream 0: SETTINGS, PING acks, GOAWAY) for the
// test to take.
type h2client struct {
	t    *testing.T
	conn net.Conn
	done chan struct{} // the reader ended

	wmu  sync.Mutex // the write side: framer writes, HPACK encoder
	bw   *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer

	// initialWindow is the SETTINGS_INITIAL_WINDOW_SIZE this client sent.
	initialWindow int64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every change under mu
	queues  map[uint32][]rframe
	readErr error
	// violations are the peer's breaches of flow control or frame size.
	violations []string
	// What the peer may still send: on the connection and per stream.
	recvConn   int64
	recvStream map[uint32]int64
	held       map[uint32]int64 // streams whose credit is kept back: bytes owed
	// What this client may still send, from the peer's SETTINGS and
	// WINDOW_UPDATEs.
	peerSettings map[http2.SettingID]uint32
	sendConn     int64
	sendStream   map[uint32]int64
	dataFrames   atomic.Int64 // DATA frames received
}

// dialH2Client connects to address and sends the preface and SETTINGS with
// settings.
func dialH2Client(t *testing.T, address string, settings ...http2.Setting) *h2client {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	require.NoError(t, err)
	c := &h2client{
		t: t, conn: conn, done: make(chan struct{}),
		initialWindow: defaultWindow,
		changed:       make(chan struct{}),
		queues:        map[uint32][]rframe{},
		recvConn:      defaultWindow,
		recvStream:    map[uint32]int64{},
		held:          map[uint32]int64{},
		peerSettings:  map[http2.SettingID]uint32{},
		sendConn:      defaultWindow,
		sendStream:    map[uint32]int64{},
	}
	for _, s := range settings {
		if s.ID == http2.SettingInitialWindowSize {
			c.initialWindow = int64(s.Val)
		}
	}
	c.bw = bufio.NewWriter(conn)
	c.fr = http2.NewFramer(c.bw, conn)
	// This client never raises SETTINGS_MAX_FRAME_SIZE: a larger frame is
	// the peer's error, which the reader records.
	c.fr.SetMaxReadFrameSize(defaultMaxFrame)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.AllowIllegalWrites = true // the adversarial tests write what they must not
	c.enc = hpack.NewEncoder(&c.hbuf)
	go c.read()
	t.Cleanup(func() {
		_ = conn.Close()
		<-c.done
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, v := range c.violations {
			t.Errorf("the proxy broke HTTP/2: %s", v)
		}
	})
	c.write(func(fr *http2.Framer) error {
		if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
			return err
		}
		return fr.WriteSettings(settings...)
	})
	return c
}

// write runs fn with the framer and sends what it wrote.
func (c *h2client) write(fn func(fr *http2.Framer) error) {
	c.t.Helper()
	require.NoError(c.t, c.tryWrite(fn))
}

// tryWrite is write for the reader goroutine and for writes that may meet
// a connection the peer already closed.
func (c *h2client) tryWrite(fn func(fr *http2.Framer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := fn(c.fr); err != nil {
		return err
	}
	return c.bw.Flush()
}

// broadcast wakes the waiters; with mu held.
func (c *h2client) broadcast() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// violate records a breach of the peer's; with mu held. The first few
// are kept: one bug tends to repeat on every frame.
func (c *h2client) violate(format string, args ...any) {
	if len(c.violations) < 5 {
		c.violations = append(c.violations, fmt.Sprintf(format, args...))
	}
}

// brokenRules returns the peer's breaches of flow control and frame size
// so far (the cleanup fails the test on them anyway).
func (c *h2client) brokenRules() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.violations)
}

// read is the reader goroutine.
func (c *h2client) read() {
	defer close(c.done)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.mu.Lock()
			if errors.Is(err, http2.ErrFrameTooLarge) {
				c.violate("a frame larger than SETTINGS_MAX_FRAME_SIZE %d", defaultMaxFrame)
			}
			c.readErr = err
			c.broadcast()
			c.mu.Unlock()
			return
		}
		rf := rframe{typ: f.Header().Type, stream: f.Header().StreamID, length: f.Header().Length}
		var reply []func(fr *http2.Framer) error
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			rf.fields, rf.end = f.Fields, f.StreamEnded()
		case *http2.DataFrame:
			rf.data, rf.end = bytes.Clone(f.Data()), f.StreamEnded()
			reply = c.received(rf)
			c.dataFrames.Add(1)
		case *http2.RSTStreamFrame:
			rf.code = f.ErrCode
		case *http2.GoAwayFrame:
			rf.code, rf.lastID = f.ErrCode, f.LastStreamID
		case *http2.PingFrame:
			rf.ack, rf.data = f.IsAck(), bytes.Clone(f.Data[:])
			if !f.IsAck() {
				data := f.Data
				reply = append(reply, func(fr *http2.Framer) error { return fr.WritePing(true, data) })
			}
		case *http2.SettingsFrame:
			rf.ack = f.IsAck()
			if !f.IsAck() {
				_ = f.ForeachSetting(func(s http2.Setting) error {
					c.peerSetting(s)
					return nil
				})
				reply = append(reply, func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				c.sendConn += int64(f.Increment)
			} else {
				c.sendStream[f.StreamID] = c.sendWindow(f.StreamID) + int64(f.Increment)
			}
		}
		if rf.typ != http2.FrameWindowUpdate {
			c.queues[rf.stream] = append(c.queues[rf.stream], rf)
		}
		c.broadcast()
		c.mu.Unlock()
		for _, w := range reply {
			_ = c.tryWrite(w) // the peer may be gone; the test sees that
		}
	}
}

// received accounts for a DATA frame and returns the WINDOW_UPDATEs that
// give the credit back; with mu held.
func (c *h2client) received(f rframe) []func(fr *http2.Framer) error {
	n := int64(f.length)
	c.recvConn -= n
	if c.recvConn < 0 {
		c.violate("DATA on stream %d exceeds the connection's window by %d bytes", f.stream, -c.recvConn)
	}
	w, ok := c.recvStream[f.stream]
	if !ok {
		w = c.initialWindow
	}
	w -= n
	c.recvStream[f.stream] = w
	if w < 0 {
		c.violate("DATA on stream %d exceeds the stream's window by %d bytes", f.stream, -w)
	}
	if n == 0 {
		return nil
	}
	// The connection's credit always comes back (what a held stream got is
	// buffered, as a real client would); the stream's only when not held.
	c.recvConn += n
	updates := []func(fr *http2.Framer) error{func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, uint32(n)) }}
	if owed, held := c.held[f.stream]; held {
		c.held[f.stream] = owed + n
		return updates
	}
	c.recvStream[f.stream] += n
	if !f.end {
		id := f.stream
		updates = append(updates, func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, uint32(n)) })
	}
	return updates
}

// peerSetting applies one of the peer's settings; with mu held.
func (c *h2client) peerSetting(s http2.Setting) {
	if s.ID == http2.SettingInitialWindowSize {
		// RFC 9113 §6.9.2: the change applies to every open stream's window.
		delta := int64(s.Val) - c.peerInitialWindow()
		for id := range c.sendStream {
			c.sendStream[id] += delta
		}
	}
	c.peerSettings[s.ID] = s.Val
}

func (c *h2client) peerInitialWindow() int64 {
	if v, ok := c.peerSettings[http2.SettingInitialWindowSize]; ok {
		return int64(v)
	}
	return defaultWindow
}

func (c *h2client) sendWindow(id uint32) int64 {
	if w, ok := c.sendStream[id]; ok {
		return w
	}
	return c.peerInitialWindow()
}

// hold stops giving stream id's credit back: the peer may send it no more
// than the window left.
func (c *h2client) hold(id uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.held[id]; !ok {
		c.held[id] = 0
	}
}

// release gives back what a held stream received and resumes returning
// its credit.
func (c *h2client) release(id uint32) {
	c.t.Helper()
	c.mu.Lock()
	owed := c.held[id]
	delete(c.held, id)
	c.recvStream[id] += owed
	c.mu.Unlock()
	if owed > 0 {
		c.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(id, uint32(owed)) })
	}
}

// streamWindow is what the peer may still send on stream id.
func (c *h2client) streamWindow(id uint32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.recvStream[id]; ok {
		return w
	}
	return c.initialWindow
}

// await returns the first queued frame of stream id that match accepts
// (any frame when match is nil), waiting for it; the frames before it stay
// queued. When the connection ended first, the frame returned has closed
// set.
func (c *h2client) await(id uint32, match func(rframe) bool) rframe {
	c.t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		q := c.queues[id]
		for i, f := range q {
			if match == nil || match(f) {
				c.queues[id] = append(q[:i:i], q[i+1:]...)
				c.mu.Unlock()
				return f
			}
		}
		if c.readErr != nil {
			err := c.readErr
			c.mu.Unlock()
			return rframe{closed: err}
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-timeout.C:
			c.t.Fatalf("stream %d: no awaited frame within %v (queued: %v)", id, waitTimeout, q)
		}
	}
}

// awaitType waits for the next frame of type typ on stream id.
func (c *h2client) awaitType(id uint32, typ http2.FrameType) rframe {
	c.t.Helper()
	return c.await(id, func(f rframe) bool { return f.typ == typ })
}

// settings waits for the peer's SETTINGS (the first frame it sends) and
// returns them.
func (c *h2client) settings() map[http2.SettingID]uint32 {
	c.t.Helper()
	f := c.await(0, func(f rframe) bool { return f.typ == http2.FrameSettings && !f.ack })
	require.NoError(c.t, f.closed, "the peer's SETTINGS")
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.peerSettings)
}

// peerMaxFrame is the largest frame the peer takes.
func (c *h2client) peerMaxFrame() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.peerSettings[http2.SettingMaxFrameSize]; ok {
		return int(v)
	}
	return defaultMaxFrame
}

// connectionError waits for the GOAWAY of a connection error and then for
// the connection to close (RFC 9113 §5.4.1), and returns the GOAWAY.
func (c *h2client) connectionError() rframe {
	c.t.Helper()
	g := c.awaitType(0, http2.FrameGoAway)
	require.NoError(c.t, g.closed, "a GOAWAY before the connection ends")
	closed := c.await(0, func(rframe) bool { return false })
	require.Error(c.t, closed.closed, "the connection closes after the GOAWAY")
	return g
}

// block encodes fields as one header block.
func (c *h2client) block(fields ...hpack.HeaderField) []byte {
	c.hbuf.Reset()
	for _, f := range fields {
		require.NoError(c.t, c.enc.WriteField(f))
	}
	return bytes.Clone(c.hbuf.Bytes())
}

// headers sends a header block on stream id.
func (c *h2client) headers(id uint32, end bool, fields ...hpack.HeaderField) {
	c.t.Helper()
	c.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(fields...), EndStream: end, EndHeaders: true})
	})
}

// request is a request's header fields: the pseudo-headers, then extra as
// name, value pairs.
func request(method, path string, extra ...string) []hpack.HeaderField {
	fs := []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"}, {Name: ":authority", Value: "echo"}, {Name: ":path", Value: path}}
	for i := 0; i+1 < len(extra); i += 2 {
		fs = append(fs, hpack.HeaderField{Name: extra[i], Value: extra[i+1]})
	}
	return fs
}

// get sends a GET of path on stream id.
func (c *h2client) get(id uint32, path string) {
	c.t.Helper()
	c.headers(id, true, request("GET", path)...)
}

// data sends p on stream id within the peer's windows, in frames no larger
// than it takes, waiting for credit as needed.
func (c *h2client) data(id uint32, p []byte, end bool) {
	c.t.Helper()
	require.NoError(c.t, c.sendData(id, p, end))
}

// sendData is data for goroutines other than the test's: it returns its
// error.
func (c *h2client) sendData(id uint32, p []byte, end bool) error {
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		maxFrame := int64(defaultMaxFrame)
		if v, ok := c.peerSettings[http2.SettingMaxFrameSize]; ok {
			maxFrame = int64(v)
		}
		n := min(int64(len(p)), c.sendConn, c.sendWindow(id), maxFrame)
		if n > 0 || len(p) == 0 {
			c.sendConn -= n
			c.sendStream[id] = c.sendWindow(id) - n
			c.mu.Unlock()
			chunk, last := p[:n], int(n) == len(p)
			if err := c.tryWrite(func(fr *http2.Framer) error { return fr.WriteData(id, end && last, chunk) }); err != nil {
				return fmt.Errorf("stream %d: DATA: %w", id, err)
			}
			p = p[n:]
			if last {
				return nil
			}
			continue
		}
		if c.readErr != nil {
			err := c.readErr
			c.mu.Unlock()
			return fmt.Errorf("stream %d: the connection ended with %d bytes unsent: %w", id, len(p), err)
		}
		changed := c.changed
		c.mu.Unlock()
		select {
		case <-changed:
		case <-timeout.C:
			return fmt.Errorf("stream %d: no credit to send %d more bytes within %v", id, len(p), waitTimeout)
		}
	}
}

// h2response is how a stream ended and what it carried.
type h2response struct {
	headers  []hpack.HeaderField // the final response's (informational ones skipped)
	body     []byte
	trailers []hpack.HeaderField
	ended    bool           // END_STREAM
	reset    *http2.ErrCode // RST_STREAM
	closed   error          // the connection ended first
	frames   []rframe
}

func (r h2response) status() string { return field(r.headers, ":status") }

// response reads stream id until it ends (END_STREAM, RST_STREAM or the
// connection's end).
func (c *h2client) response(id uint32) h2response {
	c.t.Helper()
	var r h2response
	for {
		f := c.await(id, nil)
		if f.closed != nil {
			r.closed = f.closed
			return r
		}
		r.frames = append(r.frames, f)
		switch f.typ {
		case http2.FrameHeaders:
			switch {
			case r.headers == nil && len(field(f.fields, ":status")) == 3 && field(f.fields, ":status")[0] == '1':
				// informational: another HEADERS follows
			case r.headers == nil:
				r.headers = f.fields
			default:
				r.trailers = f.fields
			}
		case http2.FrameData:
			r.body = append(r.body, f.data...)
		case http2.FrameRSTStream:
			code := f.code
			r.reset = &code
			return r
		}
		if f.end {
			r.ended = true
			return r
		}
	}
}

// ok reads stream id to its end and requires a complete 200 response.
func (c *h2client) ok(id uint32) h2response {
	c.t.Helper()
	r := c.response(id)
	require.True(c.t, r.ended, "stream %d did not end cleanly: reset %v, connection %v, frames %v", id, r.reset, r.closed, r.frames)
	require.Equal(c.t, "200", r.status(), "stream %d: %v", id, r.frames)
	return r
}

// frameBackend is an upstream speaking HTTP/2 frame by frame: for each
// connection the proxy opens, serve runs with the server side of it.
func frameBackend(t *testing.T, serve func(s *rawConn)) (address string, conns *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	conns = &atomic.Int32{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			open[conn] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); delete(open, conn); mu.Unlock(); _ = conn.Close() }()
				s := &rawConn{conn: conn, bw: bufio.NewWriter(conn)}
				s.fr = http2.NewFramer(s.bw, conn)
				s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
				s.enc = hpack.NewEncoder(&s.hbuf)
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
					return
				}
				if s.write(func(fr *http2.Framer) error { return fr.WriteSettings() }) != nil {
					return
				}
				serve(s)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), conns
}

// rawConn is the server side of one upstream connection. Its methods
// return errors rather than failing the test: they run on the backend's
// goroutines, and an error ends the connection.
type rawConn struct {
	conn net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

func (s *rawConn) write(fn func(fr *http2.Framer) error) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if err := fn(s.fr); err != nil {
		return err
	}
	return s.bw.Flush()
}

// request reads frames until a request's HEADERS, answering SETTINGS and
// PING on the way (request bodies are not read: these backends answer
// GETs), and returns its stream and fields.
func (s *rawConn) request() (uint32, []hpack.HeaderField, error) {
	for {
		f, err := s.fr.ReadFrame()
		if err != nil {
			return 0, nil, err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			return f.StreamID, f.Fields, nil
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := s.write(func(fr *http2.Framer) error { return fr.WriteSettingsAck() }); err != nil {
					return 0, nil, err
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if err := s.write(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) }); err != nil {
					return 0, nil, err
				}
			}
		}
	}
}

// headers sends a header block (response headers or trailers) on stream id.
func (s *rawConn) headers(id uint32, end bool, kv ...string) error {
	s.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		if err := s.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]}); err != nil {
			return err
		}
	}
	return s.write(func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.hbuf.Bytes(), EndStream: end, EndHeaders: true})
	})
}

func (s *rawConn) data(id uint32, p string, end bool) error {
	return s.write(func(fr *http2.Framer) error { return fr.WriteData(id, end, []byte(p)) })
}

func (s *rawConn) reset(id uint32, code http2.ErrCode) error {
	return s.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}
