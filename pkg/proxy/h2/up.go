package h2

import (
	"context"
	"errors"
	"os"
	"slices"
	"time"

	"golang.org/x/net/http2"
)

// upConn is a connection to an endpoint, shared by the streams of any
// client connection. It is dialed by its own goroutine, which then reads
// its frames; streams given to it before it is up wait in waiting.
type upConn struct {
	conn
	p        *Proxy
	endpoint string // the endpoint it was picked for (the pool's key)
	batch    batch  // reader goroutine only

	// Under mu.
	up      bool // connected: streams open at once
	failed  bool // the dial failed or the connection ended
	goAway  bool // no new streams: GOAWAY received, retired or idle-closed
	active  int  // streams given to it and not finished
	nextID  uint32
	waiting []*stream
}

// lastStreamIDs: once a connection's next stream id reaches it, the
// connection takes no new streams (ids end at 2^31-1; the margin covers
// streams given to it before it stopped taking them).
const lastStreamIDs = 1<<31 - 1<<20

// upstreamFor returns the connection the next stream goes to: one to the
// picked endpoint with room for a stream, or a new one (dialed in the
// background). The stream is counted on it.
func (p *Proxy) upstreamFor(cfg *config) *upConn {
	ep := ""
	if cfg.Pick != nil {
		ep = cfg.Pick()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.ups[ep] {
		u.mu.Lock()
		ok := !u.failed && !u.goAway && !u.closed && uint32(u.active) < u.maxStreams
		if ok {
			if u.active == 0 && u.nc != nil {
				_ = u.nc.SetReadDeadline(time.Time{}) // no longer idle
			}
			u.active++
		}
		u.mu.Unlock()
		if ok {
			return u
		}
	}
	u := &upConn{p: p, endpoint: ep, nextID: 1, active: 1}
	u.conn.init(nil, upConnWindow, cfg.IdleTimeout)
	p.ups[ep] = append(p.ups[ep], u)
	go u.run(cfg)
	return u
}

// attach gives s to the connection: opened at once when it is up, else
// when the dial succeeds.
func (u *upConn) attach(b *batch, s *stream, end bool) {
	u.mu.Lock()
	switch {
	case u.failed:
		u.mu.Unlock()
		s.rxReset.Store(true)
		s.localReply(b, 503, "upstream connect error or disconnect/reset before headers")
		return
	case !u.up:
		s.toUp.end = s.toUp.end || end
		s.head = slices.Clone(s.head) // kept past the reader's next block
		u.waiting = append(u.waiting, s)
		u.mu.Unlock()
		return
	}
	u.openLocked(s, end)
	u.mu.Unlock()
	b.touch(&u.conn)
	u.settleOpened(b, s)
}

// openLocked opens s on the connection: its HEADERS, then what it holds.
func (u *upConn) openLocked(s *stream, end bool) {
	h := &s.toUp
	if h.sent { // reset while it waited
		return
	}
	h.id = u.nextID
	u.nextID += 2
	if u.nextID >= lastStreamIDs {
		u.goAway = true // the ids run out: new streams go to a new connection
	}
	h.window = u.initWindow
	s.upIn.left = streamWindow
	u.streams[h.id] = h
	onlyHead := end && len(h.pending) == 0 && h.trailers == nil
	u.out = appendHeaders(u.out, h.id, u.encodeLocked(s.head), onlyHead, u.maxFrame)
	s.head = nil
	if onlyHead {
		h.sent = true
		h.end = false
		return
	}
	if len(h.pending) > 0 || h.end {
		n := u.resumeLocked(h)
		if n > 0 {
			h.moved += int64(n) // credited by the caller
		}
		u.queueLocked(h)
	}
}

// run dials the connection, opens the streams that waited for it, then
// reads its frames until it ends.
func (u *upConn) run(cfg *config) {
	var err error
	defer func() {
		u.fail(err)
	}()
	if cfg.Panics != nil {
		defer cfg.Panics.Recover(nil)
	}
	ctx, cancel := context.WithTimeout(u.p.ctx, cfg.ConnectTimeout)
	nc, ep, derr := cfg.Dial(ctx, u.endpoint)
	cancel()
	if derr != nil {
		err = derr
		return
	}
	u.mu.Lock()
	if u.closed { // retired or closed while dialing
		u.mu.Unlock()
		_ = nc.Close()
		err = errors.New("closed while connecting")
		return
	}
	u.nc = nc
	u.mu.Unlock()
	_ = ep
	u.br.Reset(nc)
	if !u.p.throughConn {
		u.socketReads(nc)
	}
	if !u.p.writerOnly {
		u.socketWrites(nc)
	}
	u.hb.init(uint32(cfg.MaxHeaderBytes))
	u.start([]byte(http2.ClientPreface),
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(cfg.MaxHeaderBytes)},
	)
	u.mu.Lock()
	u.up = true
	waiting := u.waiting
	u.waiting = nil
	for _, s := range waiting {
		u.openLocked(s, s.toUp.end && len(s.toUp.pending) == 0)
	}
	u.mu.Unlock()
	u.kickWriter()
	for _, s := range waiting {
		u.settleOpened(&u.batch, s)
	}
	u.batch.flush()
	err = u.read()
}

