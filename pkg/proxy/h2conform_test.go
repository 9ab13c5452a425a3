package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/pkg/stats"
)

// The HTTP/2 conformance tests: what any HTTP/2 engine of the http2 and
// grpc outbounds must do, seen from outside only (a client speaking frames
// to the outbound's address, backends that are net/http h2c servers or
// speak frames themselves, and the proxy's statistics). The client is
// h2client (h2client_test.go); RFC sections are RFC 9113's.

// pattern is n bytes of a deterministic pseudo-random sequence.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	p := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	return p[:n]
}

// Many streams on one connection, their requests' frames interleaved: each
// answer carries its own stream's request.
func TestH2ConformConcurrentStreams(t *testing.T) {
	leaveNoGoroutines(t)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("X-Path", r.URL.Path)
		_, _ = fmt.Fprintf(w, "%s:%s", r.URL.Path, body)
	}))
	_, st, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2Client(t, proxy)

	// 200 streams, or as many as the proxy takes at once: no fewer than
	// 100 (RFC 9113 §6.5.2 recommends no smaller a limit).
	streams := 200
	if limit, ok := c.settings()[http2.SettingMaxConcurrentStreams]; ok {
		require.GreaterOrEqual(t, limit, uint32(100), "SETTINGS_MAX_CONCURRENT_STREAMS")
		streams = min(streams, int(limit))
	}
	id := func(i int) uint32 { return uint32(2*i + 1) }
	// Every request's HEADERS first, then the first half of each body
	// backwards, then the second halves with END_STREAM.
	for i := range streams {
		c.headers(id(i), false, request("POST", fmt.Sprintf("/s/%d", i))...)
	}
	for i := streams - 1; i >= 0; i-- {
		c.data(id(i), []byte(fmt.Sprintf("first-%d,", i)), false)
	}
	for i := range streams {
		c.data(id(i), []byte(fmt.Sprintf("second-%d", i)), true)
	}
	for i := range streams {
		r := c.ok(id(i))
		path := fmt.Sprintf("/s/%d", i)
		require.Equal(t, path, field(r.headers, "x-path"))
		require.Equal(t, fmt.Sprintf("%s:first-%d,second-%d", path, i, i), string(r.body), "stream %d", id(i))
	}
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_2xx") == strconv.Itoa(streams) },
		waitTimeout, time.Millisecond)
}

// A 4 MiB request body is echoed back byte for byte, and a 4 MiB response
// arrives whole, to a client whose streams have a 16 KiB window: the
// client's WINDOW_UPDATEs pace the proxy, which never sends more than the
// windows allow (h2client checks every DATA frame), and the client's body
// goes within the windows the proxy grants.
func TestH2ConformLargeBodiesFlowControl(t *testing.T) {
	leaveNoGoroutines(t)
	const size = 4 << 20
	large := pattern(1, size)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			// Streams back as it reads (HTTP/2 lets a server answer before
			// the request ended).
			_, _ = io.Copy(w, r.Body)
		case "/large":
			_, _ = w.Write(large)
		}
	}))
	for _, protocol := range []string{"http2", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			_, _, proxy := protocolOutbound(t, protocol, backend)
			c := dialH2Client(t, proxy, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 16 << 10})

			body := pattern(2, size)
			c.headers(1, false, request("POST", "/echo", "content-type", "application/octet-stream")...)
			sent := make(chan error, 1)
			go func() { sent <- c.sendData(1, body, true) }() // while the echo comes back
			echo := c.response(1)
			require.NoError(t, <-sent)
			require.True(t, echo.ended, "the echo ends cleanly: reset %v, connection %v", echo.reset, echo.closed)
			require.Equal(t, "200", echo.status())
			require.Equal(t, sha256.Sum256(body), sha256.Sum256(echo.body), "the echo (%d bytes of %d)", len(echo.body), size)

			c.get(3, "/large")
			r := c.ok(3)
			require.Equal(t, sha256.Sum256(large), sha256.Sum256(r.body), "the large response (%d bytes of %d)", len(r.body), size)
			require.Empty(t, c.brokenRules(), "DATA within the windows the client advertised")
		})
	}
}

