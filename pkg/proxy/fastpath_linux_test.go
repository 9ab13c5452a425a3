//go:build linux

package proxy

import (
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
)

// sink reads a connection to its end, hashing and counting what came.
type sink struct {
	n    atomic.Int64
	h    hash.Hash
	done chan error
}

func drain(c net.Conn) *sink {
	s := &sink{h: sha256.New(), done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := c.Read(buf)
			s.h.Write(buf[:k])
			s.n.Add(int64(k))
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				s.done <- err
				return
			}
		}
	}()
	return s
}

// wait waits for the end of the stream and returns its hash.
func (s *sink) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case err := <-s.done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the stream did not end")
	}
	return s.h.Sum(nil)
}

// source writes n random bytes to c, adding them to h.
func source(t *testing.T, c net.Conn, h hash.Hash, seed uint64, n int64) {
	t.Helper()
	var key [32]byte
	key[0] = byte(seed)
	_, err := io.CopyN(io.MultiWriter(c, h), rand.NewChaCha8(key), n)
	require.NoError(t, err)
}

// sendBothWays starts srv sending n random bytes, then half-closing (sent
// is closed when it is done), and sends as many from c, then half-closes
// it; the hashes are of what each sent.
func sendBothWays(t *testing.T, c, srv *net.TCPConn, n int64) (upSent, downSent hash.Hash, sent <-chan struct{}) {
	t.Helper()
	upSent, downSent = sha256.New(), sha256.New()
	done := make(chan struct{})
	go func() {
		defer close(done)
		source(t, srv, downSent, 2, n)
		_ = srv.CloseWrite()
	}()
	source(t, c, upSent, 1, n)
	require.NoError(t, c.CloseWrite())
	return upSent, downSent, done
}

// rawBackend accepts connections and hands them to the test.
func rawBackend(t *testing.T) (string, <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	require.NoError(t, err)
	conns := make(chan net.Conn, 16)
	addr, _ := proxytest.Serve(t, ln, func(c net.Conn) { conns <- c })
	return addr, conns
}

func accepted(t *testing.T, conns <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		return c
	case <-time.After(waitTimeout):
		t.Fatal("the proxy did not connect to the backend")
		return nil
	}
}

// TestTCPSpliceCountsEveryByteLive: plain TCP through an outbound takes
// the splice fast path (both directions), the cluster's byte counters
// equal what was sent while the connection is still open, and half-close
// passes on (the client's FIN reaches the backend, which still answers).
func TestTCPSpliceCountsEveryByteLive(t *testing.T) {
	back, conns := rawBackend(t)
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, back)))
	paths := pathsOf(t, p, "echo")

	c := dial(t, port).c.(*net.TCPConn)
	srv := accepted(t, conns)
	up, down := drain(srv), drain(c)
	upSent, downSent := sha256.New(), sha256.New()

	var upN, downN int64
	for i, n := range []int64{1, 300_000, 70_001} {
		source(t, c, upSent, uint64(i), n)
		upN += n
		require.Eventually(t, func() bool { return up.n.Load() == upN }, waitTimeout, time.Millisecond)
		pollCounter(t, st, "cluster.echo.upstream_cx_tx_bytes_total", upN)
		source(t, srv, downSent, uint64(10+i), 2*n)
		downN += 2 * n
		require.Eventually(t, func() bool { return down.n.Load() == downN }, waitTimeout, time.Millisecond)
		pollCounter(t, st, "cluster.echo.upstream_cx_rx_bytes_total", downN)
	}
	require.Equal(t, [2]uint64{2, 0}, paths.taken(), "both directions spliced, none copied")

	// Half-close: the client is done sending; the backend sees the end and
	// still answers, then ends too.
	require.NoError(t, c.CloseWrite())
	require.Equal(t, upSent.Sum(nil), up.wait(t))
	source(t, srv, downSent, 99, 12_345)
	downN += 12_345
	require.NoError(t, srv.(*net.TCPConn).CloseWrite())
	require.Equal(t, downSent.Sum(nil), down.wait(t))
	require.Equal(t, strconv.FormatInt(upN, 10), counter(t, st, "cluster.echo.upstream_cx_tx_bytes_total"))
	require.Equal(t, strconv.FormatInt(downN, 10), counter(t, st, "cluster.echo.upstream_cx_rx_bytes_total"))
	pollCounter(t, st, "cluster.echo.upstream_cx_active", 0)
}

