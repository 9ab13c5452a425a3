package h2

import (
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// downConn is a client's connection.
type downConn struct {
	conn
	p        *Proxy
	external bool
	batch    batch

	// Reader goroutine only.
	lastID   uint32 // the highest stream id the client opened
	goneAway bool   // the client sent GOAWAY

	// Under mu.
	active int
	// goAwayID: once draining, the last stream id taken (GOAWAY sent).
	goAwayID uint32
	draining bool
}

// connError is a connection error to send as GOAWAY before closing.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return "connection error: " + e.code.String() + ": " + e.reason }

// serve runs the client connection until it ends.
func (d *downConn) serve() error {
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(d.br, preface[:]); err != nil {
		return err
	}
	if string(preface[:]) != http2.ClientPreface {
		return connError{http2.ErrCodeProtocol, "invalid connection preface"}
	}
	cfg := d.p.cfg.Load()
	d.hb.init(uint32(cfg.MaxHeaderBytes))
	d.start(nil,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxDownStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(cfg.MaxHeaderBytes)},
	)
	first := true
	return d.readFrames(&d.batch, func() error {
		f, err := d.readFrame()
		if err != nil {
			return d.readError(f, err)
		}
		if first {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				return connError{http2.ErrCodeProtocol, "the first frame is not SETTINGS"}
			}
			first = false
		}
		if err := d.handle(f); err != nil {
			return err
		}
		if d.flooded() {
			return connError{http2.ErrCodeEnhanceYourCalm, "the client does not read what it asks for"}
		}
		return nil
	}, func(err error) error { return d.readError(nil, err) })
}

// readError handles an error of ReadFrame: a stream error resets that
// stream and the connection goes on; anything else ends it.
func (d *downConn) readError(f http2.Frame, err error) error {
	var se http2.StreamError
	switch {
	case errors.As(err, &se):
		if _, ok := f.(*http2.HeadersFrame); ok && se.StreamID > d.lastID && se.StreamID%2 == 1 {
			d.lastID = se.StreamID // a refused new stream still used its id
		}
		d.resetStream(se.StreamID, se.Code)
		return nil
	case errors.Is(err, http2.ErrFrameTooLarge):
		return connError{http2.ErrCodeFrameSize, "frame too large"}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		reason := "protocol error"
		if e := d.fr.ErrorDetail(); e != nil {
			reason = e.Error()
		}
		return connError{http2.ErrCode(ce), reason}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		d.mu.Lock()
		idle := d.active == 0
		d.mu.Unlock()
		if idle {
			return errIdle
		}
	}
	return err
}

var errIdle = errors.New("idle timeout")

// resetStream answers a stream error: RST_STREAM to the client, and the
// proxied stream, if any, is reset upstream.
func (d *downConn) resetStream(id uint32, code http2.ErrCode) {
	d.mu.Lock()
	h := d.streams[id]
	if h == nil {
		d.out = appendRSTStream(d.out, id, code)
		d.mu.Unlock()
		d.batch.touch(&d.conn)
		return
	}
	s := h.s
	dropped := d.resetLocked(h, code)
	s.reqEnd = true
	d.mu.Unlock()
	d.batch.touch(&d.conn)
	if s.up != nil {
		s.creditUp(&d.batch, dropped)
	}
	s.txReset.Store(true)
	s.resetUp(&d.batch, http2.ErrCodeCancel)
	s.markDone(doneBoth)
}

func (d *downConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return d.onData(f)
	case *http2.HeadersFrame:
		return d.onHeaders(&d.hb)
	case *http2.WindowUpdateFrame:
		return d.onWindowUpdate(f)
	case *http2.SettingsFrame:
		if err := d.settings(&d.batch, f); err != nil {
			return asConnError(err)
		}
	case *http2.PingFrame:
		d.ping(&d.batch, f)
	case *http2.RSTStreamFrame:
		return d.onRSTStream(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			d.resetStream(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.GoAwayFrame:
		d.goneAway = true // the client opens no more streams; the open ones go on
	case *http2.PushPromiseFrame:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	}
	return nil // unknown frame types are ignored (RFC 9113 §4.1)
}

func asConnError(err error) error {
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return connError{http2.ErrCode(ce), "invalid SETTINGS"}
	}
	var c connError
	if errors.As(err, &c) {
		return c
	}
	return connError{http2.ErrCodeProtocol, err.Error()}
}

