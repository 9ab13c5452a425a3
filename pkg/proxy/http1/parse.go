package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Parse errors. They carry the HTTP status a server answers with.
var (
	errMalformed   = &parseError{status: 400, msg: "malformed message"}
	errTooLarge    = &parseError{status: 431, msg: "header section too large"}
	errVersion     = &parseError{status: 505, msg: "unsupported HTTP version"}
	errUnsupported = &parseError{status: 501, msg: "unsupported transfer coding"}
)

type parseError struct {
	status int
	msg    string
}

func (e *parseError) Error() string { return "http1: " + e.msg }

// statusOf returns the status a server answers a request head error with.
func statusOf(err error) int {
	var pe *parseError
	if errors.As(err, &pe) {
		return pe.status
	}
	return 400
}

// span is a byte range [off, end) of a message's head buffer.
type span struct{ off, end int }

// Header kinds the proxy acts on; everything else is hOther.
const (
	hOther uint8 = iota
	hHost
	hContentLength
	hTransferEncoding
	hConnection
	hKeepAlive
	hProxyConnection
	hTE
	hTrailer
	hUpgrade
	hExpect
)

// header is one field line of a head: line covers the whole line including
// its terminator, which is CRLF unless lf is set (bare LF).
type header struct {
	line  span
	name  span
	value span
	kind  uint8
	lf    bool
	skip  bool // not forwarded
}

// message is a parsed request or response head. buf holds the raw bytes of
// the head (without leading empty lines); every span points into it. A
// message is reused from one request to the next: nothing in it allocates
// once its slices have grown.
type message struct {
	buf     []byte
	headers []header
	conn    []span // tokens of Connection other than close/keep-alive/upgrade

	startLine span // first line without its terminator
	method    span // request
	target    span // request
	status    int  // response
	minor     int  // HTTP/1.minor

	contentLength  int64 // -1 when absent
	hasTE          bool  // Transfer-Encoding present
	chunked        bool  // final transfer coding is chunked
	codings        int   // number of transfer codings
	chunkedCount   int   // how often chunked is among them
	close          bool  // Connection: close
	keepAlive      bool  // Connection: keep-alive
	connUpgrade    bool  // Connection: upgrade
	upgrade        int   // index of the Upgrade header, or -1
	expectContinue bool  // Expect: 100-continue
	hosts          int   // number of Host fields
}

func (m *message) reset() {
	m.buf = m.buf[:0]
	m.headers = m.headers[:0]
	m.conn = m.conn[:0]
	m.startLine, m.method, m.target = span{}, span{}, span{}
	m.status, m.minor = 0, 0
	m.contentLength = -1
	m.hasTE, m.chunked = false, false
	m.codings, m.chunkedCount = 0, 0
	m.close, m.keepAlive, m.connUpgrade = false, false, false
	m.upgrade = -1
	m.expectContinue = false
	m.hosts = 0
}

func (m *message) bytes(s span) []byte { return m.buf[s.off:s.end] }

// isMethod reports whether the request method is name.
func (m *message) isMethod(name string) bool {
	return string(m.bytes(m.method)) == name
}

// idempotent reports whether the request method is idempotent (RFC 9110
// §9.2.2), so that a request that failed before any response can be sent again.
func (m *message) idempotent() bool {
	switch string(m.bytes(m.method)) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// persistent reports whether the sender of m allows the connection to stay
// open after this message (RFC 9112 §9.3).
func (m *message) persistent() bool {
	if m.close {
		return false
	}
	return m.minor >= 1 || m.keepAlive
}

// headComplete reports whether br already buffers a whole head, so that
// reading it cannot block.
func headComplete(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// readHead reads one head (start line and field lines up to the empty line)
// from br into m.buf, at most max bytes. Empty lines before the start line
// are skipped (RFC 9112 §2.2), within the same limit. It returns io.EOF when
// br ended before any byte of a head, errTooLarge past max, and
// io.ErrUnexpectedEOF when the head was cut short.
func readHead(br *bufio.Reader, m *message, max int) error {
	m.reset()
	total := 0
	started := false
	lineStart := true // at the start of a line in m.buf
	for {
		line, err := br.ReadSlice('\n')
		total += len(line)
		if total > max {
			return errTooLarge
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				if !started && len(line) == 0 {
					return io.EOF
				}
				return io.ErrUnexpectedEOF
			}
			return err
		}
		complete := err == nil
		if !started {
			if lineStart && complete && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
				continue // empty line before the start line
			}
			started = true
		}
		if lineStart && complete && len(m.buf) > 0 && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			m.buf = append(m.buf, line...)
			return nil
		}
		m.buf = append(m.buf, line...)
		lineStart = complete
	}
}