// TestTCPSpliceLargeTransfer: 64 MiB each way at once, checked by hash and
// counted exactly.
func TestTCPSpliceLargeTransfer(t *testing.T) {
	const size = 64 << 20
	back, conns := rawBackend(t)
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, back)))

	c := dial(t, port).c.(*net.TCPConn)
	srv := accepted(t, conns).(*net.TCPConn)
	up, down := drain(srv), drain(c)
	upSent, downSent, sent := sendBothWays(t, c, srv, size)
	<-sent
	require.Equal(t, upSent.Sum(nil), up.wait(t))
	require.Equal(t, downSent.Sum(nil), down.wait(t))
	require.Equal(t, strconv.Itoa(size), counter(t, st, "cluster.echo.upstream_cx_tx_bytes_total"))
	require.Equal(t, strconv.Itoa(size), counter(t, st, "cluster.echo.upstream_cx_rx_bytes_total"))
}

// TestTCPSpliceMeshHop: a mesh hop without mTLS splices on both proxies
// (the inbound's tracked plain connection), and so does one an inbound
// admits in a permissive window after peeking at its first bytes, which
// reach the application first. With mTLS every direction takes the fast
// path too, through TLS over the sockets, and the counters count what
// went over the wire.
func TestTCPSpliceMeshHop(t *testing.T) {
	p, _, _, switching := switchPair(t)

	p.apply(t, nil, "client")
	client, server := pathsOf(t, p.client, "server"), pathsOf(t, p.server, "localhost")
	c := dial(t, p.outboundPort)
	require.Equal(t, "app:plain", c.must("plain"))
	require.Equal(t, [2]uint64{2, 0}, client.taken(), "the outbound splices both directions")
	require.Equal(t, [2]uint64{2, 0}, server.taken(), "the inbound splices both directions")
	require.NoError(t, c.c.Close())

	// Permissive: the inbound peeks, then hands the peeked bytes on.
	p.apply(t, switching, "client")
	server = pathsOf(t, p.server, "localhost")
	before := server.taken()
	c = dial(t, p.inboundPort)
	require.Equal(t, "app:peeked and spliced", c.must("peeked and spliced"))
	require.Equal(t, "app:again", c.must("again"))
	require.Equal(t, [2]uint64{before[0] + 2, before[1]}, server.taken())
	require.NoError(t, c.c.Close())

	p.apply(t, mtlsOn, "client")
	client, server = pathsOf(t, p.client, "server"), pathsOf(t, p.server, "localhost")
	beforeC, beforeS := client.taken(), server.taken()
	txBefore := counter(t, p.clientSt, "cluster.server.upstream_cx_tx_bytes_total")
	c = dial(t, p.outboundPort)
	require.Equal(t, "app:secure", c.must("secure"))
	require.Equal(t, "1", counter(t, p.clientSt, "cluster.server.ssl.handshake"))
	require.Equal(t, [2]uint64{beforeC[0] + 2, beforeC[1]}, client.taken(), "mTLS takes the fast path")
	require.Equal(t, [2]uint64{beforeS[0] + 2, beforeS[1]}, server.taken(), "mTLS takes the fast path")
	require.NotEqual(t, txBefore, counter(t, p.clientSt, "cluster.server.upstream_cx_tx_bytes_total"))
}

// tap forwards the connections it accepts to port, counting the bytes of
// each direction (what went over the wire between two proxies).
type tap struct{ up, down atomic.Int64 }