// A client that stops reading one stream (sends it no WINDOW_UPDATE) holds
// up neither its other streams nor another client's, whose requests share
// the same upstream connection; once it reads again, the held stream's
// answer arrives whole.
func TestH2ConformStalledStreamBlocksNoOther(t *testing.T) {
	leaveNoGoroutines(t)
	// Larger than the upstream's default windows (64 KiB): an engine that
	// let a stalled stream's data take the upstream connection's credit
	// would stall every stream on it.
	const size = 2 << 20
	big := pattern(3, size)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = w.Write(big)
			return
		}
		_, _ = io.WriteString(w, "small")
	}))
	_, st, proxy := protocolOutbound(t, "http2", backend)
	const window = 16 << 10
	a := dialH2Client(t, proxy, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	a.hold(1)
	a.get(1, "/big")
	head := a.await(1, nil)
	require.Equal(t, "200", field(head.fields, ":status"), "%v", head)
	// The held stream gets no more than its window.
	require.Eventually(t, func() bool { return a.streamWindow(1) == 0 }, waitTimeout, time.Millisecond,
		"the held stream's window fills")

	// Meanwhile: another stream of the same client, and another client on
	// the same upstream connection, a small and a big answer each.
	a.get(3, "/small")
	require.Equal(t, "small", string(a.ok(3).body))
	b := dialH2Client(t, proxy, http2.Setting{ID: http2.SettingInitialWindowSize, Val: window})
	b.get(1, "/small")
	require.Equal(t, "small", string(b.ok(1).body))
	b.get(3, "/big")
	require.Equal(t, sha256.Sum256(big), sha256.Sum256(b.ok(3).body))
	a.get(5, "/big")
	require.Equal(t, sha256.Sum256(big), sha256.Sum256(a.ok(5).body))
	require.Equal(t, int64(0), a.streamWindow(1), "the held stream still got no more than its window")
	require.Empty(t, a.brokenRules(), "DATA within the windows the client advertised")

	a.release(1)
	rest := a.response(1)
	require.True(t, rest.ended, "the held stream ends once read: %v %v", rest.reset, rest.closed)
	require.Equal(t, sha256.Sum256(big), sha256.Sum256(rest.body), "the held stream's answer, whole (%d bytes)", len(rest.body))
	upstreamConnections(t, st, 1, "both clients' requests on one upstream connection")
}

// RST_STREAM from the client cancels the upstream request, before and after
// the response's headers, counted as upstream_rq_tx_reset; the connection
// goes on serving.
func TestH2ConformClientResetCancelsUpstream(t *testing.T) {
	leaveNoGoroutines(t)
	started := make(chan string, 4)
	cancelled := make(chan string, 4)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/after-headers" {
			_, _ = io.WriteString(w, "first")
			http.NewResponseController(w).Flush()
		}
		if r.URL.Path != "/ok" {
			started <- r.URL.Path
			select {
			case <-r.Context().Done():
				cancelled <- r.URL.Path
			case <-time.After(waitTimeout):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	for _, protocol := range []string{"http2", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			_, st, proxy := protocolOutbound(t, protocol, backend)
			c := dialH2Client(t, proxy)
			for i, path := range []string{"/before-headers", "/after-headers"} {
				id := uint32(2*i + 1)
				c.get(id, path)
				require.Equal(t, path, recv(t, started, "the backend's request"))
				if path == "/after-headers" {
					f := c.awaitType(id, http2.FrameData)
					require.Equal(t, "first", string(f.data))
				}
				c.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, http2.ErrCodeCancel) })
				require.Equal(t, path, recv(t, cancelled, "the backend's request context cancelled"))
				require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_tx_reset") == strconv.Itoa(i+1) },
					waitTimeout, time.Millisecond)
			}
			c.get(5, "/ok")
			require.Equal(t, "ok", string(c.ok(5).body))
		})
	}
}

// recv takes the next value of ch within waitTimeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("%s: nothing within %v", what, waitTimeout)
		panic("unreachable")
	}
}

