package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const typicalRequest = "GET /api/v1/items?page=2 HTTP/1.1\r\n" +
	"Host: backend.mesh:8080\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
	"Accept: application/json\r\n" +
	"Accept-Encoding: gzip, deflate\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Connection: keep-alive\r\n" +
	"X-Request-Id: 0d6c2b5e-5e2f-4d7c-9d43-7f0a3e1b2c44\r\n" +
	"Cookie: session=abcdef0123456789\r\n\r\n"

const typicalResponse = "HTTP/1.1 200 OK\r\n" +
	"Content-Type: application/json\r\n" +
	"Content-Length: 1024\r\n" +
	"Date: Thu, 26 Nov 2026 12:00:00 GMT\r\n" +
	"Cache-Control: no-cache\r\n" +
	"X-Envoy-Upstream-Service-Time: 3\r\n\r\n"

// parseHead reads and parses one head from data.
func parseHead(data []byte, m *message, request bool) error {
	br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
	if err := readHead(br, m, DefaultMaxHeaderBytes); err != nil {
		return err
	}
	if request {
		return parseRequest(m)
	}
	return parseResponse(m)
}

func TestParseRequest(t *testing.T) {
	var m message
	require.NoError(t, parseHead([]byte(typicalRequest), &m, true))
	require.Equal(t, "GET", string(m.bytes(m.method)))
	require.Equal(t, "/api/v1/items?page=2", string(m.bytes(m.target)))
	require.Equal(t, 1, m.minor)
	require.Len(t, m.headers, 8)
	require.True(t, m.keepAlive)
	require.EqualValues(t, -1, m.contentLength)
	require.Equal(t, "backend.mesh:8080", string(m.bytes(m.headers[0].value)))
	require.True(t, m.headers[5].skip, "Connection")

	for _, tc := range []struct {
		name string
		head string
		err  error
	}{
		{name: "leading empty lines", head: "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "bare LF", head: "GET / HTTP/1.1\nHost: x\n\n"},
		{name: "value with tabs and obs-text", head: "GET / HTTP/1.1\r\nHost: x\r\nX: \ta\x80b\t\r\n\r\n"},
		{name: "same Content-Length twice", head: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"},
		{name: "chunked in two fields", head: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{name: "empty name", head: "GET / HTTP/1.1\r\n: x\r\n\r\n", err: errMalformed},
		{name: "version", head: "GET / HTTP/3.0\r\n\r\n", err: errVersion},
		{name: "no empty line", head: "GET / HTTP/1.1\r\nHost: x\r\n", err: io.ErrUnexpectedEOF},
		{name: "two Upgrade fields", head: "GET / HTTP/1.1\r\nUpgrade: a\r\nUpgrade: b\r\n\r\n", err: errMalformed},
		{name: "too large", head: "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", DefaultMaxHeaderBytes) + "\r\n\r\n", err: errTooLarge},
		{name: "empty", head: "", err: io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseHead([]byte(tc.head), &m, true)
			if tc.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.err)
		})
	}
}

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		head    string
		status  int
		chunked bool
		wantErr bool
	}{
		{name: "typical", head: typicalResponse, status: 200},
		{name: "no reason", head: "HTTP/1.1 204\r\n\r\n", status: 204},
		{name: "empty reason", head: "HTTP/1.1 404 \r\n\r\n", status: 404},
		{name: "HTTP/1.0", head: "HTTP/1.0 200 OK\r\n\r\n", status: 200},
		{name: "chunked", head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", status: 200, chunked: true},
		{name: "status too short", head: "HTTP/1.1 20 OK\r\n\r\n", wantErr: true},
		{name: "status 099", head: "HTTP/1.1 099 OK\r\n\r\n", wantErr: true},
		{name: "no space", head: "HTTP/1.1 200OK\r\n\r\n", wantErr: true},
		{name: "garbage", head: "SSH-2.0-OpenSSH\r\n\r\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m message
			err := parseHead([]byte(tc.head), &m, false)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.status, m.status)
			require.Equal(t, tc.chunked, m.chunked)
		})
	}
}

func TestParseChunkSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		size uint64
		ok   bool
	}{
		{name: "hex", line: "1aF\r\n", size: 0x1af, ok: true},
		{name: "zero", line: "0\r\n", size: 0, ok: true},
		{name: "extension", line: "5;a=b;c\r\n", size: 5, ok: true},
		{name: "BWS before extension", line: "5 ;a\r\n", size: 5, ok: true},
		{name: "bare LF", line: "5\n", size: 5, ok: true},
		{name: "empty", line: "\r\n"},
		{name: "0x prefix", line: "0x5\r\n"},
		{name: "negative", line: "-5\r\n"},
		{name: "too long", line: "1000000000000000\r\n"},
		{name: "control in extension", line: "5;\x00\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size, ok := parseChunkSize([]byte(tc.line))
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.size, size)
		})
	}
}

