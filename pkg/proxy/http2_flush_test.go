package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/stats"
)

// h2cOnly speaks HTTP/2 with prior knowledge over unencrypted connections.
func h2cOnly() *http.Protocols {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &p
}

// h2cBackend serves h over h2c and returns its address.
func h2cBackend(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, Protocols: h2cOnly()}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// h2Conn is a client connection that sees the frames themselves; what it
// writes leaves with the next request (get) or control frame answered.
type h2Conn struct {
	t    *testing.T
	conn net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	// pending holds frames read for streams other than the one asked for.
	pending map[uint32][]streamFrame
}

func dialH2(t *testing.T, address string) *h2Conn {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return newH2Conn(t, conn)
}

// newH2Conn starts HTTP/2 on conn: the preface and SETTINGS leave with the
// first request.
func newH2Conn(t *testing.T, conn net.Conn) *h2Conn {
	t.Helper()
	require.NoError(t, conn.SetDeadline(time.Now().Add(waitTimeout)))
	c := &h2Conn{t: t, conn: conn, bw: bufio.NewWriter(conn), pending: map[uint32][]streamFrame{}}
	c.fr = http2.NewFramer(c.bw, conn)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hbuf)
	_, err := c.bw.WriteString(http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, c.fr.WriteSettings())
	return c
}

// get opens stream id with a GET of path.
func (c *h2Conn) get(id uint32, authority, path string) {
	c.hbuf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", path}} {
		require.NoError(c.t, c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	require.NoError(c.t, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndStream: true, EndHeaders: true}))
	require.NoError(c.t, c.bw.Flush())
}

// streamFrame is what stream's frames carried, one per frame.
type streamFrame struct {
	headers []hpack.HeaderField // nil for DATA
	data    []byte
	end     bool
}

// next returns the next frame of stream id, answering the connection's
// control frames on the way.
func (c *h2Conn) next(id uint32) streamFrame {
	c.t.Helper()
	if q := c.pending[id]; len(q) > 0 {
		c.pending[id] = q[1:]
		return q[0]
	}
	for {
		var sf streamFrame
		f, err := c.fr.ReadFrame()
		require.NoError(c.t, err)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				require.NoError(c.t, c.fr.WriteSettingsAck())
				require.NoError(c.t, c.bw.Flush())
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				require.NoError(c.t, c.fr.WritePing(true, f.Data))
				require.NoError(c.t, c.bw.Flush())
			}
		case *http2.MetaHeadersFrame:
			sf = streamFrame{headers: f.Fields, end: f.StreamEnded()}
		case *http2.DataFrame:
			sf = streamFrame{data: bytes.Clone(f.Data()), end: f.StreamEnded()}
		case *http2.RSTStreamFrame:
			c.t.Fatalf("stream %d reset: %v", f.StreamID, f.ErrCode)
		case *http2.GoAwayFrame:
			c.t.Fatalf("GOAWAY: %v", f.ErrCode)
		default:
			continue // WINDOW_UPDATE and the like
		}
		if f.Header().StreamID == id {
			return sf
		}
		c.pending[f.Header().StreamID] = append(c.pending[f.Header().StreamID], sf)
	}
}

// rest reads stream id to its end.
func (c *h2Conn) rest(id uint32) []streamFrame {
	c.t.Helper()
	var got []streamFrame
	for {
		f := c.next(id)
		got = append(got, f)
		if f.end {
			return got
		}
	}
}