// settleOpened returns the credit of what an opened stream sent from what
// it held, and ends its request direction when it is over.
func (u *upConn) settleOpened(b *batch, s *stream) {
	u.mu.Lock()
	n := s.toUp.moved
	s.toUp.moved = 0
	sent := s.toUp.sent
	u.mu.Unlock()
	s.creditDown(b, int(n))
	if sent {
		s.markDone(doneReq)
	}
}

// read handles the upstream's frames until the connection ends.
func (u *upConn) read() error {
	return u.readFrames(&u.batch, func() error {
		f, err := u.readFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				u.resetStream(se.StreamID, se.Code)
				return nil
			}
			return u.readError(err)
		}
		if err := u.handle(f); err != nil {
			return err
		}
		if u.flooded() {
			return errors.New("the upstream does not read what it asks for")
		}
		return nil
	}, u.readError)
}

// readError decides what a read error does: past the idle deadline, an
// idle connection ends (no longer taking streams) and a busy one goes on
// without a deadline; anything else ends it.
func (u *upConn) readError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		u.mu.Lock()
		idle := u.active == 0
		if idle {
			u.goAway = true
		}
		u.mu.Unlock()
		if !idle {
			_ = u.nc.SetReadDeadline(time.Time{})
			return nil
		}
	}
	return err
}

func (u *upConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		u.onData(f)
	case *http2.HeadersFrame:
		u.onHeaders(&u.hb)
	case *http2.WindowUpdateFrame:
		return u.onWindowUpdate(f)
	case *http2.SettingsFrame:
		return u.settings(&u.batch, f)
	case *http2.PingFrame:
		u.ping(&u.batch, f)
	case *http2.RSTStreamFrame:
		u.onRSTStream(f)
	case *http2.GoAwayFrame:
		u.onGoAway(f)
	case *http2.PushPromiseFrame:
		return errors.New("PUSH_PROMISE from an upstream that was told not to push")
	}
	return nil
}

// streamOf finds the proxied stream of an upstream stream id.
func (u *upConn) streamOf(id uint32) *stream {
	u.mu.Lock()
	h := u.streams[id]
	u.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.s
}

