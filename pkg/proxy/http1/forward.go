package http1

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Bodies of the answers the proxy makes itself, as Envoy words them.
const (
	bodyUpstreamFailure = "upstream connect error or disconnect/reset before headers"
	bodyUpstreamTimeout = "upstream request timeout"
)

// Response body framings (RFC 9112 §6.3).
const (
	framingNone    = iota // no body
	framingLength         // Content-Length
	framingChunked        // chunked is the final transfer coding
	framingClose          // delimited by the upstream closing the connection
)

// outcome of sending a request and waiting for its response head.
type outcome int

const (
	gotResponse    outcome = iota // s.resp holds a final (or 101) head
	downstreamGone                // reading the request body from the client failed
	badRequestBody                // the client's chunked body is malformed
	upstreamFailed                // the upstream failed before a response head
	upstreamSlow                  // the response head did not come in time
)

// errDownstream marks a failed write to the client while passing on an
// interim response.
var errDownstream = errors.New("http1: downstream write failed")

// checkRequest returns the status that rejects a request whose framing or
// routing the proxy does not forward, or 0.
func checkRequest(m *message) int {
	switch {
	case m.hasTE && m.contentLength >= 0:
		return 400 // both framings: a smuggling attempt (RFC 9112 §6.1)
	case m.hasTE && m.minor == 0:
		return 400 // RFC 9112 §6.1: faulty framing in HTTP/1.0
	case m.hosts > 1, m.minor >= 1 && m.hosts == 0:
		return 400 // RFC 9112 §3.2
	case m.isMethod("CONNECT"):
		return 501
	}
	if err := m.framingError(true); err != nil {
		return statusOf(err)
	}
	return 0
}

// forward proxies the request in s.req and its response. It reports whether
// the downstream connection may carry another request.
func (s *session) forward(cfg *config, start time.Time) bool {
	req := &s.req
	lst, cl := cfg.Listener, cfg.Cluster
	s.stall.Timeout = cfg.IdleTimeout
	lst.DownstreamRqActive.Inc()
	defer lst.DownstreamRqActive.Dec()

	if status := checkRequest(req); status != 0 {
		s.linger = true
		lst.RequestDone(status, time.Since(start))
		s.writeLocal(status, "", true)
		_ = s.bw.Flush()
		return false
	}
	http10 := req.minor == 0
	hasBody := req.chunked || req.contentLength > 0
	upgrade := !http10 && req.upgrade >= 0 && req.connUpgrade
	expect := req.expectContinue && hasBody && !http10

	// A body that fits in the read buffer is sent from there and consumed
	// only once a response head arrived, so that it can be sent again.
	var body []byte
	if hasBody && !req.chunked && !expect && req.contentLength <= int64(s.br.Size()) {
		if int64(s.br.Buffered()) < req.contentLength {
			_ = s.conn.SetReadDeadline(time.Now().Add(cfg.IdleTimeout))
		}
		b, err := s.br.Peek(int(req.contentLength))
		if err != nil {
			lst.RequestDone(0, time.Since(start))
			return false
		}
		body = b
	}
	replayable := !hasBody || (body != nil && req.idempotent())
	bodyDone := !hasBody // the request body was read from the client

	cl.UpstreamRqActive.Inc()
	defer cl.UpstreamRqActive.Dec()

	picked := ""
	if cfg.Pick != nil {
		picked = cfg.Pick()
	}
	uc := s.p.pool.get(start, picked, cfg.Reusable)
	reused := uc != nil
	var err error
	if uc == nil {
		if uc, err = s.p.dial(cfg, picked); err != nil {
			return s.connectFailed(cfg, err, start, body, bodyDone)
		}
	}

	var out outcome
	var skipped, sent bool
	for attempt := 0; ; attempt++ {
		mark := uc.rxTotal
		out, skipped, sent, err = s.exchange(cfg, uc, body, upgrade, expect)
		if out != upstreamFailed || !reused || attempt > 0 || !replayable || uc.rxTotal != mark {
			break
		}
		// A pooled connection the upstream had closed: once more on a new one.
		uc.close()
		reused = false
		if uc, err = s.p.dial(cfg, picked); err != nil {
			return s.connectFailed(cfg, err, start, body, bodyDone)
		}
	}
	if body != nil {
		_, _ = s.br.Discard(len(body))
		bodyDone = true
	} else if hasBody && sent {
		bodyDone = true
	}

	switch out {
	case downstreamGone, badRequestBody:
		cl.UpstreamRqTotal.Inc()
		cl.UpstreamRqTxReset.Inc()
		cl.UpstreamCxDestroyLocalWithActiveRq.Inc()
		uc.close()
		status := 0
		if out == badRequestBody {
			status = 400
		}
		lst.RequestDone(status, time.Since(start))
		if status != 0 {
			s.linger = true
			s.writeLocal(status, "", true)
			_ = s.bw.Flush()
		}
		return false
	case upstreamSlow:
		cl.UpstreamRqTimeout.Inc()
		cl.UpstreamCxDestroyLocalWithActiveRq.Inc()
		uc.close()
		return s.upstreamError(cfg, 504, bodyUpstreamTimeout, start, bodyDone)
	case upstreamFailed:
		if s.p.ctx.Err() == nil && cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
			cfg.Log.Debug("upstream failed before response headers", "endpoint", uc.ep.addr, "err", err)
		}
		var pe *parseError
		if errors.As(err, &pe) {
			// A malformed response head: the proxy drops the connection.
			cl.UpstreamCxDestroyLocalWithActiveRq.Inc()
		} else {
			cl.UpstreamRqRxReset.Inc()
			cl.UpstreamCxDestroyRemoteWithActiveRq.Inc()
		}
		uc.close()
		return s.upstreamError(cfg, 503, bodyUpstreamFailure, start, bodyDone)
	}
	return s.respond(cfg, uc, start, upgrade, bodyDone && !skipped)
}

