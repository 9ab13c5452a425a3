package h2

import (
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one proxied request: a client's stream on a downstream
// connection and the stream opened for it on an upstream connection.
//
// Each direction is a half sent on one connection (toUp: the request,
// toDown: the response), under that connection's mu. Credit for what a
// peer sent is returned to it only once the bytes left on the other side.
type stream struct {
	p    *Proxy
	down *downConn
	up   *upConn // set once, when the stream is given to a connection

	toUp, toDown half

	// The peers' sides of the stream's flow control (under the mu of
	// their connections).
	downIn, upIn inflow
	// reqEnd: the client ended the request (under down.mu).
	reqEnd bool
	// respEnd: the upstream ended the response (under up.mu).
	respEnd bool

	// head is the request head to open the upstream stream with.
	head []hpack.HeaderField
	// Downstream reader only: the declared length and the DATA counted.
	clen, got int64

	// The response's status and time to its head (under down.mu: set when
	// the head is forwarded or answered locally, read by finish, which
	// may run on the client's side while the upstream's head comes in).
	status int
	upTime time.Duration
	// answered: a response head (forwarded or local) went to the client
	// (under down.mu).
	answered bool

	began    time.Time
	external bool

	// done has doneReq once the request direction is over (END_STREAM or
	// RST_STREAM sent upstream, or nothing more will be), doneResp once
	// the response direction is; finished when both.
	done atomic.Uint32
	// txReset / rxReset: reset by the client / by the upstream side.
	txReset, rxReset atomic.Bool
}

const (
	doneReq  = 1
	doneResp = 2
	doneBoth = doneReq | doneResp
)

func (s *stream) markDone(bits uint32) {
	old := s.done.Or(bits)
	if old != doneBoth && old|bits == doneBoth {
		s.finish()
	}
}

// finish forgets the stream on both connections and records it.
func (s *stream) finish() {
	d := s.down
	d.mu.Lock()
	delete(d.streams, s.toDown.id)
	d.active--
	idle := d.active == 0
	status, upTime := s.status, s.upTime
	d.mu.Unlock()
	if idle {
		d.becameIdle()
	}
	if u := s.up; u != nil {
		u.mu.Lock()
		if s.toUp.id != 0 {
			delete(u.streams, s.toUp.id)
		}
		u.active--
		u.mu.Unlock()
		u.released()
	}
	cfg := s.p.cfg.Load()
	cfg.Cluster.UpstreamRqActive.Dec()
	if status != 0 {
		cfg.Cluster.RequestDone(status, upTime, s.external)
		cfg.Listener.RequestDone(status, time.Since(s.began))
	}
	if s.txReset.Load() {
		cfg.Cluster.UpstreamRqTxReset.Inc()
	}
	if s.rxReset.Load() {
		cfg.Cluster.UpstreamRqRxReset.Inc()
	}
	s.p.streamEnded()
}

// creditDown returns n bytes of credit to the client for DATA of this
// stream that left upstream (or was dropped).
func (s *stream) creditDown(b *batch, n int) {
	s.down.credit(b, n, &s.downIn, &s.toDown.id, &s.reqEnd)
}

// creditUp returns n bytes of credit to the upstream for DATA of this
// stream that left to the client (or was dropped).
func (s *stream) creditUp(b *batch, n int) {
	s.up.credit(b, n, &s.upIn, &s.toUp.id, &s.respEnd)
}

// inflow is a peer's side of a stream's flow control: what it may still
// send, and the credit owed to it.
type inflow struct{ left, owed int64 }

// credit gives n bytes back to the peer of c: to its connection window at
// once (batched), and to the stream's (*id, 0 while not opened) while the
// peer may still send on it (*ended says it may not), in WINDOW_UPDATEs of
// at least a quarter of the stream window. id and ended are under c.mu.
func (c *conn) credit(b *batch, n int, in *inflow, id *uint32, ended *bool) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.returnCreditLocked(int64(n))
	if !*ended && *id != 0 {
		in.owed += int64(n)
		if in.owed >= streamWindow/4 {
			c.out = appendWindowUpdate(c.out, *id, uint32(in.owed))
			in.left += in.owed
			in.owed = 0
		}
	}
	c.mu.Unlock()
	b.touch(c)
}

// credit returns credit for n bytes that left through h (to the side
// the bytes came from).
func (h *half) credit(b *batch, n int) {
	if n <= 0 {
		return
	}
	if h == &h.s.toUp {
		h.s.creditDown(b, n)
	} else {
		h.s.creditUp(b, n)
	}
}

// doneBit is the direction h carries.
func (h *half) doneBit() uint32 {
	if h == &h.s.toUp {
		return doneReq
	}
	return doneResp
}

// localReply answers the client from the proxy (no upstream answer), when
// no response head went out yet; otherwise it resets the client's stream.
// The request direction ends too: upstream is reset (if opened), and a
// client still sending is asked to stop (RST_STREAM NO_ERROR).
func (s *stream) localReply(b *batch, status int, msg string) {
	d := s.down
	d.mu.Lock()
	if s.answered || s.toDown.sent {
		dropped := d.resetLocked(&s.toDown, http2.ErrCodeInternal)
		d.mu.Unlock()
		b.touch(&d.conn)
		if s.up != nil {
			s.creditUp(b, dropped)
		}
		s.resetUp(b, http2.ErrCodeCancel)
		s.markDone(doneBoth)
		return
	}
	s.answered = true
	s.status = status
	h := &s.toDown
	d.sendHeadersLocked(h, []hpack.HeaderField{
		{Name: ":status", Value: strconv.Itoa(status)},
		{Name: "content-type", Value: "text/plain"},
		{Name: "content-length", Value: strconv.Itoa(len(msg))},
	}, false)
	d.sendDataLocked(h, []byte(msg), true)
	if !s.reqEnd {
		// RFC 9113 §8.1: the answer is complete; the request's rest is
		// not wanted. Sent after the answer's end (or when it leaves).
		s.reqEnd = true
		if h.sent {
			d.out = appendRSTStream(d.out, h.id, http2.ErrCodeNo)
		}
	}
	sent := h.sent
	d.mu.Unlock()
	b.touch(&d.conn)
	s.resetUp(b, http2.ErrCodeCancel)
	if sent {
		s.markDone(doneResp)
	}
	s.markDone(doneReq)
}

// resetUp ends the request direction upstream with RST_STREAM (when the
// stream was opened there and is not over).
func (s *stream) resetUp(b *batch, code http2.ErrCode) {
	u := s.up
	if u == nil {
		return
	}
	u.mu.Lock()
	dropped := 0
	if !(s.respEnd && s.toUp.sent) { // a stream over both ways needs no reset
		dropped = u.resetLocked(&s.toUp, code)
	}
	s.respEnd = true // nothing more is taken from the upstream
	u.mu.Unlock()
	b.touch(&u.conn)
	s.creditDown(b, dropped)
}