func (u *upConn) onData(f *http2.DataFrame) {
	length := int64(f.Length)
	data := f.Data()
	u.mu.Lock()
	if !u.consumeLocked(length) {
		u.mu.Unlock()
		u.closeNow() // the upstream broke flow control
		return
	}
	h := u.streams[f.StreamID]
	if h == nil || h.s.respEnd {
		u.returnCreditLocked(length)
		u.mu.Unlock()
		u.batch.touch(&u.conn)
		return
	}
	s := h.s
	if length > s.upIn.left {
		u.returnCreditLocked(length)
		u.mu.Unlock()
		u.resetStream(f.StreamID, http2.ErrCodeFlowControl)
		return
	}
	s.upIn.left -= length
	if pad := length - int64(len(data)); pad > 0 {
		u.returnCreditLocked(pad)
	}
	end := f.StreamEnded()
	if end {
		s.respEnd = true
	}
	u.mu.Unlock()
	d := s.down
	d.mu.Lock()
	if !s.answered { // DATA before a response head: malformed
		d.mu.Unlock()
		u.resetStream(f.StreamID, http2.ErrCodeProtocol)
		return
	}
	n := d.sendDataLocked(&s.toDown, data, end)
	sent := s.toDown.sent
	d.mu.Unlock()
	u.batch.touch(&d.conn)
	s.creditUp(&u.batch, n)
	if sent {
		s.markDone(doneResp)
	}
}

func (u *upConn) onHeaders(f *headerBlock) {
	s := u.streamOf(f.stream)
	if s == nil {
		return
	}
	end := f.endStream
	if f.truncated {
		u.resetStream(f.stream, http2.ErrCodeProtocol)
		return
	}
	status := 0
	if v := f.pseudoValue("status"); v != "" {
		for _, c := range []byte(v) {
			if c < '0' || c > '9' {
				status = -1
				break
			}
			status = status*10 + int(c-'0')
		}
		if len(v) != 3 || status < 100 {
			u.resetStream(f.stream, http2.ErrCodeProtocol)
			return
		}
	}
	d := s.down
	d.mu.Lock()
	switch {
	case !s.answered && status == 0, s.answered && status != 0:
		// A head without :status, or a second final head: malformed.
		d.mu.Unlock()
		u.resetStream(f.stream, http2.ErrCodeProtocol)
		return
	case !s.answered && status >= 200:
		s.answered = true
		s.status = status
		s.upTime = time.Since(s.began)
	case s.answered && !end:
		d.mu.Unlock()
		u.resetStream(f.stream, http2.ErrCodeProtocol) // trailers must end the stream
		return
	}
	if end {
		u.mu.Lock()
		s.respEnd = true
		u.mu.Unlock()
	}
	d.sendHeadersLocked(&s.toDown, filterHop(f.fields), end)
	sent := s.toDown.sent
	d.mu.Unlock()
	u.batch.touch(&d.conn)
	if sent {
		s.markDone(doneResp)
	}
}

func (u *upConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	switch u.windowUpdate(&u.batch, f) {
	case windowConnOverflow:
		return errors.New("upstream connection window over 2^31-1")
	case windowStreamOverflow:
		u.resetStream(f.StreamID, http2.ErrCodeFlowControl)
	}
	return nil
}

func (u *upConn) onRSTStream(f *http2.RSTStreamFrame) {
	u.mu.Lock()
	h := u.streams[f.StreamID]
	if h != nil {
		h.rst = true // never answered with a reset
	}
	u.mu.Unlock()
	if h == nil {
		return
	}
	h.s.upstreamReset(&u.batch, f.ErrCode)
}

// resetStream answers an upstream's stream error: RST_STREAM upstream, and
// the client's stream ends as upstreamReset says.
func (u *upConn) resetStream(id uint32, code http2.ErrCode) {
	u.mu.Lock()
	h := u.streams[id]
	if h == nil {
		u.out = appendRSTStream(u.out, id, code)
		u.mu.Unlock()
		u.batch.touch(&u.conn)
		return
	}
	dropped := u.resetLocked(h, code)
	u.mu.Unlock()
	u.batch.touch(&u.conn)
	h.s.creditDown(&u.batch, dropped)
	h.s.upstreamReset(&u.batch, http2.ErrCodeInternal)
}