// An upstream RST_STREAM reaches the client: before the response's headers
// as RST_STREAM or a 5xx answer, after them as RST_STREAM (never as an
// answer that looks complete), counted as upstream_rq_rx_reset.
func TestH2ConformUpstreamReset(t *testing.T) {
	leaveNoGoroutines(t)
	backend, _ := frameBackend(t, func(s *rawConn) {
		for {
			id, fields, err := s.request()
			if err != nil {
				return
			}
			switch field(fields, ":path") {
			case "/reset-before-headers":
				err = s.reset(id, http2.ErrCodeInternal)
			case "/reset-after-headers":
				if err = s.headers(id, false, ":status", "200"); err == nil {
					if err = s.data(id, "partial", false); err == nil {
						err = s.reset(id, http2.ErrCodeInternal)
					}
				}
			default:
				if err = s.headers(id, false, ":status", "200"); err == nil {
					err = s.data(id, "ok", true)
				}
			}
			if err != nil {
				return
			}
		}
	})
	_, st, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2Client(t, proxy)

	c.get(1, "/reset-before-headers")
	r := c.response(1)
	require.NoError(t, r.closed)
	if r.reset == nil {
		require.True(t, r.ended)
		require.Equal(t, byte('5'), r.status()[0], "a reset before the headers: RST_STREAM or a 5xx answer, not %v", r.frames)
	}
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_rx_reset") == "1" }, waitTimeout, time.Millisecond)

	c.get(3, "/reset-after-headers")
	r = c.response(3)
	require.NoError(t, r.closed)
	require.Equal(t, "200", r.status())
	require.Equal(t, "partial", string(r.body))
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_rx_reset") == "2" }, waitTimeout, time.Millisecond)
	t.Run("after the headers, the client's stream is reset", func(t *testing.T) {
		mustNot(t, r.reset == nil, "the upstream's RST_STREAM after the headers ends the client's stream with "+
			"END_STREAM, a truncated answer that looks complete: %v", r.frames)
	})

	c.get(5, "/ok")
	require.Equal(t, "ok", string(c.ok(5).body), "the connection goes on")
}

// Trailers pass through: gRPC's (DATA, then grpc-status in a trailing
// HEADERS), an answer of HEADERS and trailers with no DATA, and gRPC's
// trailers-only answer (one HEADERS with END_STREAM).
func TestH2ConformTrailers(t *testing.T) {
	leaveNoGoroutines(t)
	backend, _ := frameBackend(t, func(s *rawConn) {
		for {
			id, fields, err := s.request()
			if err != nil {
				return
			}
			head := []string{":status", "200", "content-type", "application/grpc"}
			switch field(fields, ":path") {
			case "/body-and-trailers":
				if err = s.headers(id, false, head...); err == nil {
					if err = s.data(id, "\x00\x00\x00\x00\x02hi", false); err == nil {
						err = s.headers(id, true, "grpc-status", "0", "grpc-message", "fine")
					}
				}
			case "/trailers-no-body":
				if err = s.headers(id, false, head...); err == nil {
					err = s.headers(id, true, "grpc-status", "5", "grpc-message", "not found")
				}
			case "/trailers-only":
				err = s.headers(id, true, append(head, "grpc-status", "7", "grpc-message", "denied")...)
			}
			if err != nil {
				return
			}
		}
	})
	for _, protocol := range []string{"http2", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			_, _, proxy := protocolOutbound(t, protocol, backend)
			c := dialH2Client(t, proxy)
			grpcRequest := func(id uint32, path string) {
				c.headers(id, false, request("POST", path, "content-type", "application/grpc", "te", "trailers")...)
				c.data(id, []byte("\x00\x00\x00\x00\x00"), true)
			}

			grpcRequest(1, "/body-and-trailers")
			r := c.ok(1)
			require.Equal(t, "application/grpc", field(r.headers, "content-type"))
			require.Equal(t, "\x00\x00\x00\x00\x02hi", string(r.body))
			require.Equal(t, "0", field(r.trailers, "grpc-status"), "trailers after the DATA: %v", r.frames)
			require.Equal(t, "fine", field(r.trailers, "grpc-message"))
			last := r.frames[len(r.frames)-1]
			require.Equal(t, http2.FrameHeaders, last.typ, "the trailers end the stream")

			grpcRequest(3, "/trailers-no-body")
			r = c.ok(3)
			require.Empty(t, r.body)
			require.Equal(t, "5", field(r.trailers, "grpc-status"), "trailers after the headers: %v", r.frames)
			require.Equal(t, "not found", field(r.trailers, "grpc-message"))

			grpcRequest(5, "/trailers-only")
			r = c.ok(5)
			require.Empty(t, r.body)
			// In the one HEADERS as sent, or moved to a trailing block:
			// either way the client reads the status.
			status := field(append(r.headers, r.trailers...), "grpc-status")
			require.Equal(t, "7", status, "grpc-status of a trailers-only answer: %v", r.frames)
			require.Equal(t, "denied", field(append(r.headers, r.trailers...), "grpc-message"))
		})
	}
}