// exchange writes the request to uc and reads up to the final response
// head. skipped reports that the upstream answered an Expect: 100-continue
// with a final status, so the body was not sent; sent that a streamed body
// was read from the client completely.
func (s *session) exchange(cfg *config, uc *upConn, body []byte, upgrade, expect bool) (out outcome, skipped, sent bool, err error) {
	req := &s.req
	writeRequestHead(uc.bw, req, upgrade)
	if body != nil {
		_, _ = uc.bw.Write(body)
	}
	var werr error
	if expect {
		if werr = uc.bw.Flush(); werr == nil {
			now := time.Now()
			uc.setReadDeadline(now.Add(min(expectContinueWait, cfg.ResponseHeaderTimeout)))
			_, err = uc.br.Peek(1)
			switch {
			case err == nil:
				uc.setReadDeadline(now.Add(cfg.ResponseHeaderTimeout))
				if err = s.readResponse(cfg, uc, true); err != nil {
					return classify(err), false, false, err
				}
				if s.resp.status != 100 {
					return gotResponse, true, false, nil
				}
			case errors.Is(err, os.ErrDeadlineExceeded):
				// No answer yet: send the body anyway.
			default:
				return upstreamFailed, false, false, err
			}
		}
	}
	if (req.chunked || req.contentLength > 0) && body == nil && werr == nil {
		_ = s.conn.SetReadDeadline(time.Time{})
		var rerr error
		if req.chunked {
			rerr, werr = copyChunked(uc.bw, s.br, false, cfg.MaxHeaderBytes)
		} else {
			rerr, werr = copyFixed(uc.bw, s.br, req.contentLength)
		}
		if rerr != nil {
			if errors.Is(rerr, errBadChunk) {
				return badRequestBody, false, false, rerr
			}
			return downstreamGone, false, false, rerr
		}
		sent = werr == nil
	}
	if werr == nil {
		werr = uc.bw.Flush()
	}
	// Even when writing failed, the upstream may have answered (e.g. 413
	// before the whole body): read what it sent.
	uc.setReadDeadline(time.Now().Add(cfg.ResponseHeaderTimeout))
	runtime.Gosched() // the response takes a while: see yieldBeforeRead in serve
	if err = s.readResponse(cfg, uc, false); err != nil {
		if werr != nil && !errors.Is(err, errDownstream) {
			err = werr
		}
		return classify(err), false, sent, err
	}
	if s.resp.status == 101 && !upgrade {
		return upstreamFailed, false, sent, errMalformed
	}
	if werr != nil {
		sent = false // the upstream answered before taking the whole request
	}
	return gotResponse, false, sent, nil
}

func classify(err error) outcome {
	switch {
	case errors.Is(err, errDownstream):
		return downstreamGone
	case errors.Is(err, os.ErrDeadlineExceeded):
		return upstreamSlow
	}
	return upstreamFailed
}