// upstreamReset ends a stream the upstream reset (or whose connection
// ended): before a response head, the client gets REFUSED_STREAM (when the
// upstream refused it: safe to retry) or a 503; after it, RST_STREAM.
func (s *stream) upstreamReset(b *batch, code http2.ErrCode) {
	u := s.up
	u.mu.Lock()
	dropped := u.resetLocked(&s.toUp, http2.ErrCodeCancel) // no RST if h.rst
	s.respEnd = true
	u.mu.Unlock()
	s.creditDown(b, dropped)
	d := s.down
	d.mu.Lock()
	answered := s.answered
	respSent := s.toDown.sent
	d.mu.Unlock()
	switch {
	case respSent:
		// The response is complete; the upstream stops the request's rest
		// (RST_STREAM NO_ERROR, RFC 9113 §8.1): so does the client.
		d.mu.Lock()
		if !s.reqEnd {
			s.reqEnd = true
			if !s.toDown.rst {
				s.toDown.rst = true
				d.out = appendRSTStream(d.out, s.toDown.id, code)
			}
		}
		d.mu.Unlock()
		b.touch(&d.conn)
		s.markDone(doneBoth)
	case !answered && code == http2.ErrCodeRefusedStream:
		d.mu.Lock()
		dropped := d.resetLocked(&s.toDown, http2.ErrCodeRefusedStream)
		s.reqEnd = true
		d.mu.Unlock()
		b.touch(&d.conn)
		s.creditUp(b, dropped)
		s.rxReset.Store(true)
		s.markDone(doneBoth)
	default:
		s.rxReset.Store(true)
		s.localReply(b, 503, "upstream connect error or disconnect/reset before headers")
	}
}

func (u *upConn) onGoAway(f *http2.GoAwayFrame) {
	u.mu.Lock()
	u.goAway = true
	var refused []*stream
	for id, h := range u.streams {
		if id > f.LastStreamID {
			refused = append(refused, h.s)
			h.rst = true
		}
	}
	idle := u.active == 0
	u.mu.Unlock()
	for _, s := range refused {
		s.upstreamReset(&u.batch, http2.ErrCodeRefusedStream)
	}
	if idle {
		u.close()
	}
}

// fail ends the connection: the streams on it (and those waiting for it)
// end as reset by the upstream; it leaves the pool.
func (u *upConn) fail(err error) {
	u.mu.Lock()
	u.failed = true
	open := make([]*stream, 0, len(u.streams)+len(u.waiting))
	for _, h := range u.streams {
		h.rst = true
		open = append(open, h.s)
	}
	open = append(open, u.waiting...)
	u.waiting = nil
	u.mu.Unlock()
	u.forget()
	u.close()
	for _, s := range open {
		s.upstreamReset(&u.batch, http2.ErrCodeInternal)
	}
	u.batch.flush()
	u.waitWriter()
	if err != nil {
		u.p.cfg.Load().Log.Debug("upstream connection ended", "endpoint", u.endpoint, "err", err)
	}
}

// forget takes the connection out of the pool.
func (u *upConn) forget() {
	p := u.p
	p.mu.Lock()
	list := p.ups[u.endpoint]
	for i, x := range list {
		if x == u {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(p.ups, u.endpoint)
	} else {
		p.ups[u.endpoint] = list
	}
	p.mu.Unlock()
}

// released is called when one of its streams finished: a retired
// connection closes with its last stream; an idle one starts its timeout.
func (u *upConn) released() {
	u.mu.Lock()
	idle := u.active == 0 && !u.failed && u.nc != nil
	retired := u.goAway
	reusable := true
	if idle && !retired {
		if r := u.p.cfg.Load().Reusable; r != nil {
			reusable = r(u.nc)
		}
	}
	u.mu.Unlock()
	switch {
	case !idle:
	case retired || !reusable:
		u.retire()
	default:
		_ = u.nc.SetReadDeadline(time.Now().Add(u.p.cfg.Load().IdleTimeout))
	}
}

// retire takes no new streams on the connection and closes it once its
// streams are done.
func (u *upConn) retire() {
	u.mu.Lock()
	u.goAway = true
	idle := u.active == 0 && u.started
	u.mu.Unlock()
	u.forget()
	if idle {
		u.close()
	}
}