// Malformed client input gets the error RFC 9113 asks for, never a hang
// or a request upstream, and the proxy goes on serving new connections.
func TestH2ConformMalformedInput(t *testing.T) {
	leaveNoGoroutines(t)
	var reached atomic.Int32
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			reached.Add(1)
		}
		_, _ = io.WriteString(w, "ok")
	}))
	_, _, proxy := protocolOutbound(t, "http2", backend)

	// streamError accepts a malformed request's answer (§8.1.1): a stream
	// error PROTOCOL_ERROR, which the proxy may raise to a connection
	// error, or an HTTP 4xx answer before the stream ends.
	streamError := func(t *testing.T, c *h2client, id uint32) {
		t.Helper()
		r := c.response(id)
		switch {
		case r.reset != nil:
			require.Equal(t, http2.ErrCodeProtocol, *r.reset, "RST_STREAM's code")
		case r.closed != nil:
			g := c.connectionError()
			require.Equal(t, http2.ErrCodeProtocol, g.code, "GOAWAY's code")
		default:
			require.NotEmpty(t, r.status(), "a malformed request's answer: %v", r.frames)
			require.Equal(t, byte('4'), r.status()[0], "a malformed request's answer: %v", r.frames)
		}
	}

	cases := []struct {
		name string
		send func(c *h2client)
		want func(t *testing.T, c *h2client)
	}{
		{"uppercase header name", func(c *h2client) {
			// §8.2.1: a field name with uppercase characters makes the
			// request malformed.
			c.headers(1, true, request("GET", "/upper", "X-Upper", "1")...)
		}, func(t *testing.T, c *h2client) { streamError(t, c, 1) }},
		{"missing :method and :path", func(c *h2client) {
			// §8.3.1: every request has :method, :scheme and :path.
			c.headers(1, true, hpack.HeaderField{Name: ":scheme", Value: "http"}, hpack.HeaderField{Name: ":authority", Value: "echo"})
		}, func(t *testing.T, c *h2client) { streamError(t, c, 1) }},
		{"connection-specific field", func(c *h2client) {
			// §8.2.2: a request with connection: is malformed.
			c.headers(1, true, request("GET", "/connection", "connection", "keep-alive")...)
		}, func(t *testing.T, c *h2client) { streamError(t, c, 1) }},
		{"te other than trailers", func(c *h2client) {
			// §8.2.2: te may only be "trailers".
			c.headers(1, true, request("GET", "/te", "te", "gzip")...)
		}, func(t *testing.T, c *h2client) { streamError(t, c, 1) }},
		{"DATA on stream 0", func(c *h2client) {
			// §6.1: a connection error of type PROTOCOL_ERROR.
			c.write(func(fr *http2.Framer) error { return fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("data")) })
		}, func(t *testing.T, c *h2client) {
			require.Equal(t, http2.ErrCodeProtocol, c.connectionError().code)
		}},
		{"HEADERS on an even stream", func(c *h2client) {
			// §5.1.1: a client's streams are odd; a connection error of
			// type PROTOCOL_ERROR.
			c.headers(2, true, request("GET", "/even")...)
		}, func(t *testing.T, c *h2client) {
			require.Equal(t, http2.ErrCodeProtocol, c.connectionError().code)
		}},
		{"HEADERS larger than SETTINGS_MAX_FRAME_SIZE", func(c *h2client) {
			// §4.2: a connection error of type FRAME_SIZE_ERROR for a
			// frame that carries a header block.
			block := oversizedBlock(c.t, c.peerMaxFrame()+1)
			// The proxy may close the connection before it read it all.
			_ = c.tryWrite(func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true, EndHeaders: true})
			})
		}, func(t *testing.T, c *h2client) {
			require.Equal(t, http2.ErrCodeFrameSize, c.connectionError().code)
		}},
		{"invalid HPACK", func(c *h2client) {
			// §4.3: a header block that does not decode is a connection
			// error of type COMPRESSION_ERROR (index 0 is no entry, RFC
			// 7541 §6.1).
			c.write(func(fr *http2.Framer) error {
				return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndStream: true, EndHeaders: true})
			})
		}, func(t *testing.T, c *h2client) {
			require.Equal(t, http2.ErrCodeCompression, c.connectionError().code)
		}},
	}
	// Every case's input first, then what came back: a connection error's
	// close may take a while (net/http's: a second), the waits overlap.
	clients := make([]*h2client, len(cases))
	for i, tc := range cases {
		clients[i] = dialH2Client(t, proxy)
		clients[i].settings()
		tc.send(clients[i])
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.want(t, clients[i]) })
	}
	require.Zero(t, reached.Load(), "a malformed request reached the backend")
	c := dialH2Client(t, proxy)
	c.get(1, "/ok")
	require.Equal(t, "ok", string(c.ok(1).body), "a new connection is served")
}

