package h2

import (
	"bufio"
	"bytes"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/proxy/sock"
)

// Protocol constants (RFC 9113 §6.5.2, §6.9).
const (
	defaultWindow    = 65535
	maxWindow        = 1<<31 - 1
	defaultMaxFrame  = 16384
	defaultTableSize = 4096
	frameHeaderLen   = 9
)

// The windows the proxy grants its peers. A stream's window bounds what the
// proxy may have to hold for it when the other side is slower; the
// connection's bounds what one connection's streams hold together. Credit
// goes back to a peer only once its bytes left on the other side (or were
// dropped), so a slow reader slows its writer instead of filling memory.
const (
	streamWindow   = 128 << 10
	downConnWindow = 1 << 20
	upConnWindow   = 4 << 20
	// maxDownStreams is SETTINGS_MAX_CONCURRENT_STREAMS toward clients.
	maxDownStreams = 256
	// readBufSize: frames a peer sent together are read in one system call;
	// larger payloads bypass the buffer.
	readBufSize = 4 << 10
	// keptOutput: an output buffer that grew past this is dropped after
	// its write rather than kept for the next.
	keptOutput = 64 << 10
	// outputHigh bounds the DATA waiting in a connection's output: a peer
	// that does not read holds back the credit of the streams sending to
	// it, however large the windows it granted.
	outputHigh = 256 << 10
	// maxOutput bounds all of a connection's waiting output: past it the
	// peer is not reading what it asks for (PING, SETTINGS floods), and
	// its connection ends.
	maxOutput = 4 * outputHigh
)

// conn is one HTTP/2 connection, to a client (downstream) or to an endpoint
// (upstream). Its reader state belongs to its reader goroutine. Everything
// sent on it is appended to out under mu, by whichever goroutine forwards
// the frame, and leaves once that goroutine's batch of frames is done, in
// one write: its own on the socket when it can write without waiting
// (send), else the connection's writer goroutine's, which it kicks.
type conn struct {
	nc net.Conn
	br *bufio.Reader
	fr *http2.Framer
	hb headerBlock // the last header block read
	// sr reads nc's socket itself, inside the poller's callback (package
	// sock); nil: br reads through nc (TLS, or no TCP_INQ).
	sr *sock.Reader

	kick chan struct{}
	done chan struct{} // closed by close: the writer ends
	// writerDone is closed when the writer goroutine returned.
	writerDone chan struct{}
	stall      netserve.StallGuard // writer goroutine only

	mu    sync.Mutex
	out   []byte // frames waiting for the writer
	spare []byte // the writer's previous buffer, for reuse
	// sw writes nc's socket itself (package sock), never waiting: a
	// batch's frames leave from the goroutine that made them when nothing
	// else is writing and the socket takes them at once, without waking
	// the writer goroutine; nil: always through the writer.
	sw *sock.Writer
	// writing: output taken from out is being written (by the writer
	// goroutine or by send); wrote is signalled when that ends.
	writing bool
	wrote   sync.Cond
	enc     *hpack.Encoder
	hbuf    bytes.Buffer
	closed  bool
	started bool // the writer runs
	// The peer's settings.
	maxFrame   int
	initWindow int64
	maxStreams uint32
	// sendWindow is the connection's send window (the peer's credit).
	sendWindow int64
	// blocked are the halves holding data for want of connection credit.
	blocked []*half
	// streams are the open streams' halves sent on this connection, by
	// their id on it.
	streams map[uint32]*half

	// Receive side: what the peer may still send on the connection, and
	// the credit consumed but not yet returned (under mu: returned by the
	// goroutine whose write consumed the bytes).
	recvWindow  int64
	recvUnacked int64
	grant       int64 // the connection window granted to the peer
}