// readResponse reads response heads from uc into s.resp until a final one
// (or 101), passing interim responses on to an HTTP/1.1 client; with
// stopAt100 it also stops after a 100.
func (s *session) readResponse(cfg *config, uc *upConn, stopAt100 bool) error {
	for {
		err := readHead(uc.br, &s.resp, cfg.MaxHeaderBytes)
		if err == nil {
			err = parseResponse(&s.resp)
		}
		if err != nil {
			return err
		}
		st := s.resp.status
		if st >= 200 || st == 101 {
			return nil
		}
		if s.req.minor >= 1 {
			writeResponseHead(s.bw, &s.resp, false)
			_, _ = s.bw.WriteString("\r\n")
			if err := s.bw.Flush(); err != nil {
				return errDownstream
			}
		}
		if st == 100 && stopAt100 {
			return nil
		}
	}
}

// respond passes the response head in s.resp and its body on to the
// client, then returns uc to the pool or closes it. reqDone tells whether
// the whole request was read from the client and reached the upstream (not
// so when the upstream answered an Expect: 100-continue with a final status
// or before it took the whole body).
func (s *session) respond(cfg *config, uc *upConn, start time.Time, upgrade, reqDone bool) bool {
	req, resp := &s.req, &s.resp
	lst, cl := cfg.Listener, cfg.Cluster
	http10 := req.minor == 0

	framing := framingNone
	switch {
	case resp.status == 101 || resp.status == 204 || resp.status == 304 || req.isMethod("HEAD"):
	case resp.hasTE:
		if err := resp.framingError(false); err != nil {
			cl.UpstreamCxDestroyLocalWithActiveRq.Inc()
			uc.close()
			return s.upstreamError(cfg, 503, bodyUpstreamFailure, start, reqDone)
		}
		framing = framingClose
		if resp.chunked {
			framing = framingChunked
		}
	case resp.contentLength >= 0:
		framing = framingLength
	default:
		framing = framingClose
	}

	upKeep := resp.persistent() && reqDone && framing != framingClose && !(resp.hasTE && resp.contentLength >= 0)
	keep := req.persistent() && reqDone && !s.p.draining.Load()
	rechunk, dechunk := false, false
	switch framing {
	case framingChunked:
		if http10 {
			dechunk, keep = true, false
		}
	case framingClose:
		if !http10 && !resp.hasTE && keep {
			rechunk = true
		} else {
			keep = false
		}
	}
	if resp.hasTE && (dechunk || resp.contentLength >= 0) {
		for i := range resp.headers {
			h := &resp.headers[i]
			if (dechunk && h.kind == hTransferEncoding) || (resp.hasTE && h.kind == hContentLength) {
				h.skip = true
			}
		}
	}

	upgrading := resp.status == 101
	w := s.bw
	writeResponseHead(w, resp, upgrading)
	switch {
	case upgrading:
		_, _ = w.WriteString("Connection: Upgrade\r\n")
	case !keep:
		_, _ = w.WriteString("Connection: close\r\n")
	case http10:
		_, _ = w.WriteString("Connection: keep-alive\r\n")
	}
	if rechunk {
		_, _ = w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, _ = w.WriteString("\r\n")

	if upgrading {
		werr := w.Flush()
		if werr == nil {
			s.tunnel(uc)
		}
		cl.RequestDone(101, time.Since(start), s.external)
		lst.RequestDone(101, time.Since(start))
		uc.close()
		return false
	}

	var rerr, werr error
	switch framing {
	case framingLength:
		if int64(uc.br.Buffered()) < resp.contentLength {
			uc.setReadDeadline(time.Time{})
		}
		rerr, werr = copyFixed(w, uc.br, resp.contentLength)
	case framingChunked:
		uc.setReadDeadline(time.Time{})
		rerr, werr = copyChunked(w, uc.br, dechunk, cfg.MaxHeaderBytes)
	case framingClose:
		uc.setReadDeadline(time.Time{})
		rerr, werr = copyToEOF(w, uc.br, rechunk)
	}
	d := time.Since(start)
	status := resp.status
	cl.RequestDone(status, d, s.external)
	lst.RequestDone(status, d)
	switch {
	case rerr != nil:
		// The upstream reset or broke the framing after the head: the
		// client gets what came and its connection closes.
		cl.UpstreamRqRxReset.Inc()
		cl.UpstreamCxDestroyRemoteWithActiveRq.Inc()
		uc.close()
		_ = w.Flush()
		return false
	case werr != nil:
		cl.UpstreamRqTxReset.Inc()
		cl.UpstreamCxDestroyLocalWithActiveRq.Inc()
		uc.close()
		return false
	}
	// The upstream side is done: its connection can serve another request
	// while the last bytes of this response go out.
	if upKeep && uc.br.Buffered() == 0 {
		uc.flushStats()
		s.p.pool.put(uc, start.Add(d), cfg.MaxIdlePerEndpoint)
	} else {
		uc.close()
	}
	if err := w.Flush(); err != nil {
		return false
	}
	if !reqDone {
		s.linger = true
	}
	return keep
}

// connectFailed answers a request for which no upstream connection could be
// opened.
func (s *session) connectFailed(cfg *config, err error, start time.Time, body []byte, bodyDone bool) bool {
	if s.p.ctx.Err() == nil && cfg.Log.Enabled(context.Background(), slog.LevelDebug) {
		cfg.Log.Debug("upstream connect failed", "err", err)
	}
	// Dial counts upstream_cx_connect_fail, one per failed attempt.
	cfg.Cluster.UpstreamRqPendingFailureEject.Inc()
	if body != nil {
		_, _ = s.br.Discard(len(body))
		bodyDone = true
	}
	return s.upstreamError(cfg, 503, bodyUpstreamFailure, start, bodyDone)
}

// upstreamError answers with an error the proxy makes itself, counted on
// both sides as Envoy does. The connection stays open when the request was
// read completely.
func (s *session) upstreamError(cfg *config, status int, body string, start time.Time, reqRead bool) bool {
	keep := reqRead && s.req.persistent() && !s.p.draining.Load()
	s.linger = !reqRead
	d := time.Since(start)
	cfg.Cluster.RequestDone(status, d, s.external)
	cfg.Listener.RequestDone(status, d)
	s.writeLocal(status, body, !keep)
	return s.bw.Flush() == nil && keep
}

// writeRequestHead writes the request line and the end-to-end fields of m,
// as HTTP/1.1, with the fields an upgrade needs.
func writeRequestHead(w *bufio.Writer, m *message, upgrade bool) {
	_, _ = w.Write(m.buf[:m.target.end])
	_, _ = w.WriteString(" HTTP/1.1\r\n")
	writeFields(w, m, upgrade)
	if upgrade {
		_, _ = w.WriteString("Connection: Upgrade\r\n")
	}
	if m.hosts == 0 {
		_, _ = w.WriteString("Host: \r\n") // an HTTP/1.0 request without Host (RFC 9112 §3.2)
	}
	_, _ = w.WriteString("\r\n")
}

// writeResponseHead writes the status line of m as HTTP/1.1 and its
// end-to-end fields (with Upgrade when upgrading), without the empty line.
func writeResponseHead(w *bufio.Writer, m *message, upgrade bool) {
	_, _ = w.WriteString("HTTP/1.1")
	_, _ = w.Write(m.buf[8:m.startLine.end])
	_, _ = w.WriteString("\r\n")
	writeFields(w, m, upgrade)
}

// writeFields writes the fields of m that are not skipped, in runs of
// consecutive lines copied as they came (bare LF line ends become CRLF).
func writeFields(w *bufio.Writer, m *message, keepUpgrade bool) {
	run, runEnd := -1, 0
	for i := range m.headers {
		h := &m.headers[i]
		skip := h.skip && !(keepUpgrade && h.kind == hUpgrade)
		if skip || h.lf {
			if run >= 0 {
				_, _ = w.Write(m.buf[run:runEnd])
				run = -1
			}
			if !skip {
				_, _ = w.Write(m.buf[h.line.off : h.line.end-1])
				_, _ = w.WriteString("\r\n")
			}
			continue
		}
		if run < 0 {
			run = h.line.off
		}
		runEnd = h.line.end
	}
	if run >= 0 {
		_, _ = w.Write(m.buf[run:runEnd])
	}
}

// writeLocal writes a response the proxy makes itself.
func (s *session) writeLocal(status int, body string, close bool) {
	w := s.bw
	if w.Available() < 128 {
		_ = w.Flush()
	}
	b := append(w.AvailableBuffer(), "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, reasonPhrase(status)...)
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	_, _ = w.Write(b)
	if body != "" {
		_, _ = w.WriteString("Content-Type: text/plain\r\n")
	}
	if close {
		_, _ = w.WriteString("Connection: close\r\n")
	} else if s.req.minor == 0 {
		_, _ = w.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = w.WriteString("\r\n")
	if !s.req.isMethod("HEAD") {
		_, _ = w.WriteString(body)
	}
}

func reasonPhrase(status int) string {
	switch status {
	case 400:
		return "Bad Request"
	case 408:
		return "Request Timeout"
	case 431:
		return "Request Header Fields Too Large"
	case 501:
		return "Not Implemented"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}