// oversizedBlock is a GET's header block of exactly size bytes. It uses
// the static table and never-indexed literals only, so it decodes whatever
// the connection's HPACK state; its padding field's value is of characters
// HPACK's Huffman code would lengthen, so it is sent as it is.
func oversizedBlock(t *testing.T, size int) []byte {
	t.Helper()
	encode := func(n int) []byte {
		var buf bytes.Buffer
		enc := hpack.NewEncoder(&buf)
		for _, f := range append(request("GET", "/oversized"), hpack.HeaderField{Name: "x-pad", Value: strings.Repeat("#", n)}) {
			f.Sensitive = true
			require.NoError(t, enc.WriteField(f))
		}
		return buf.Bytes()
	}
	n := max(0, size-len(encode(0)))
	for len(encode(n)) > size {
		n--
	}
	for len(encode(n)) < size {
		n++
	}
	b := encode(n)
	require.Len(t, b, size, "a header block of exactly %d bytes", size)
	return b
}

// PING is answered with an ACK carrying the same payload (§6.7); SETTINGS
// are ACKed (§6.5.3); the proxy's first frame is its SETTINGS (§3.4).
func TestH2ConformPingAndSettings(t *testing.T) {
	leaveNoGoroutines(t)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	_, _, proxy := protocolOutbound(t, "grpc", backend)
	c := dialH2Client(t, proxy)

	first := c.await(0, nil)
	require.Equal(t, http2.FrameSettings, first.typ, "the server's preface is a SETTINGS frame: %v", first)
	require.False(t, first.ack)
	ack := c.await(0, func(f rframe) bool { return f.typ == http2.FrameSettings && f.ack })
	require.NoError(t, ack.closed, "the client's SETTINGS are ACKed")

	for _, payload := range [][8]byte{{1, 2, 3, 4, 5, 6, 7, 8}, {0xff, 0, 0xfe, 0, 0xfd, 0, 0xfc, 0}} {
		c.write(func(fr *http2.Framer) error { return fr.WritePing(false, payload) })
		pong := c.await(0, func(f rframe) bool { return f.typ == http2.FramePing })
		require.NoError(t, pong.closed)
		require.True(t, pong.ack, "a PING's answer has ACK")
		require.Equal(t, payload[:], pong.data, "a PING's ACK carries its payload")
	}

	// SETTINGS mid-connection: ACKed, and a request still works.
	c.write(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 50}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 1024})
	})
	ack = c.await(0, func(f rframe) bool { return f.typ == http2.FrameSettings && f.ack })
	require.NoError(t, ack.closed, "the second SETTINGS are ACKed")
	c.get(1, "/")
	require.Equal(t, "ok", string(c.ok(1).body))
}