// init readies c (in place: its encoder writes to its own buffer).
func (c *conn) init(nc net.Conn, grant int64, stallTimeout time.Duration) {
	*c = conn{
		nc:         nc,
		br:         bufio.NewReaderSize(nc, readBufSize),
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
		stall:      netserve.StallGuard{Timeout: stallTimeout},
		maxFrame:   defaultMaxFrame,
		initWindow: defaultWindow,
		maxStreams: ^uint32(0),
		sendWindow: defaultWindow,
		recvWindow: defaultWindow,
		grant:      grant,
		streams:    make(map[uint32]*half),
	}
	c.wrote.L = &c.mu
	c.fr = http2.NewFramer(nil, c.br)
	c.fr.SetReuseFrames()
	c.fr.SetMaxReadFrameSize(defaultMaxFrame)
	c.enc = hpack.NewEncoder(&c.hbuf)
}

// start begins writing, with the connection's preface and settings, and
// grants the peer the connection window.
func (c *conn) start(preface []byte, settings ...http2.Setting) {
	c.mu.Lock()
	c.started = true
	c.out = append(c.out, preface...)
	c.out = appendSettings(c.out, settings...)
	if c.grant > defaultWindow {
		c.out = appendWindowUpdate(c.out, 0, uint32(c.grant-defaultWindow))
		c.recvWindow = c.grant
	}
	c.mu.Unlock()
	go c.writeLoop()
	c.kickWriter()
}

func (c *conn) kickWriter() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// writeLoop writes what was queued each time it is kicked, until the
// connection closes or a write fails (which closes it).
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer func() {
		if v := recover(); v != nil {
			_ = c.nc.Close()
			panic(v)
		}
	}()
	for {
		select {
		case <-c.kick:
		case <-c.done:
			c.flushLast()
			return
		}
		c.mu.Lock()
		if c.writing {
			c.mu.Unlock()
			continue // send is writing: it kicks again if more waits
		}
		buf := c.out
		if len(buf) > 0 {
			c.out, c.spare = c.spare[:0], nil
			c.writing = true
		}
		// The output has room again: the halves that waited for it go on
		// (their frames leave with the next write).
		var resumed []moved
		if len(c.blocked) > 0 {
			resumed = c.resumeBlockedLocked(nil)
		}
		c.mu.Unlock()
		if len(resumed) > 0 {
			var b batch
			creditMoved(&b, resumed)
			b.touch(c)
			b.flush()
		}
		if len(buf) == 0 {
			continue // nothing taken: out stays
		}
		c.stall.Arm(c.nc)
		_, err := c.nc.Write(buf)
		c.mu.Lock()
		c.wroteLocked(buf, err == nil)
		c.mu.Unlock()
		if err != nil {
			c.close()
			return
		}
	}
}

// send writes c's output: at once from this goroutine when c writes its
// socket itself, nothing else is writing and no half waits for room (the
// writer resumes those); what the socket does not take, or all of it
// otherwise, is left to the writer goroutine.
func (c *conn) send() {
	c.mu.Lock()
	if c.sw == nil || c.writing || c.closed || !c.started || len(c.out) == 0 || len(c.blocked) > 0 {
		c.mu.Unlock()
		c.kickWriter()
		return
	}
	buf := c.out
	c.out, c.spare = c.spare[:0], nil
	c.writing = true
	c.mu.Unlock()
	n, err := c.sw.TryWrite(buf)
	c.mu.Lock()
	whole := err == nil && n == len(buf)
	if err == nil && !whole {
		// The rest leaves first, through the writer.
		rest := buf[n:]
		if len(c.out) == 0 {
			c.out = append(c.out, rest...)
		} else {
			c.out = append(append(make([]byte, 0, len(rest)+len(c.out)), rest...), c.out...)
		}
	}
	c.wroteLocked(buf, whole)
	if err != nil {
		c.mu.Unlock()
		c.close()
		return
	}
	more := len(c.out) > 0
	c.mu.Unlock()
	if more {
		c.kickWriter()
	}
}