// tchar is the set of token characters (RFC 9110 §5.6.2).
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// nextLine returns the line of b starting at off: the content end (before
// CRLF or LF) and the offset after the terminator. A CR not followed by LF
// is rejected by the field checks, since the content keeps it.
func nextLine(b []byte, off int) (contentEnd, next int, lf bool) {
	i := bytes.IndexByte(b[off:], '\n')
	if i < 0 {
		return len(b), len(b), false
	}
	next = off + i + 1
	contentEnd = off + i
	if contentEnd > off && b[contentEnd-1] == '\r' {
		return contentEnd - 1, next, false
	}
	return contentEnd, next, true
}

// parseVersion parses "HTTP/1.0" or "HTTP/1.1". Other well-formed versions
// give errVersion.
func parseVersion(v []byte) (int, error) {
	if len(v) != 8 || string(v[:5]) != "HTTP/" || v[6] != '.' || !isDigit(v[5]) || !isDigit(v[7]) {
		return 0, errMalformed
	}
	if v[5] != '1' || v[7] > '1' {
		return 0, errVersion
	}
	return int(v[7] - '0'), nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// parseRequest parses the head in m.buf as a request (RFC 9112 §3, §5).
func parseRequest(m *message) error {
	b := m.buf
	end, next, _ := nextLine(b, 0)
	if next == 0 || next > len(b) {
		return errMalformed
	}
	line := b[:end]
	m.startLine = span{0, end}
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errMalformed
	}
	for _, c := range line[:sp1] {
		if !tchar[c] {
			return errMalformed
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return errMalformed
	}
	for _, c := range rest[:sp2] {
		if c <= ' ' || c == 0x7f {
			return errMalformed
		}
	}
	minor, err := parseVersion(rest[sp2+1:])
	if err != nil {
		return err
	}
	m.method = span{0, sp1}
	m.target = span{sp1 + 1, sp1 + 1 + sp2}
	m.minor = minor
	return parseFields(m, next)
}

// parseResponse parses the head in m.buf as a response (RFC 9112 §4).
func parseResponse(m *message) error {
	b := m.buf
	end, next, _ := nextLine(b, 0)
	if next == 0 || next > len(b) {
		return errMalformed
	}
	line := b[:end]
	m.startLine = span{0, end}
	if len(line) < 12 || line[8] != ' ' {
		return errMalformed
	}
	minor, err := parseVersion(line[:8])
	if err != nil {
		return err
	}
	if !isDigit(line[9]) || !isDigit(line[10]) || !isDigit(line[11]) || line[9] == '0' {
		return errMalformed
	}
	if len(line) > 12 && line[12] != ' ' {
		return errMalformed
	}
	for _, c := range line[12:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errMalformed
		}
	}
	m.minor = minor
	m.status = int(line[9]-'0')*100 + int(line[10]-'0')*10 + int(line[11]-'0')
	return parseFields(m, next)
}

// parseFields parses the field lines of m.buf from off up to the empty line
// that ends the head, and interprets the fields the proxy acts on.
func parseFields(m *message, off int) error {
	b := m.buf
	for {
		if off >= len(b) {
			return errMalformed // no empty line
		}
		end, next, lf := nextLine(b, off)
		if next == len(b) && end == len(b) {
			return errMalformed // unterminated line
		}
		if end == off {
			if next != len(b) {
				return errMalformed
			}
			break
		}
		line := b[off:end]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 { // also obs-fold (a line starting with SP or HTAB) and no name
			return errMalformed
		}
		for _, c := range line[:colon] {
			if !tchar[c] {
				return errMalformed
			}
		}
		vs, ve := colon+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		for _, c := range line[vs:ve] {
			if c < ' ' && c != '\t' || c == 0x7f {
				return errMalformed
			}
		}
		h := header{
			line:  span{off, next},
			name:  span{off, off + colon},
			value: span{off + vs, off + ve},
			lf:    lf,
			kind:  kindOf(line[:colon]),
		}
		if err := m.interpret(&h); err != nil {
			return err
		}
		m.headers = append(m.headers, h)
		off = next
	}
	// Fields named by Connection are hop-by-hop too (RFC 9110 §7.6.1). The
	// framing and routing fields stay whatever Connection says, so that a
	// client cannot make the proxy drop them.
	if len(m.conn) > 0 {
		for i := range m.headers {
			h := &m.headers[i]
			if h.kind != hOther {
				continue
			}
			for _, t := range m.conn {
				if equalFold(m.bytes(h.name), m.bytes(t)) {
					h.skip = true
					break
				}
			}
		}
	}
	return nil
}