// The upstream closing its connection mid-stream ends the client's stream
// with RST_STREAM or an error; other clients go on, and the next requests
// are served on a new upstream connection.
func TestH2ConformUpstreamClosesMidStream(t *testing.T) {
	leaveNoGoroutines(t)
	backend, conns := frameBackend(t, func(s *rawConn) {
		for {
			id, fields, err := s.request()
			if err != nil {
				return
			}
			if field(fields, ":path") == "/die" {
				if s.headers(id, false, ":status", "200") == nil {
					_ = s.data(id, "partial", false)
				}
				return // closes the connection
			}
			if s.headers(id, false, ":status", "200") != nil || s.data(id, "ok", true) != nil {
				return
			}
		}
	})
	_, st, proxy := protocolOutbound(t, "http2", backend)
	other := dialH2Client(t, proxy)
	other.get(1, "/warm")
	require.Equal(t, "ok", string(other.ok(1).body))

	c := dialH2Client(t, proxy)
	c.get(1, "/die")
	r := c.response(1)
	require.Equal(t, "200", r.status())
	require.Equal(t, "partial", string(r.body))
	t.Run("the stream ends with an error", func(t *testing.T) {
		mustNot(t, r.ended, "the upstream's connection closing mid-body ends the client's stream with END_STREAM, "+
			"a truncated answer that looks complete: %v", r.frames)
		require.True(t, r.reset != nil || r.closed != nil, "RST_STREAM or the connection's end: %v", r.frames)
	})

	other.get(3, "/after")
	require.Equal(t, "ok", string(other.ok(3).body), "another client goes on")
	fresh := dialH2Client(t, proxy)
	fresh.get(1, "/after")
	require.Equal(t, "ok", string(fresh.ok(1).body), "a new client is served")
	require.GreaterOrEqual(t, conns.Load(), int32(2), "a new upstream connection after the first one closed")
	upstreamConnections(t, st, 2, "the first and the one that replaced it")
}

// Request headers reach the backend as the client sent them (HTTP/2 has no
// hop-by-hop fields to drop: §8.2.2 forbids them), :authority as the
// backend's Host; the response's headers reach the client as the backend
// sent them.
func TestH2ConformHeadersPassThrough(t *testing.T) {
	leaveNoGoroutines(t)
	type seen struct {
		method, host, uri string
		header            http.Header
	}
	got := make(chan seen, 1)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.Host, r.RequestURI, r.Header.Clone()}
		h := w.Header()
		h.Set("Content-Type", "text/x-test")
		h["X-Resp-Multi"] = []string{"one", "two"}
		h["Set-Cookie"] = []string{"a=1; Path=/", "b=2"}
		h.Set("Cache-Control", "no-store")
		h.Set("X-Resp-Empty", "")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "accepted")
	}))
	_, _, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2Client(t, proxy)

	fields := []hpack.HeaderField{
		{Name: ":method", Value: "PUT"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "echo.mesh:8080"}, {Name: ":path", Value: "/a/b?q=1&r=%20x"},
		{Name: "x-custom", Value: "v1"}, {Name: "x-multi", Value: "a"}, {Name: "x-multi", Value: "b"},
		{Name: "user-agent", Value: "h2conform/1"}, {Name: "accept-encoding", Value: "gzip"},
		{Name: "te", Value: "trailers"}, {Name: "x-empty", Value: ""}, {Name: "content-length", Value: "4"},
	}
	c.headers(1, false, fields...)
	c.data(1, []byte("body"), true)
	s := recv(t, got, "the backend's request")
	r := c.response(1)

	require.Equal(t, "PUT", s.method)
	require.Equal(t, "echo.mesh:8080", s.host, ":authority is the backend's Host")
	require.Equal(t, "/a/b?q=1&r=%20x", s.uri)
	require.Equal(t, []string{"v1"}, s.header["X-Custom"])
	require.Equal(t, []string{"a", "b"}, s.header["X-Multi"], "repeated fields, in order")
	require.Equal(t, []string{"h2conform/1"}, s.header["User-Agent"])
	require.Equal(t, []string{"gzip"}, s.header["Accept-Encoding"], "no compression asked for or undone")
	require.Equal(t, []string{"trailers"}, s.header["Te"], "te: trailers (gRPC needs it)")
	require.Equal(t, []string{""}, s.header["X-Empty"])

	require.True(t, r.ended, "%v", r.frames)
	require.Equal(t, "202", r.status())
	values := func(name string) []string {
		var vs []string
		for _, f := range r.headers {
			if f.Name == name {
				vs = append(vs, f.Value)
			}
		}
		return vs
	}
	require.Equal(t, []string{"text/x-test"}, values("content-type"))
	require.Equal(t, []string{"one", "two"}, values("x-resp-multi"))
	require.Equal(t, []string{"a=1; Path=/", "b=2"}, values("set-cookie"))
	require.Equal(t, []string{"no-store"}, values("cache-control"))
	require.Equal(t, []string{""}, values("x-resp-empty"))
	require.Equal(t, "accepted", string(r.body))

	t.Run("nothing added", func(t *testing.T) {
		// An answer without content-type: the proxy does not guess one
		// (a Date it may add, RFC 9110 §6.6.1).
		bare, _ := frameBackend(t, func(s *rawConn) {
			for {
				id, _, err := s.request()
				if err != nil || s.headers(id, false, ":status", "200", "x-only", "1") != nil || s.data(id, "<html>", true) != nil {
					return
				}
			}
		})
		_, _, proxy := protocolOutbound(t, "http2", bare)
		c := dialH2Client(t, proxy)
		c.get(1, "/")
		r := c.ok(1)
		require.Equal(t, "1", field(r.headers, "x-only"))
		require.Equal(t, "<html>", string(r.body))
		mustNot(t, field(r.headers, "content-type") != "", "a content-type the upstream did not send: %q (net/http's server sniffs one)",
			field(r.headers, "content-type"))
	})
}