// wroteLocked ends a write of buf taken from out (writing), keeping buf
// for the next output when it was written whole and is not too large.
func (c *conn) wroteLocked(buf []byte, whole bool) {
	c.writing = false
	c.wrote.Broadcast()
	if whole && cap(buf) <= keptOutput && c.spare == nil {
		c.spare = buf[:0]
	}
}

// flushLast writes what was queued before the connection closed (a GOAWAY),
// bounded by a short deadline.
func (c *conn) flushLast() {
	c.mu.Lock()
	for c.writing { // a send's write ends without waiting
		c.wrote.Wait()
	}
	buf := c.out
	c.out = nil
	c.mu.Unlock()
	if len(buf) > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.nc.Write(buf)
	}
}

// close ends the connection: queued frames are written (briefly), then the
// socket closes, which ends its reader.
func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	started, nc := c.started, c.nc
	c.mu.Unlock()
	if !started {
		return // never started: whoever connects it sees closed
	}
	close(c.done)
	go func() {
		<-c.writerDone
		_ = nc.Close()
	}()
}

// closeNow closes the socket at once (the proxy shuts down): queued frames
// may be lost.
func (c *conn) closeNow() {
	c.close()
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc != nil {
		_ = nc.Close()
	}
}

// waitWriter waits for the writer goroutine to end, if it ran.
func (c *conn) waitWriter() {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if started {
		<-c.writerDone
	}
}

// encodeLocked HPACK-encodes fields into hbuf (reset first).
func (c *conn) encodeLocked(fields []hpack.HeaderField) []byte {
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.enc.WriteField(f) // writes to a bytes.Buffer: no error
	}
	return c.hbuf.Bytes()
}

// batch collects the connections a reader goroutine wrote to while it
// handled the frames it had read; their writers are kicked together when
// the reader is about to wait for more input.
type batch struct{ dirty []*conn }

func (b *batch) touch(c *conn) {
	for _, d := range b.dirty {
		if d == c {
			return
		}
	}
	b.dirty = append(b.dirty, c)
}

func (b *batch) flush() {
	for i, c := range b.dirty {
		c.send()
		b.dirty[i] = nil
	}
	b.dirty = b.dirty[:0]
}

// readFrame reads the next frame; of a HEADERS frame, the whole header
// block, decoded into c.hb.
func (c *conn) readFrame() (http2.Frame, error) {
	f, err := c.fr.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		err = c.hb.read(c.fr, hf)
	}
	return f, err
}

// frameBuffered tells whether a whole frame is waiting in br, so handling
// it needs no read that might block.
func frameBuffered(br *bufio.Reader) bool {
	return br.Buffered() >= frameWanted(br)
}

// frameWanted is how many bytes br must hold for its next frame to be
// whole: a header, then the header and the payload it announces. A header
// block the framer reads at once (HEADERS or PUSH_PROMISE without
// END_HEADERS, then its CONTINUATION frames) is whole with the frame that
// ends it, or with the first frame that breaks it (the framer's error).
func frameWanted(br *bufio.Reader) int {
	n, want := br.Buffered(), 0
	for {
		if n < want+frameHeaderLen {
			return want + frameHeaderLen
		}
		b, _ := br.Peek(want + frameHeaderLen)
		h := b[want:]
		want += frameHeaderLen + (int(h[0])<<16 | int(h[1])<<8 | int(h[2]))
		switch http2.FrameType(h[3]) {
		case http2.FrameHeaders, http2.FramePushPromise, http2.FrameContinuation:
			if http2.Flags(h[4])&http2.FlagHeadersEndHeaders == 0 {
				continue // the block goes on in the next frame
			}
		}
		return want
	}
}

// socketWrites makes c write nc's socket itself when nc is plain TCP
// below the proxy's wrappers (send).
func (c *conn) socketWrites(nc net.Conn) {
	w := sock.NewWriter(nc)
	c.mu.Lock()
	c.sw = w
	c.mu.Unlock()
}