func field(fs []hpack.HeaderField, name string) string {
	for _, f := range fs {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// A body whose end is known leaves whole, its last DATA frame carrying
// END_STREAM (not an empty DATA frame after it), and trailers still follow
// it.
func TestHTTP2LastChunkCarriesTheEnd(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 64) // 1 KiB
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/trailers":
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			_, _ = io.WriteString(w, body)
			w.Header().Set("Grpc-Status", "0")
		default:
			w.Header().Set("Content-Length", "1024")
			_, _ = io.WriteString(w, body)
		}
	}))
	_, _, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2(t, proxy)

	c.get(1, "echo", "/length")
	head := c.next(1)
	require.Equal(t, "200", field(head.headers, ":status"))
	require.Equal(t, "1024", field(head.headers, "content-length"))
	frames := c.rest(1)
	var got []byte
	for _, f := range frames {
		got = append(got, f.data...)
	}
	require.Equal(t, body, string(got), "the body arrives whole")
	last := frames[len(frames)-1]
	require.NotEmpty(t, last.data, "END_STREAM rides on the last chunk, not on an empty DATA frame after it: %d frames", len(frames))

	c.get(3, "echo", "/trailers")
	head = c.next(3)
	require.Equal(t, "200", field(head.headers, ":status"))
	frames = c.rest(3)
	got = got[:0]
	for _, f := range frames[:len(frames)-1] {
		require.Nil(t, f.headers, "DATA before the trailers")
		got = append(got, f.data...)
	}
	require.Equal(t, body, string(got))
	trailers := frames[len(frames)-1]
	require.NotNil(t, trailers.headers, "the stream ends with its trailers")
	require.Equal(t, "0", field(trailers.headers, "grpc-status"))
}

// A chunk the upstream flushed reaches the client while the upstream still
// holds the rest, with or without a declared length.
func TestHTTP2StreamedChunkArrivesBeforeTheEnd(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/length" {
			w.Header().Set("Content-Length", "11")
		}
		_, _ = io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second")
	}))
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the backend stops
	_, _, proxy := protocolOutbound(t, "http2", backend)
	c := dialH2(t, proxy)
	c.get(1, "echo", "/length")
	c.get(3, "echo", "/open")
	for _, id := range []uint32{1, 3} {
		head := c.next(id)
		require.Equal(t, "200", field(head.headers, ":status"))
		f := c.next(id) // read with the connection's deadline: the upstream holds the rest until released
		require.Equal(t, "first", string(f.data), "stream %d", id)
		require.False(t, f.end, "stream %d", id)
	}
	once.Do(func() { close(release) })
	for _, id := range []uint32{1, 3} {
		var got []byte
		for _, f := range c.rest(id) {
			got = append(got, f.data...)
		}
		require.Equal(t, "second", string(got), "stream %d", id)
	}
}

// readCounter counts the reads made on a connection.
type readCounter struct {
	net.Conn
	reads atomic.Int32
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// The frames a client sent together are read from the connection
// together: one read for the preface, SETTINGS and a request's HEADERS
// (net/http's server alone reads each frame's header and payload apart).
func TestHTTP2ReadsFramesInBursts(t *testing.T) {
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	p, st := newProxy(t)
	c := newCluster("echo", stats.NewClusterStats(st, "echo"), p.dial)
	c.setEndpoints([]string{backend})
	log, _ := netservetest.NewLogger()
	h := newHTTP2(p, route{protocol: "http2", cluster: c, hcm: "echo",
		panics: &netserve.Panics{Name: "outbound:echo", Log: log, Count: &netservetest.Counter{}}}).(*httpHandler)
	t.Cleanup(h.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	conn, err := ln.Accept()
	require.NoError(t, err)
	counted := &readCounter{Conn: conn}
	served := make(chan struct{})
	go func() { defer close(served); h.ServeConn(counted, false) }()
	defer func() { _ = client.Close(); <-served }()

	h2 := newH2Conn(t, client)
	h2.get(1, "echo", "/") // one write: preface, SETTINGS, HEADERS
	head := h2.next(1)
	require.Equal(t, "200", field(head.headers, ":status"))
	// The burst, the client's SETTINGS ack, and the read now waiting for
	// what comes next.
	require.LessOrEqual(t, counted.reads.Load(), int32(3), "reads of the connection until the answer")
	var got []byte
	for _, f := range h2.rest(1) {
		got = append(got, f.data...)
	}
	require.Equal(t, "ok", string(got))
}