// Draining sends GOAWAY and lets the in-flight streams finish: the drain
// ends when they did, long before its deadline.
func TestH2ConformDrainFinishesInFlightStreams(t *testing.T) {
	leaveNoGoroutines(t)
	release := make(chan struct{})
	var once sync.Once
	started := make(chan struct{}, 2)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	p, _, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2Client(t, proxy)
	c.get(1, "/one")
	c.get(3, "/three")
	recv(t, started, "the first request upstream")
	recv(t, started, "the second request upstream")

	deadline, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()
	drained := make(chan error, 1)
	go func() { drained <- p.Drain(deadline) }()
	g := c.awaitType(0, http2.FrameGoAway)
	require.NoError(t, g.closed, "a GOAWAY while streams are in flight")
	require.Equal(t, http2.ErrCodeNo, g.code, "a graceful GOAWAY")
	require.GreaterOrEqual(t, g.lastID, uint32(3), "the in-flight streams are within the GOAWAY's last stream")
	stillWaiting(t, drained, 50*time.Millisecond, "the drain, with streams in flight,")

	once.Do(func() { close(release) })
	require.Equal(t, "done /one", string(c.ok(1).body))
	require.Equal(t, "done /three", string(c.ok(3).body))
	_ = c.conn.Close() // as a client does after a GOAWAY, once its streams are done
	select {
	case err := <-drained:
		require.NoError(t, err)
		require.NoError(t, deadline.Err(), "ended with the streams, not by the deadline")
	case <-time.After(waitTimeout):
		t.Fatal("the drain did not end after the last stream")
	}
}

// streamOf is the stream of a stats round's i-th request (stream 1 warmed
// up).
func streamOf(round, i int) uint32 { return uint32(3 + 8*round + 2*i) }