// socketReads makes c read nc's socket itself (package sock) when nc is
// plain TCP below the proxy's wrappers with nothing read ahead and the
// kernel has TCP_INQ; otherwise c reads through nc.
func (c *conn) socketReads(nc net.Conn) {
	e, ok := sock.Unwrap(nc, true)
	if !ok || e.Ahead > 0 {
		return
	}
	if r := sock.NewReader(e.TCP, e.Rx); r != nil && r.Inq() {
		c.sr = r
		c.br.Reset(r)
	}
}

// readFrames calls frame for each frame until it returns an error, b's
// frames flushed whenever no whole frame is buffered. With socket reads
// (c.sr) the frames are read and handled inside the poller's callback
// while whole ones are buffered, and the goroutine waits for the poller
// once the socket is empty, without asking it once more; a frame larger
// than br is read through the connection. pollErr decides what an error of
// the poller (the connection closed, its read deadline) does: nil goes on.
func (c *conn) readFrames(b *batch, frame func() error, pollErr func(error) error) error {
	if c.sr == nil {
		for {
			if !frameBuffered(c.br) {
				b.flush()
			}
			if err := frame(); err != nil {
				return err
			}
		}
	}
	var err error
	big := false
	step := func() bool {
		for {
			if !frameBuffered(c.br) {
				b.flush()
			}
			// Until a whole frame is buffered: its header first, then the
			// rest it announces.
			for !frameBuffered(c.br) {
				n := frameWanted(c.br)
				if n > c.br.Size() {
					big = true
					return true
				}
				if _, perr := c.br.Peek(n); perr != nil {
					if perr == sock.ErrWouldBlock {
						return false
					}
					err = perr
					return true
				}
			}
			if err = frame(); err != nil {
				return true
			}
		}
	}
	for {
		if perr := c.sr.Serve(step); perr != nil {
			if err := pollErr(perr); err != nil {
				return err
			}
			continue
		}
		if !big {
			return err
		}
		big = false
		if err := frame(); err != nil {
			return err
		}
	}
}

// half is one direction of a proxied stream as sent on one connection: the
// stream's id there, its send window, and the DATA (and trailers) waiting
// for credit. Its fields are under its connection's mu.
type half struct {
	c  *conn
	s  *stream
	id uint32 // 0: not opened on c yet
	// window is the stream's send window on c.
	window int64
	// pending holds DATA payload that had no credit yet; end and trailers
	// say how the stream ends after it.
	pending  []byte
	end      bool
	trailers []hpack.HeaderField
	queued   bool // in c.blocked
	// sent: END_STREAM or RST_STREAM went out; no more DATA is sent.
	sent bool
	// rst: RST_STREAM went out or came in on this half's stream: no
	// RST_STREAM is sent (again).
	rst bool
	// moved counts DATA payload bytes that left since the last credit
	// return to the source side.
	moved int64
}

// sendDataLocked sends data on h as far as the windows allow and keeps the
// rest pending; end ends the stream after it. It returns the bytes that
// left now (credit for the source). The caller holds c.mu.
func (c *conn) sendDataLocked(h *half, data []byte, end bool) int {
	if h.sent {
		return len(data) // dropped: the stream was reset; its credit goes back
	}
	if h.id == 0 || len(h.pending) > 0 || h.trailers != nil {
		h.pending = append(h.pending, data...)
		h.end = h.end || end
		c.queueLocked(h)
		return 0
	}
	n := c.writeDataLocked(h, data, end)
	if n < len(data) {
		h.pending = append(h.pending, data[n:]...)
		h.end = h.end || end
		c.queueLocked(h)
	}
	return n
}

// flooded tells whether the output outgrew any bound the flow of DATA
// keeps: the peer asks for answers (PING, SETTINGS) it does not read.
func (c *conn) flooded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.out) > maxOutput
}

// roomLocked is how much DATA the connection takes now: its window, and
// what its output still has room for.
func (c *conn) roomLocked() int64 {
	return min(c.sendWindow, int64(outputHigh-len(c.out)))
}

