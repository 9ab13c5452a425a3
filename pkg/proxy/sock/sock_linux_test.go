//go:build linux

package sock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/pkg/stats"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	s, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// recvOnce reads once from r's socket (inside the poller's callback, which
// waits for the bytes first).
func recvOnce(t *testing.T, s *net.TCPConn, r *Reader, b []byte) (n int, more bool, err error) {
	t.Helper()
	rc, cerr := s.SyscallConn()
	require.NoError(t, cerr)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, rc.Read(func(fd uintptr) bool {
		n, more, err = r.Recv(fd, b)
		return err != unix.EAGAIN
	}))
	return n, more, err
}

// TestRecvTellsWhatIsLeft: with TCP_INQ a read says whether the socket
// holds more: nothing after the last bytes, more when the peer's FIN
// waits behind them (then the end); a reset behind them is not told (the
// next read fails), which is why the TCP relay rechecks.
func TestRecvTellsWhatIsLeft(t *testing.T) {
	buf := make([]byte, 64)
	for _, tc := range []struct {
		name      string
		end       func(*net.TCPConn)
		more      bool
		nextEnd   bool
		nextReset bool
	}{
		{"bytes only", func(*net.TCPConn) {}, false, false, false},
		{"bytes and FIN", func(c *net.TCPConn) { require.NoError(t, c.CloseWrite()) }, true, true, false},
		{"bytes and reset", func(c *net.TCPConn) { require.NoError(t, c.SetLinger(0)); require.NoError(t, c.Close()) }, false, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			var rx stats.Counter
			r := NewReader(s, &rx)
			require.NotNil(t, r)
			require.True(t, r.Inq(), "this kernel has TCP_INQ (Linux 4.18+)")
			_, err := c.Write([]byte("hello"))
			require.NoError(t, err)
			tc.end(c)
			// The bytes, and the FIN or reset behind them, are here
			// before the read.
			require.Eventually(t, func() bool {
				return inq(t, s) == 5 && (tcpState(t, s) != unix.BPF_TCP_ESTABLISHED) == (tc.nextEnd || tc.nextReset)
			}, 5*time.Second, time.Millisecond)
			n, more, err := recvOnce(t, s, r, buf)
			require.NoError(t, err)
			require.Equal(t, "hello", string(buf[:n]))
			require.Equal(t, tc.more, more)
			require.Equal(t, uint64(5), rx.Value())
			if tc.nextEnd || tc.nextReset {
				n, _, err = recvOnce(t, s, r, buf)
				require.Zero(t, n)
				if tc.nextEnd {
					require.NoError(t, err, "the end: n 0, no error")
				} else {
					require.ErrorIs(t, err, unix.ECONNRESET)
				}
			}
		})
	}
}

// tcpState is the kernel's state of c (TCP_INFO).
func tcpState(t *testing.T, c *net.TCPConn) uint8 {
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var info *unix.TCPInfo
	require.NoError(t, rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }))
	require.NoError(t, err)
	return info.State
}

// TestServeWaitsOnceEmpty: a step reads until ErrWouldBlock; after a read
// that emptied the socket, Read says so without asking it, even when more
// bytes came meanwhile: those wake the next step. Every byte arrives, in
// order, counted.
func TestServeWaitsOnceEmpty(t *testing.T) {
	c, s := pair(t)
	var rx stats.Counter
	r := NewReader(s, &rx)
	require.NotNil(t, r)
	parts := []string{"first ", "second ", "third"}
	_, err := c.Write([]byte(parts[0]))
	require.NoError(t, err)
	var got bytes.Buffer
	steps, blockedAfterWrite := 0, 0
	next := 1
	buf := make([]byte, 64)
	require.NoError(t, s.SetReadDeadline(time.Now().Add(10*time.Second)))
	require.NoError(t, r.Serve(func() bool {
		steps++
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if errors.Is(err, ErrWouldBlock) {
				break
			}
			require.NoError(t, err)
			if got.Len() == len(parts[0])+len(parts[1])+len(parts[2]) {
				return true
			}
			if next < len(parts) && got.String() == joined(parts[:next]) {
				// Send the next part and wait until it is in the socket:
				// the Read that follows still says it would block.
				_, err := c.Write([]byte(parts[next]))
				require.NoError(t, err)
				next++
				require.Eventually(t, func() bool { return inq(t, s) > 0 }, 5*time.Second, time.Millisecond)
				n, err := r.Read(buf)
				require.Zero(t, n)
				require.ErrorIs(t, err, ErrWouldBlock)
				blockedAfterWrite++
				break
			}
		}
		return false
	}))
	require.Equal(t, joined(parts), got.String())
	require.Equal(t, 2, blockedAfterWrite)
	require.GreaterOrEqual(t, steps, 3)
	require.Equal(t, uint64(got.Len()), rx.Value())
}

func joined(parts []string) string {
	var b bytes.Buffer
	for _, p := range parts {
		b.WriteString(p)
	}
	return b.String()
}

// inq is how many bytes c's socket holds (SIOCINQ).
func inq(t *testing.T, c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var n int
	require.NoError(t, rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }))
	require.NoError(t, err)
	return n
}

// TestReadOutsideServe reads through the connection, counting what it
// read; the end is io.EOF.
func TestReadOutsideServe(t *testing.T) {
	c, s := pair(t)
	var rx stats.Counter
	r := NewReader(s, &rx)
	_, err := c.Write([]byte("late"))
	require.NoError(t, err)
	require.NoError(t, c.CloseWrite())
	require.NoError(t, s.SetReadDeadline(time.Now().Add(10*time.Second)))
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "late", string(got))
	require.Equal(t, uint64(4), rx.Value())
}

// countedConn is a wrapper that counts what is written through it, as the
// proxy's do.
type countedConn struct {
	net.Conn
	tx stats.Counter
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.tx.Add(uint64(n))
	return n, err
}

func (c *countedConn) UnwrapTCP() (net.Conn, *stats.Counter, *stats.Counter) {
	return c.Conn, nil, &c.tx
}

// TestConnTryWrites: with TryWrites on, a write the socket cannot take
// whole returns at once and keeps the rest; a later write, with or
// without TryWrites, goes after it; Flush writes it out once the peer
// reads. Every byte arrives, in order, counted once.
func TestConnTryWrites(t *testing.T) {
	client, server := pair(t)
	require.NoError(t, client.SetWriteBuffer(4<<10))
	cc := &countedConn{Conn: client}
	sc, ok := NewConn(cc).(*Conn)
	require.True(t, ok, "a counted TCP connection has a socket below")

	var sent bytes.Buffer
	chunk := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10) }
	sc.TryWrites(true)
	for i := range 8 { // 512 KiB: more than the socket and the peer's take
		n, err := sc.Write(chunk(i))
		require.NoError(t, err)
		require.Equal(t, 64<<10, n)
		sent.Write(chunk(i))
	}
	require.Positive(t, sc.Pending(), "the socket did not take it all")
	sc.TryWrites(false)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	_, err := sc.Write([]byte("last")) // waits behind what is pending
	require.NoError(t, err)
	sent.WriteString("last")
	require.NoError(t, sc.Flush())
	require.Zero(t, sc.Pending())
	require.NoError(t, client.CloseWrite())
	require.True(t, bytes.Equal(sent.Bytes(), <-got), "the bytes arrived in order")
	require.Equal(t, uint64(sent.Len()), cc.tx.Value())
}