// The statistics after a mixed run: answers by class upstream and
// downstream, one multiplexed upstream connection per endpoint, and a 503
// counted as upstream_rq_5xx for an endpoint that does not answer.
func TestH2ConformStats(t *testing.T) {
	leaveNoGoroutines(t)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	_, st, proxy := protocolOutbound(t, "http2", h2cBackend(t, handler), h2cBackend(t, handler))
	clients := []*h2client{dialH2Client(t, proxy), dialH2Client(t, proxy)}
	// One request to each endpoint first, one after the other (a cold
	// burst is TestH2ConformColdBurstDialsOncePerEndpoint's), then two rounds
	// of concurrent requests from both clients: 12 answers 2xx, 4 4xx.
	for i, c := range clients {
		c.get(1, "/")
		require.Equal(t, "ok", string(c.ok(1).body), "client %d", i)
	}
	for round := range 2 {
		for _, c := range clients {
			for i := range 4 {
				c.get(streamOf(round, i), map[bool]string{true: "/missing", false: "/"}[i == 3])
			}
		}
		for _, c := range clients {
			for i := range 4 {
				r := c.response(streamOf(round, i))
				require.True(t, r.ended)
				require.Equal(t, map[bool]string{true: "404", false: "200"}[i == 3], r.status())
			}
		}
	}
	// Counted once each answer is done, which may be just after the client
	// read it.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for name, want := range map[string]string{
			"cluster.echo.upstream_rq_2xx": "14", "http.echo.downstream_rq_2xx": "14",
			"cluster.echo.upstream_rq_4xx": "4", "http.echo.downstream_rq_4xx": "4",
		} {
			assert.Equal(c, want, counter(t, st, name), name)
		}
	}, waitTimeout, time.Millisecond)
	upstreamConnections(t, st, 2, "one multiplexed connection per endpoint")
	require.Equal(t, "2", counter(t, st, "http.echo.downstream_cx_total"))
	require.Equal(t, "0", counter(t, st, "cluster.echo.upstream_rq_5xx"))

	_, down, deadProxy := protocolOutbound(t, "http2", addr(freePort(t)))
	c := dialH2Client(t, deadProxy)
	c.get(1, "/")
	r := c.response(1)
	require.True(t, r.ended)
	require.Equal(t, "503", r.status())
	require.Eventually(t, func() bool {
		return counter(t, down, "cluster.echo.upstream_rq_5xx") == "1" && counter(t, down, "http.echo.downstream_rq_5xx") == "1"
	}, waitTimeout, time.Millisecond)
	require.Equal(t, "1", counter(t, down, "cluster.echo.upstream_cx_connect_fail"))
	require.Equal(t, "0", counter(t, down, "cluster.echo.upstream_rq_2xx"))
}

// A burst of concurrent requests to a cold cluster opens one upstream
// connection per endpoint and multiplexes the burst's streams on them.
func TestH2ConformColdBurstDialsOncePerEndpoint(t *testing.T) {
	leaveNoGoroutines(t)
	// Each answer is its request's path: the heads of the streams that
	// waited for the dial are kept whole while the client's next header
	// blocks are read.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.URL.Path) })
	_, st, proxy := protocolOutbound(t, "http2", h2cBackend(t, handler), h2cBackend(t, handler))
	clients := []*h2client{dialH2Client(t, proxy), dialH2Client(t, proxy)}
	path := func(c, i int) string { return fmt.Sprintf("/client%d/request%d", c, i) }
	for c, client := range clients {
		for i := range 8 {
			client.get(uint32(2*i+1), path(c, i))
		}
	}
	for c, client := range clients {
		for i := range 8 {
			require.Equal(t, path(c, i), string(client.ok(uint32(2*i+1)).body))
		}
	}
	require.Eventually(t, func() bool { return counter(t, st, "cluster.echo.upstream_rq_2xx") == "16" }, waitTimeout, time.Millisecond)
	upstreamConnections(t, st, 2, "a cold burst of 16 requests to 2 endpoints")
}

// upstreamConnections requires that the cluster opened want upstream
// connections (in a subtest of its own: net/http's Transport, the engine
// before, opened more, one per request that found no pooled connection).
func upstreamConnections(t *testing.T, st *stats.Store, want int, what string) {
	t.Helper()
	t.Run("upstream connections", func(t *testing.T) {
		total := counter(t, st, "cluster.echo.upstream_cx_total")
		mustNot(t, total != strconv.Itoa(want), "%s: %s upstream connections, not %d (active: %s)",
			what, total, want, counter(t, st, "cluster.echo.upstream_cx_active"))
	})
}

// mustNot fails t, naming what is wrong, when bad. (These checks skipped
// while the outbounds ran on net/http's HTTP/2 server and transport, which
// broke each of them; the engine of pkg/proxy/h2 passes them.)
func mustNot(t *testing.T, bad bool, format string, args ...any) {
	t.Helper()
	if bad {
		t.Fatalf(format, args...)
	}
}