// writeDataLocked writes as much of data as the windows allow, in frames
// of the peer's size, END_STREAM on the last when end and all of data fit.
func (c *conn) writeDataLocked(h *half, data []byte, end bool) int {
	n := 0
	for {
		k := min(int64(len(data)-n), h.window, c.roomLocked(), int64(c.maxFrame))
		if k <= 0 && !(end && n == len(data)) {
			return n
		}
		last := end && n+int(k) == len(data)
		c.out = appendData(c.out, h.id, data[n:n+int(k)], last)
		n += int(k)
		h.window -= k
		c.sendWindow -= k
		if last {
			h.sent = true
			return n
		}
		if n == len(data) {
			return n
		}
	}
}

// queueLocked puts h in the blocked list when it holds DATA and waits on
// the connection (its window, or its output's room); a stream waiting on
// its own window is found by its WINDOW_UPDATE.
func (c *conn) queueLocked(h *half) {
	if !h.queued && h.id != 0 && len(h.pending) > 0 && h.window > 0 && c.roomLocked() <= 0 {
		h.queued = true
		c.blocked = append(c.blocked, h)
	}
}

// moved is what a resumed half sent, for its credit and end.
type moved struct {
	h    *half
	n    int
	sent bool
}

func resumeInto(ms []moved, n int, h *half) []moved {
	return append(ms, moved{h: h, n: n, sent: h.sent})
}

// creditMoved returns the credit of resumed halves to their sources and
// ends the directions that ended.
func creditMoved(b *batch, ms []moved) {
	for _, m := range ms {
		m.h.credit(b, m.n)
		if m.sent {
			m.h.s.markDone(m.h.doneBit())
		}
	}
}

// windowResult is what a peer's WINDOW_UPDATE did to a connection.
type windowResult int

const (
	windowApplied windowResult = iota
	// windowConnOverflow: the connection's window passed 2^31-1, a
	// connection error (RFC 9113 §6.9.1).
	windowConnOverflow
	// windowStreamOverflow: the stream's did, a stream error.
	windowStreamOverflow
	// windowNoStream: the stream is not open on the connection.
	windowNoStream
)

// windowUpdate applies a peer's WINDOW_UPDATE, sends on what it frees and
// returns that credit to the sources.
func (c *conn) windowUpdate(b *batch, f *http2.WindowUpdateFrame) windowResult {
	var resumed []moved
	res := windowApplied
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > maxWindow {
			res = windowConnOverflow
		} else {
			resumed = c.resumeBlockedLocked(resumed)
		}
	} else if h := c.streams[f.StreamID]; h == nil {
		res = windowNoStream
	} else if h.window += int64(f.Increment); h.window > maxWindow {
		res = windowStreamOverflow
	} else {
		resumed = c.resumeOneLocked(resumed, h)
	}
	c.mu.Unlock()
	b.touch(c)
	creditMoved(b, resumed)
	return res
}

// resumeOneLocked sends what h holds as far as the windows allow (after a
// WINDOW_UPDATE or SETTINGS) and queues it on the connection if that is
// what it waits for.
func (c *conn) resumeOneLocked(ms []moved, h *half) []moved {
	if len(h.pending) == 0 && !h.end {
		return ms
	}
	ms = resumeInto(ms, c.resumeLocked(h), h)
	c.queueLocked(h)
	return ms
}

// resumeBlockedLocked sends what the halves blocked on the connection hold,
// in order, while it has room.
func (c *conn) resumeBlockedLocked(ms []moved) []moved {
	blocked := c.blocked
	c.blocked = nil
	for i, h := range blocked {
		h.queued = false
		if c.roomLocked() <= 0 {
			for _, r := range blocked[i:] {
				r.queued = false
				c.queueLocked(r)
			}
			break
		}
		ms = resumeInto(ms, c.resumeLocked(h), h)
		c.queueLocked(h)
	}
	return ms
}