func (d *downConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	switch d.windowUpdate(&d.batch, f) {
	case windowConnOverflow:
		return connError{http2.ErrCodeFlowControl, "connection window over 2^31-1"}
	case windowStreamOverflow:
		d.resetStream(f.StreamID, http2.ErrCodeFlowControl)
	case windowNoStream:
		if f.StreamID > d.lastID {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		}
	}
	return nil
}

func (d *downConn) onRSTStream(f *http2.RSTStreamFrame) error {
	d.mu.Lock()
	h := d.streams[f.StreamID]
	if h == nil {
		d.mu.Unlock()
		if f.StreamID > d.lastID {
			return connError{http2.ErrCodeProtocol, "RST_STREAM on an idle stream"}
		}
		return nil
	}
	s := h.s
	h.rst = true // never answered with a reset
	dropped := d.resetLocked(h, f.ErrCode)
	s.reqEnd = true
	d.mu.Unlock()
	if s.up != nil {
		s.creditUp(&d.batch, dropped)
	}
	s.txReset.Store(true)
	s.resetUp(&d.batch, http2.ErrCodeCancel)
	s.markDone(doneBoth)
	return nil
}

func (d *downConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	length := int64(f.Length)
	data := f.Data()
	d.mu.Lock()
	if !d.consumeLocked(length) {
		d.mu.Unlock()
		return connError{http2.ErrCodeFlowControl, "DATA beyond the connection window"}
	}
	h := d.streams[id]
	if h == nil || h.s.reqEnd {
		// Not an open stream: its bytes still count on the connection.
		d.returnCreditLocked(length)
		d.mu.Unlock()
		if id > d.lastID {
			return connError{http2.ErrCodeProtocol, "DATA on an idle stream"}
		}
		d.resetStream(id, http2.ErrCodeStreamClosed)
		return nil
	}
	s := h.s
	if length > s.downIn.left {
		d.returnCreditLocked(length)
		d.mu.Unlock()
		d.resetStream(id, http2.ErrCodeFlowControl)
		return nil
	}
	s.downIn.left -= length
	// Padding is not forwarded: its credit goes back now.
	if pad := length - int64(len(data)); pad > 0 {
		d.returnCreditLocked(pad)
	}
	end := f.StreamEnded()
	s.got += int64(len(data))
	if s.clen >= 0 && (s.got > s.clen || end && s.got != s.clen) {
		d.returnCreditLocked(int64(len(data)))
		d.mu.Unlock()
		d.resetStream(id, http2.ErrCodeProtocol) // RFC 9113 §8.1.1
		return nil
	}
	if end {
		s.reqEnd = true
	}
	d.mu.Unlock()

	u := s.up
	u.mu.Lock()
	n := u.sendDataLocked(&s.toUp, data, end)
	sent := s.toUp.sent
	u.mu.Unlock()
	d.batch.touch(&u.conn)
	s.creditDown(&d.batch, n)
	if sent {
		s.markDone(doneReq)
	}
	return nil
}

