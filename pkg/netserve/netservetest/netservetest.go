// Package netservetest checks from a client's side that a running server
// applies the limits of package netserve: it speaks raw HTTP/1.1 and raw
// HTTP/2 frames, as a slow, oversized, idle or impolite client would.
package netservetest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/kumametrics/mesh/pkg/netserve"
)

// Dial opens a client connection to the server under test (plain or TLS;
// for HTTP/2 checks a TLS connection must have negotiated "h2").
type Dial func() (net.Conn, error)

// slack is how much longer than a limit a check waits for the server to act
// on it: generous, for a loaded machine.
const slack = 15 * time.Second

// CheckHTTPLimits checks that the server behind dial applies limits to the
// request method path (a request its handler answers at once, reading the
// body if any): a head larger than MaxHeaderBytes is refused with 431, a
// request whose body does not arrive is cut after ReadTimeout, and a
// keep-alive connection is closed after IdleTimeout.
func CheckHTTPLimits(t *testing.T, dial Dial, method, path string, limits netserve.HTTPLimits) {
	t.Helper()
	t.Run("oversized head is refused", func(t *testing.T) { CheckHTTPHeadLimit(t, dial, method, path, limits.MaxHeaderBytes) })
	CheckHTTPTimeouts(t, dial, method, path, limits)
}

// CheckHTTPHeadLimit checks that the server behind dial refuses a request
// head larger than maxHeaderBytes (plus net/http's slack) with 431.
func CheckHTTPHeadLimit(t *testing.T, dial Dial, method, path string, maxHeaderBytes int) {
	t.Helper()
	{
		c := open(t, dial)
		big := strings.Repeat("x", maxHeaderBytes+8<<10)
		_, err := io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: test\r\nX-Big: "+big+"\r\n\r\n")
		if err != nil && !errors.Is(err, net.ErrClosed) {
			// The server may answer and close before it read everything.
			t.Logf("writing the oversized head: %v", err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		_ = res.Body.Close()
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)
	}
}

// CheckHTTPTimeouts checks the ReadTimeout and IdleTimeout of
// CheckHTTPLimits (the check waits for them: keep them short).
func CheckHTTPTimeouts(t *testing.T, dial Dial, method, path string, limits netserve.HTTPLimits) {
	t.Helper()
	t.Run("a body that does not arrive is cut after ReadTimeout", func(t *testing.T) {
		c := open(t, dial)
		_, err := io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
		require.NoError(t, err)
		requireClosedWithin(t, c, limits.ReadTimeout+slack)
	})
	t.Run("an idle keep-alive connection is closed after IdleTimeout", func(t *testing.T) {
		c := open(t, dial)
		_, err := io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
		require.NoError(t, err)
		br := bufio.NewReader(c)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(slack)))
		res, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		require.False(t, res.Close, "the server must keep the connection alive after a small request (status %d)", res.StatusCode)
		requireClosedWithin(t, readerConn{c, br}, limits.IdleTimeout+slack)
	})
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func open(t *testing.T, dial Dial) net.Conn {
	t.Helper()
	c, err := dial()
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// requireClosedWithin reads (and discards) until the server closes c,
// failing if that takes longer than d.
func requireClosedWithin(t *testing.T, c net.Conn, d time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(d)))
	_, err := io.Copy(io.Discard, c)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept the connection open for %s", d)
}

// h2conn is a raw HTTP/2 client connection past the connection preface.
type h2conn struct {
	c  net.Conn
	fr *http2.Framer
	// settings is the server's first SETTINGS frame.
	settings *http2.SettingsFrame
}

func openH2(t *testing.T, dial Dial) *h2conn {
	t.Helper()
	c := open(t, dial)
	require.NoError(t, c.SetDeadline(time.Now().Add(slack)))
	_, err := io.WriteString(c, http2.ClientPreface)
	require.NoError(t, err)
	fr := http2.NewFramer(c, c)
	require.NoError(t, fr.WriteSettings())
	h := &h2conn{c: c, fr: fr}
	for h.settings == nil {
		f, err := fr.ReadFrame()
		require.NoError(t, err, "reading the server's SETTINGS")
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.settings = s
			require.NoError(t, fr.WriteSettingsAck())
		}
	}
	require.NoError(t, c.SetDeadline(time.Time{}))
	return h
}