// interpret records what header h means for framing and connection handling,
// and marks the hop-by-hop fields as not forwarded.
func (m *message) interpret(h *header) error {
	v := m.bytes(h.value)
	switch h.kind {
	case hHost:
		m.hosts++
	case hContentLength:
		n, ok := parseContentLength(v)
		if !ok || (m.contentLength >= 0 && n != m.contentLength) {
			return errMalformed
		}
		m.contentLength = n
	case hTransferEncoding:
		return m.transferEncoding(v)
	case hConnection:
		h.skip = true
		m.connection(h.value)
	case hKeepAlive, hProxyConnection, hTE, hTrailer:
		h.skip = true
	case hUpgrade:
		h.skip = true // forwarded only when upgrading
		if m.upgrade >= 0 {
			return errMalformed
		}
		m.upgrade = len(m.headers)
	case hExpect:
		if equalFold(v, []byte("100-continue")) {
			m.expectContinue = true
		}
	}
	return nil
}

// parseContentLength parses 1DIGIT… with at most 18 digits (no overflow).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// transferEncoding folds one Transfer-Encoding field into m. Several fields
// form one list (RFC 9110 §5.3).
func (m *message) transferEncoding(v []byte) error {
	m.hasTE = true
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.Trim(tok, " \t")
		if len(tok) == 0 {
			continue
		}
		for _, c := range tok {
			if !tchar[c] && c != ';' && c != '=' && c != ' ' && c != '\t' && c != '"' {
				return errMalformed
			}
		}
		m.codings++
		m.chunked = equalFold(tok, []byte("chunked"))
		if m.chunked {
			m.chunkedCount++
		}
	}
	return nil
}

// framingError returns the error of a Transfer-Encoding list that is not a
// framing this proxy accepts: chunked applied more than once or not last
// (400), or, when only is set (requests), any coding other than chunked (501).
func (m *message) framingError(only bool) error {
	if !m.hasTE {
		return nil
	}
	switch {
	case m.codings == 0, m.chunkedCount > 1, m.chunkedCount == 1 && !m.chunked:
		return errMalformed
	case only && !(m.codings == 1 && m.chunked):
		return errUnsupported
	}
	return nil
}

// connection records the tokens of a Connection field.
func (m *message) connection(s span) {
	v := m.bytes(s)
	off := s.off
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		next := len(v)
		if i >= 0 {
			tok, next = v[:i], i+1
		} else {
			tok = v
		}
		ts, te := 0, len(tok)
		for ts < te && (tok[ts] == ' ' || tok[ts] == '\t') {
			ts++
		}
		for te > ts && (tok[te-1] == ' ' || tok[te-1] == '\t') {
			te--
		}
		t := tok[ts:te]
		switch {
		case len(t) == 0:
		case equalFold(t, []byte("close")):
			m.close = true
		case equalFold(t, []byte("keep-alive")):
			m.keepAlive = true
		case equalFold(t, []byte("upgrade")):
			m.connUpgrade = true
		default:
			m.conn = append(m.conn, span{off + ts, off + te})
		}
		off += next
		v = v[next:]
	}
}

// kindOf classifies a field name (case-insensitively) without allocating.
func kindOf(name []byte) uint8 {
	switch len(name) {
	case 2:
		if equalFold(name, []byte("te")) {
			return hTE
		}
	case 4:
		if equalFold(name, []byte("host")) {
			return hHost
		}
	case 6:
		if equalFold(name, []byte("expect")) {
			return hExpect
		}
	case 7:
		if equalFold(name, []byte("trailer")) {
			return hTrailer
		}
		if equalFold(name, []byte("upgrade")) {
			return hUpgrade
		}
	case 10:
		if equalFold(name, []byte("connection")) {
			return hConnection
		}
		if equalFold(name, []byte("keep-alive")) {
			return hKeepAlive
		}
	case 14:
		if equalFold(name, []byte("content-length")) {
			return hContentLength
		}
	case 16:
		if equalFold(name, []byte("proxy-connection")) {
			return hProxyConnection
		}
	case 17:
		if equalFold(name, []byte("transfer-encoding")) {
			return hTransferEncoding
		}
	}
	return hOther
}

// equalFold compares ASCII case-insensitively; lower must be lower case
// when it is a literal, but any two values compare correctly.
func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