// sendHeadersLocked sends a header block on h: a response head, or
// trailers (which wait behind pending DATA).
func (c *conn) sendHeadersLocked(h *half, fields []hpack.HeaderField, end bool) {
	if h.sent {
		return
	}
	if len(h.pending) > 0 {
		h.trailers = slices.Clone(fields) // kept past the reader's next block
		h.end = true
		return
	}
	c.out = appendHeaders(c.out, h.id, c.encodeLocked(fields), end, c.maxFrame)
	if end {
		h.sent = true
	}
}

// resumeLocked sends what h holds as far as the windows now allow and
// returns the payload bytes that left.
func (c *conn) resumeLocked(h *half) int {
	if h.id == 0 || h.sent {
		return 0
	}
	n := 0
	if len(h.pending) > 0 {
		n = c.writeDataLocked(h, h.pending, h.end && h.trailers == nil)
		h.pending = h.pending[n:]
		if len(h.pending) == 0 {
			h.pending = nil
		}
	} else if h.end && h.trailers == nil {
		c.writeDataLocked(h, nil, true)
	}
	if len(h.pending) == 0 && h.trailers != nil {
		t := h.trailers
		h.trailers = nil
		c.out = appendHeaders(c.out, h.id, c.encodeLocked(t), true, c.maxFrame)
		h.sent = true
	}
	return n
}

// resetLocked sends RST_STREAM for h (once) and drops what it held; it
// returns the bytes dropped (credit for the source).
func (c *conn) resetLocked(h *half, code http2.ErrCode) int {
	dropped := len(h.pending)
	h.pending, h.trailers, h.end = nil, nil, false
	h.sent = true
	if h.id != 0 && !h.rst {
		h.rst = true
		c.out = appendRSTStream(c.out, h.id, code)
	}
	return dropped
}

// consumeLocked takes n bytes of DATA received on the connection out of its
// receive window; false when the peer sent more than it was granted.
func (c *conn) consumeLocked(n int64) bool {
	if n > c.recvWindow {
		return false
	}
	c.recvWindow -= n
	return true
}

// returnCreditLocked gives n bytes of connection credit back to the peer,
// batched: a WINDOW_UPDATE leaves once a quarter of the grant is owed.
func (c *conn) returnCreditLocked(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= c.grant/4 {
		c.out = appendWindowUpdate(c.out, 0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
	}
}

// applySettingsLocked applies a peer's SETTINGS frame; the error is a
// connection error to report.
func (c *conn) applySettingsLocked(f *http2.SettingsFrame) error {
	return f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			c.maxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.enc.SetMaxDynamicTableSizeLimit(s.Val)
		case http2.SettingMaxConcurrentStreams:
			c.maxStreams = s.Val
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.initWindow
			c.initWindow = int64(s.Val)
			if err := c.adjustWindowsLocked(delta); err != nil {
				return err
			}
		}
		return nil
	})
}

// settings applies a peer's SETTINGS frame, acknowledges it and sends on
// what a larger initial window freed; the error is a connection error.
func (c *conn) settings(b *batch, f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	old := c.initWindow
	if err := c.applySettingsLocked(f); err != nil {
		c.mu.Unlock()
		return err
	}
	c.out = appendSettingsAck(c.out)
	var resumed []moved
	if c.initWindow > old {
		for _, h := range c.streams {
			resumed = c.resumeOneLocked(resumed, h)
		}
	}
	c.mu.Unlock()
	b.touch(c)
	creditMoved(b, resumed)
	return nil
}

// ping answers a peer's PING.
func (c *conn) ping(b *batch, f *http2.PingFrame) {
	if f.IsAck() {
		return
	}
	c.mu.Lock()
	c.out = appendPingAck(c.out, f.Data)
	c.mu.Unlock()
	b.touch(c)
}

// adjustWindowsLocked moves every open stream's send window by delta
// (RFC 9113 §6.9.2).
func (c *conn) adjustWindowsLocked(delta int64) error {
	for _, h := range c.streams {
		h.window += delta
		if h.window > maxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	return nil
}