// CheckGRPCLimits checks that the gRPC server behind dial applies limits: it
// announces MaxConcurrentStreams, tolerates a client pinging no more often
// than KeepaliveMinTime, sends GOAWAY "too_many_pings" to one pinging
// faster, and closes a connection whose client stopped answering pings
// after KeepaliveTime + KeepaliveTimeout. KeepaliveMinTime must be short (a
// polite client is played for 4 of its intervals) and shorter than a second
// (the impolite client pings without pause).
func CheckGRPCLimits(t *testing.T, dial Dial, limits netserve.GRPCLimits) {
	t.Helper()
	t.Run("announces the stream limit", func(t *testing.T) { CheckGRPCStreamLimit(t, dial, limits.MaxConcurrentStreams) })
	CheckGRPCKeepalive(t, dial, limits)
}

// CheckGRPCStreamLimit checks that the server behind dial announces n as
// SETTINGS_MAX_CONCURRENT_STREAMS (which HTTP/2 clients obey: a call beyond
// it waits for another to end).
func CheckGRPCStreamLimit(t *testing.T, dial Dial, n uint32) {
	t.Helper()
	h := openH2(t, dial)
	v, ok := h.settings.Value(http2.SettingMaxConcurrentStreams)
	require.True(t, ok, "the server must announce SETTINGS_MAX_CONCURRENT_STREAMS")
	require.Equal(t, n, v)
}

// CheckGRPCKeepalive checks the keepalive limits of CheckGRPCLimits.
func CheckGRPCKeepalive(t *testing.T, dial Dial, limits netserve.GRPCLimits) {
	t.Helper()
	t.Run("a client pinging at the allowed pace stays", func(t *testing.T) {
		h := openH2(t, dial)
		require.NoError(t, h.c.SetDeadline(time.Now().Add(4*limits.KeepaliveMinTime+slack)))
		for i := range 4 {
			if i > 0 {
				time.Sleep(limits.KeepaliveMinTime + limits.KeepaliveMinTime/2) // pacing the client, not waiting for the server
			}
			require.NoError(t, h.fr.WritePing(false, [8]byte{byte(i)}))
			h.awaitPingAck(t, byte(i))
		}
	})
	t.Run("a client pinging too often is sent away", func(t *testing.T) {
		h := openH2(t, dial)
		require.NoError(t, h.c.SetDeadline(time.Now().Add(slack)))
		for i := range 10 {
			if err := h.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				break // the server may have closed already
			}
		}
		for {
			f, err := h.fr.ReadFrame()
			require.NoError(t, err, "expected GOAWAY too_many_pings")
			if g, ok := f.(*http2.GoAwayFrame); ok {
				require.Equal(t, http2.ErrCodeEnhanceYourCalm, g.ErrCode)
				require.Equal(t, "too_many_pings", string(g.DebugData()))
				return
			}
		}
	})
	t.Run("a client that stops answering pings is disconnected", func(t *testing.T) {
		h := openH2(t, dial)
		require.NoError(t, h.c.SetDeadline(time.Now().Add(limits.KeepaliveTime+limits.KeepaliveTimeout+slack)))
		pinged := false
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server kept a connection that does not answer its pings")
				require.True(t, pinged, "the server closed the connection without pinging it first: %v", err)
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && !p.IsAck() {
				pinged = true // and not answered
			}
		}
	})
}

func (h *h2conn) awaitPingAck(t *testing.T, id byte) {
	t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		require.NoError(t, err)
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			t.Fatalf("the server sent GOAWAY %v %q to a client pinging at the allowed pace", f.ErrCode, f.DebugData())
		case *http2.PingFrame:
			if f.IsAck() && f.Data[0] == id {
				return
			}
			if !f.IsAck() {
				require.NoError(t, h.fr.WritePing(true, f.Data))
			}
		}
	}
}

// FailingListener is a listener whose Accepts first fail with an error as
// accept(2) reports it (e.g. EMFILE: the process is out of file
// descriptors), n times (every time when n < 0), then accept from ln.
type FailingListener struct {
	net.Listener
	left   atomic.Int64
	always bool
	err    error
	// Failed counts the failures returned.
	Failed atomic.Int64
}

// FailAccepts returns a FailingListener over ln.
func FailAccepts(ln net.Listener, errno syscall.Errno, n int) *FailingListener {
	f := &FailingListener{Listener: ln, always: n < 0, err: AcceptError(errno)}
	f.left.Store(int64(n))
	return f
}

// AcceptError is errno as net.Listener.Accept returns it.
func AcceptError(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Accept fails as configured, then accepts.
func (f *FailingListener) Accept() (net.Conn, error) {
	if f.always || f.left.Add(-1) >= 0 {
		f.Failed.Add(1)
		return nil, f.err
	}
	return f.Listener.Accept()
}