func newTap(t *testing.T, to uint32) (*tap, uint32) {
	t.Helper()
	tp := &tap{}
	port := freePort(t)
	ln, err := net.Listen("tcp", addr(port))
	require.NoError(t, err)
	proxytest.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		u, err := net.Dial("tcp", addr(to))
		if err != nil {
			return
		}
		defer u.Close()
		done := make(chan struct{})
		go func() {
			n, _ := io.Copy(u, c)
			tp.up.Add(n)
			_ = u.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		n, _ := io.Copy(c, u)
		tp.down.Add(n)
		_ = c.(*net.TCPConn).CloseWrite()
		<-done
	})
	return tp, port
}

// TestTCPFastPathMTLS: 32 MiB each way at once through a mesh hop with
// mTLS, every direction of both proxies on the fast path through TLS, the
// client reading slowly (the server's TLS writes find its socket full and
// wait outside the read callback): what arrives is what was sent, each
// end passes on, and the client's cluster counts exactly the bytes that
// went over the wire (the tap's), the server's what its application got.
func TestTCPFastPathMTLS(t *testing.T) {
	const size = 32 << 20
	back, conns := rawBackend(t)
	p := newPair(t, newMeshCA(t), "tcp", back, newClock(time.Now()))
	wire, via := newTap(t, p.inboundPort)
	p.via = via
	p.apply(t, mtlsOn, "client")

	c := dial(t, p.outboundPort).c.(*net.TCPConn)
	srv := accepted(t, conns).(*net.TCPConn)
	up := drain(srv)
	upSent, downSent, sent := sendBothWays(t, c, srv, size)
	require.Equal(t, upSent.Sum(nil), up.wait(t))
	down := sha256.New()
	buf := make([]byte, 1<<10) // small reads: the client is the slow end
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	for {
		n, err := c.Read(buf)
		down.Write(buf[:n])
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	<-sent
	require.Equal(t, downSent.Sum(nil), down.Sum(nil))

	require.Equal(t, [2]uint64{2, 0}, pathsOf(t, p.client, "server").taken(), "the client's directions on the fast path")
	require.Equal(t, [2]uint64{2, 0}, pathsOf(t, p.server, "localhost").taken(), "the server's directions on the fast path")
	require.Equal(t, strconv.Itoa(size), counter(t, p.serverSt, "cluster.localhost.upstream_cx_tx_bytes_total"))
	require.Equal(t, strconv.Itoa(size), counter(t, p.serverSt, "cluster.localhost.upstream_cx_rx_bytes_total"))
	pollCounter(t, p.clientSt, "cluster.server.upstream_cx_active", 0) // its counters are final
	tx := counter(t, p.clientSt, "cluster.server.upstream_cx_tx_bytes_total")
	rx := counter(t, p.clientSt, "cluster.server.upstream_cx_rx_bytes_total")
	require.Eventually(t, func() bool { // the tap counts each way at its end
		return strconv.FormatInt(wire.up.Load(), 10) == tx && strconv.FormatInt(wire.down.Load(), 10) == rx
	}, waitTimeout, time.Millisecond, "the client counted tx %s rx %s", tx, rx)
	require.Greater(t, wire.up.Load(), int64(size), "TLS adds its records' framing")
}

// echoBackend echoes every connection's bytes back until its end.
func echoBackend(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	require.NoError(b, err)
	addr, _ := proxytest.Serve(b, ln, func(c net.Conn) {
		defer c.Close()
		_, _ = io.Copy(c, c)
	})
	return addr
}

// tcpPaths are the ways a direction can take, for the benchmarks: the
// fast path (with and without TCP_INQ), every read spliced, and the
// user-space copy.
var tcpPaths = []struct {
	name string
	mode int32
}{{"fast", pathFast}, {"fast-noinq", pathFastNoInq}, {"splice", pathSplice}, {"copy", pathCopy}}

// takePath makes the connections dialed next take path i.
func takePath(tb testing.TB, i int) {
	pathMode.Store(tcpPaths[i].mode)
	tb.Cleanup(func() { pathMode.Store(pathFast) })
}

// BenchmarkTCPProxy measures the TCP path through an outbound on each
// path: "conn" is one connection per op (connect, 1 KiB echoed, close:
// allocations per connection), "stream" 1 MiB echoed on one open
// connection per op.
func BenchmarkTCPProxy(b *testing.B) {
	for i, path := range tcpPaths {
		b.Run(path.name, func(b *testing.B) {
			takePath(b, i)
			back := echoBackend(b)
			p, _ := newProxy(b)
			port := freePort(b)
			require.NoError(b, p.Apply(outboundConfig(b, port, back)))
			msg := make([]byte, 1<<10)
			buf := make([]byte, 1<<20)
			b.Run("conn", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(msg)))
				for b.Loop() {
					c, err := net.Dial("tcp", addr(port))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Write(msg); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
						b.Fatal(err)
					}
					_ = c.Close()
				}
			})
			b.Run("stream", func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(buf)))
				c, err := net.Dial("tcp", addr(port))
				require.NoError(b, err)
				defer c.Close()
				big := make([]byte, len(buf))
				for b.Loop() {
					echoed(b, c, big, buf)
				}
			})
		})
	}
}