func (d *downConn) onHeaders(f *headerBlock) error {
	id := f.stream
	if id%2 == 0 {
		return connError{http2.ErrCodeProtocol, "a client stream with an even id"}
	}
	if f.hasPriority && f.priority.StreamDep == id {
		if id > d.lastID {
			d.lastID = id
		}
		d.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	d.mu.Lock()
	h := d.streams[id]
	d.mu.Unlock()
	if h != nil {
		return d.onTrailers(h.s, f)
	}
	if id <= d.lastID {
		return connError{http2.ErrCodeStreamClosed, "HEADERS on a closed stream"}
	}
	d.lastID = id
	d.mu.Lock()
	refused := d.active >= maxDownStreams || d.draining
	d.mu.Unlock()
	if refused {
		d.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.truncated {
		d.answerLocal(id, f.endStream, 431, "request header fields too large")
		return nil
	}
	clen, ok := checkRequest(f.fields)
	if !ok {
		d.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	end := f.endStream
	if end && clen > 0 {
		d.resetStream(id, http2.ErrCodeProtocol)
		return nil
	}
	d.p.open(d, id, f.fields, clen, end)
	return nil
}

// onTrailers handles a second header block on an open stream: the
// request's trailers, which must end it.
func (d *downConn) onTrailers(s *stream, f *headerBlock) error {
	d.mu.Lock()
	ended := s.reqEnd
	d.mu.Unlock()
	if ended {
		d.resetStream(f.stream, http2.ErrCodeStreamClosed)
		return nil
	}
	if !f.endStream || len(f.pseudo()) > 0 || f.truncated {
		d.resetStream(f.stream, http2.ErrCodeProtocol)
		return nil
	}
	if s.clen >= 0 && s.got != s.clen {
		d.resetStream(f.stream, http2.ErrCodeProtocol)
		return nil
	}
	d.mu.Lock()
	s.reqEnd = true
	d.mu.Unlock()
	fields := filterHop(f.fields)
	u := s.up
	u.mu.Lock()
	if s.toUp.id == 0 || len(s.toUp.pending) > 0 {
		if !s.toUp.sent {
			s.toUp.trailers = slices.Clone(fields) // kept past the reader's next block
			s.toUp.end = true
		}
	} else {
		u.sendHeadersLocked(&s.toUp, fields, true)
	}
	sent := s.toUp.sent
	u.mu.Unlock()
	d.batch.touch(&u.conn)
	if sent {
		s.markDone(doneReq)
	}
	return nil
}

// answerLocal answers a new stream from the proxy (no upstream involved).
func (d *downConn) answerLocal(id uint32, ended bool, status int, msg string) {
	d.mu.Lock()
	h := &half{c: &d.conn, id: id, window: d.initWindow}
	d.sendHeadersLocked(h, []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(status)},
		{Name: "content-type", Value: "text/plain"},
		{Name: "content-length", Value: strconv.Itoa(len(msg))},
	}, false)
	d.writeDataLocked(h, []byte(msg), true) // a short message: the initial window holds it
	if !ended {
		d.out = appendRSTStream(d.out, id, http2.ErrCodeNo)
	}
	d.mu.Unlock()
	d.batch.touch(&d.conn)
	d.p.cfg.Load().Listener.RequestDone(status, 0)
}

// becameIdle arms the idle timeout when the last stream ended.
func (d *downConn) becameIdle() {
	_ = d.nc.SetReadDeadline(time.Now().Add(d.p.cfg.Load().IdleTimeout))
}

// drain tells the client with GOAWAY that no stream after the ones it
// opened is taken.
func (d *downConn) drain() {
	d.mu.Lock()
	if !d.draining {
		d.draining = true
		d.goAwayID = d.lastIDSeen()
		d.out = appendGoAway(d.out, d.goAwayID, http2.ErrCodeNo, "")
	}
	idle := d.active == 0
	d.mu.Unlock()
	d.kickWriter()
	if idle {
		d.close()
	}
}

// lastIDSeen is the highest client stream id known to the connection
// (under mu; the reader's lastID may be ahead by the frame it handles).
func (d *downConn) lastIDSeen() uint32 {
	var last uint32
	for id := range d.streams {
		last = max(last, id)
	}
	return last
}

// hopFields are connection-specific fields, malformed in HTTP/2 (RFC 9113
// §8.2.2) and never forwarded.
var hopFields = []string{"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}

func isHop(name string) bool {
	for _, h := range hopFields {
		if name == h {
			return true
		}
	}
	return false
}

// filterHop drops connection-specific fields from a header block (in
// place).
func filterHop(fields []hpack.HeaderField) []hpack.HeaderField {
	out := fields[:0]
	for _, f := range fields {
		if !isHop(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

// checkRequest validates a request head (RFC 9113 §8.3.1, §8.2.2) and
// returns its declared content length (-1 when none).
func checkRequest(fields []hpack.HeaderField) (int64, bool) {
	var method, scheme, path, authority bool
	var isConnect bool
	clen := int64(-1)
	for _, f := range fields {
		switch f.Name {
		case ":method":
			method = f.Value != ""
			isConnect = f.Value == "CONNECT"
		case ":scheme":
			scheme = f.Value != ""
		case ":path":
			path = f.Value != ""
		case ":authority":
			authority = true
		case ":protocol", ":status":
			return 0, false // no extended CONNECT offered; a response field
		case "te":
			if f.Value != "trailers" {
				return 0, false
			}
		case "content-length":
			n, err := strconv.ParseInt(f.Value, 10, 64)
			if err != nil || n < 0 || (clen >= 0 && clen != n) {
				return 0, false
			}
			clen = n
		default:
			if isHop(f.Name) {
				return 0, false
			}
		}
	}
	if !method {
		return 0, false
	}
	if isConnect {
		return clen, authority && !scheme && !path
	}
	return clen, scheme && path
}