func BenchmarkParseRequest(b *testing.B) {
	data := []byte(typicalRequest)
	rd := bytes.NewReader(data)
	br := bufio.NewReaderSize(rd, 4096)
	var m message
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for range b.N {
		rd.Reset(data)
		br.Reset(rd)
		if err := readHead(br, &m, DefaultMaxHeaderBytes); err != nil {
			b.Fatal(err)
		}
		if err := parseRequest(&m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	data := []byte(typicalResponse)
	rd := bytes.NewReader(data)
	br := bufio.NewReaderSize(rd, 4096)
	var m message
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for range b.N {
		rd.Reset(data)
		br.Reset(rd)
		if err := readHead(br, &m, DefaultMaxHeaderBytes); err != nil {
			b.Fatal(err)
		}
		if err := parseResponse(&m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteRequestHead(b *testing.B) {
	var m message
	require.NoError(b, parseHead([]byte(typicalRequest), &m, true))
	bw := bufio.NewWriterSize(io.Discard, 4096)
	b.ReportAllocs()
	for range b.N {
		writeRequestHead(bw, &m, false)
		_ = bw.Flush()
	}
}

// FuzzParseRequest parses arbitrary heads. A head the proxy accepts must,
// once written on as the proxy forwards it, parse again to the same
// request with the same framing: what the upstream sees cannot differ from
// what the proxy saw.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		typicalRequest,
		"GET / HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, X-A\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\nX: a\n b\n\n",
		"\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m message
		if err := parseHead(data, &m, true); err != nil {
			return
		}
		checkSpans(t, &m)
		if checkRequest(&m) != 0 {
			return
		}
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		writeRequestHead(bw, &m, m.upgrade >= 0 && m.connUpgrade)
		require.NoError(t, bw.Flush())

		var m2 message
		require.NoError(t, parseHead(out.Bytes(), &m2, true), "forwarded head %q", out.String())
		require.Equal(t, string(m.bytes(m.method)), string(m2.bytes(m2.method)))
		require.Equal(t, string(m.bytes(m.target)), string(m2.bytes(m2.target)))
		require.Equal(t, 1, m2.minor)
		require.Equal(t, m.contentLength, m2.contentLength)
		require.Equal(t, m.chunked, m2.chunked)
		require.Equal(t, m.hasTE, m2.hasTE)
		require.Equal(t, max(m.hosts, 1), m2.hosts)
		require.Zero(t, checkRequest(&m2))
	})
}

// FuzzParseResponse parses arbitrary response heads and checks the same
// round trip for the heads the proxy passes on.
func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		typicalResponse,
		"HTTP/1.1 204\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m message
		if err := parseHead(data, &m, false); err != nil {
			return
		}
		checkSpans(t, &m)
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		writeResponseHead(bw, &m, false)
		_, _ = bw.WriteString("\r\n")
		require.NoError(t, bw.Flush())
		var m2 message
		require.NoError(t, parseHead(out.Bytes(), &m2, false), "forwarded head %q", out.String())
		require.Equal(t, m.status, m2.status)
		require.Equal(t, m.contentLength, m2.contentLength)
		require.Equal(t, m.chunked, m2.chunked)
	})
}

// FuzzChunked decodes arbitrary chunked bodies. A body that decodes must
// decode again, after the proxy re-encoded it, to the same data.
func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"0\r\n\r\n",
		"fffffffffffffff\r\n",
		"2\nab\n0\n\n",
	} {
		f.Add([]byte(s))
	}
	decode := func(data []byte, dechunk bool) ([]byte, error) {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		rerr, werr := copyChunked(bw, bufio.NewReaderSize(bytes.NewReader(data), 64), dechunk, 1024)
		if err := errors.Join(rerr, werr, bw.Flush()); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, err := decode(data, true)
		if err != nil {
			return
		}
		reencoded, err := decode(data, false)
		require.NoError(t, err)
		again, err := decode(reencoded, true)
		require.NoError(t, err, "re-encoded %q", reencoded)
		require.Equal(t, plain, again)
	})
}

// checkSpans requires every span of m to lie inside its buffer.
func checkSpans(t *testing.T, m *message) {
	t.Helper()
	in := func(s span) {
		require.True(t, 0 <= s.off && s.off <= s.end && s.end <= len(m.buf), "span %v of %d bytes", s, len(m.buf))
	}
	in(m.startLine)
	in(m.method)
	in(m.target)
	for _, h := range m.headers {
		in(h.line)
		in(h.name)
		in(h.value)
	}
	for _, s := range m.conn {
		in(s)
	}
}