// BenchmarkTCPPathsSideBySide compares the paths on open connections
// through the same outbound, one per path, every iteration making one
// call on each (rotating which goes first) so that the machine's load
// falls on all alike: "request" a 1 KiB echo, "bulk" a 1 MiB echo.
// Reported per call: the median latency and the CPU of the whole process
// (client, proxy, echo backend: the same for all but the proxy's path).
//
//	go test -run '^$' -bench TCPPathsSideBySide -benchtime 20000x ./pkg/proxy/
func BenchmarkTCPPathsSideBySide(b *testing.B) {
	back := echoBackend(b)
	p, _ := newProxy(b)
	port := freePort(b)
	require.NoError(b, p.Apply(outboundConfig(b, port, back)))
	names := make([]string, len(tcpPaths))
	for i, path := range tcpPaths {
		names[i] = path.name
	}
	for _, size := range []int{1 << 10, 1 << 20} {
		name := "request"
		if size > 1<<10 {
			name = "bulk"
		}
		b.Run(name, func(b *testing.B) {
			conns := make([]net.Conn, len(tcpPaths))
			msg, buf := make([]byte, size), make([]byte, size)
			for i := range conns {
				takePath(b, i)
				c, err := net.Dial("tcp", addr(port))
				require.NoError(b, err)
				defer c.Close()
				conns[i] = c
				roundTrip(b, c, msg, buf) // the pipes start: each on its path
			}
			var m sideBySide
			m.rotate(b, len(conns), func(w int) { echoed(b, conns[w], msg, buf) })
			m.report(b, names)
		})
	}
}

// BenchmarkMeshHopSideBySide compares a mesh hop (a client proxy's
// outbound to a server proxy's inbound, in front of an echo backend)
// without and with mTLS, the mTLS one with every direction on the fast
// path and on the user-space copy, and the backend straight (what client
// and backend cost): one open connection each, 1 KiB echoed
// on each per iteration, rotating which goes first. Reported per call as
// in BenchmarkTCPPathsSideBySide (CPU: both proxies, client and backend).
//
//	go test -run '^$' -bench MeshHopSideBySide -benchtime 20000x ./pkg/proxy/
func BenchmarkMeshHopSideBySide(b *testing.B) {
	back := echoBackend(b)
	m, clk := newMeshCA(b), newClock(time.Now())
	plain, secure := newPair(b, m, "tcp", back, clk), newPair(b, m, "tcp", back, clk)
	plain.apply(b, nil, "client")
	secure.apply(b, mtlsOn, "client")
	ways := []struct {
		name string
		p    *pair // nil: straight to the backend
		mode int32
	}{{"direct", nil, pathFast}, {"plain", plain, pathFast}, {"mtls", secure, pathFast}, {"mtls-copy", secure, pathCopy}}
	names := make([]string, len(ways))
	conns := make([]net.Conn, len(ways))
	msg, buf := make([]byte, 1<<10), make([]byte, 1<<10)
	for i, w := range ways {
		names[i] = w.name
		pathMode.Store(w.mode)
		to := back
		if w.p != nil {
			to = addr(w.p.outboundPort)
		}
		c, err := net.Dial("tcp", to)
		require.NoError(b, err)
		defer c.Close()
		conns[i] = c
		roundTrip(b, c, msg, buf) // the pipes of both proxies start: each on its path
	}
	pathMode.Store(pathFast)
	var sb sideBySide
	sb.rotate(b, len(conns), func(w int) { roundTrip(b, conns[w], msg, buf) })
	sb.report(b, names)
}

// echoed sends msg and reads its echo, writing and reading at once (a
// message larger than the sockets' buffers).
func echoed(b *testing.B, c net.Conn, msg, buf []byte) {
	if len(msg) <= 1<<10 {
		roundTrip(b, c, msg, buf)
		return
	}
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// TestTCPFastPathEndWithLastBytes: a client that writes and half-closes
// at once (the FIN arrives with the bytes, before the proxy reads them):
// the backend gets the bytes and then the end, and still answers.
func TestTCPFastPathEndWithLastBytes(t *testing.T) {
	back, conns := rawBackend(t)
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, back)))
	for i := range 20 {
		c := dial(t, port).c.(*net.TCPConn)
		msg := []byte("request " + strconv.Itoa(i))
		_, err := c.Write(msg)
		require.NoError(t, err)
		require.NoError(t, c.CloseWrite())

		srv := accepted(t, conns)
		_ = srv.SetDeadline(time.Now().Add(waitTimeout))
		got, err := io.ReadAll(srv) // to the end: the FIN passed on
		require.NoError(t, err)
		require.Equal(t, msg, got)
		_, err = srv.Write([]byte("answer"))
		require.NoError(t, err)
		require.NoError(t, srv.Close())
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		got, err = io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, "answer", string(got))
		require.NoError(t, c.Close())
	}
	pollCounter(t, st, "cluster.echo.upstream_cx_active", 0)
	require.Equal(t, [2]uint64{40, 0}, pathsOf(t, p, "echo").taken(), "every direction on the fast path")
}

// TestTCPFastPathResetWithLastBytes: a client that writes and resets at
// once (the reset arrives with the bytes; TCP_INQ does not tell it): the
// backend gets the bytes and its connection ends, whether it stays silent
// (the relay asks its socket again after recheckTest) or answers (the
// write to the reset client fails and closes both sides).
func TestTCPFastPathResetWithLastBytes(t *testing.T) {
	recheckTest.Store(int64(100 * time.Millisecond))
	t.Cleanup(func() { recheckTest.Store(0) })
	back, conns := rawBackend(t)
	p, st := newProxy(t)
	port := freePort(t)
	require.NoError(t, p.Apply(outboundConfig(t, port, back)))
	for _, answers := range []bool{false, true} {
		c := dial(t, port).c.(*net.TCPConn)
		_, err := c.Write([]byte("request"))
		require.NoError(t, err)
		require.NoError(t, c.SetLinger(0))
		require.NoError(t, c.Close()) // a reset: linger 0

		srv := accepted(t, conns)
		_ = srv.SetDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, len("request"))
		_, err = io.ReadFull(srv, buf)
		require.NoError(t, err)
		require.Equal(t, "request", string(buf))
		if answers {
			// Written until the proxy's write to the client fails and it
			// closes this side: a write then fails, or the read ends.
			for err == nil {
				_, err = srv.Write([]byte("answer"))
				if err == nil {
					time.Sleep(time.Millisecond)
				}
			}
		} else {
			_, err = srv.Read(buf)
			require.Error(t, err)
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the proxy kept the backend's connection open: %v", err)
		}
		require.NoError(t, srv.Close())
		pollCounter(t, st, "cluster.echo.upstream_cx_active", 0)
	}
}
