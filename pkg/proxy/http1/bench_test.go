package http1_test

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixedBackend is an allocation-free upstream for benchmarks: it answers
// every bodiless request head with the same response.
type fixedBackend struct {
	ln   net.Listener
	resp []byte
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   []net.Conn
}

// benchResponse is a 200 with a 1 KiB body, as in the performance anchors.
var benchResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024)

const benchRequest = "GET /bench HTTP/1.1\r\nHost: backend\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"

func newFixedBackend(tb testing.TB, resp string) *fixedBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	f := &fixedBackend{ln: ln, resp: []byte(resp)}
	f.wg.Add(1)
	go f.accept()
	tb.Cleanup(f.close)
	return f
}

func (f *fixedBackend) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.cs {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fixedBackend) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.cs = append(f.cs, c)
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

// serve answers each "\r\n\r\n"-terminated head of c, batching the answers
// of pipelined requests into one write.
func (f *fixedBackend) serve(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	buf := make([]byte, 16<<10)
	out := make([]byte, 0, 64<<10)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			return
		}
		n += m
		out = out[:0]
		for {
			i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			out = append(out, f.resp...)
			n = copy(buf, buf[i+4:n])
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if n == len(buf) {
			return
		}
	}
}

// benchClient does round trips of one fixed request whose response has a
// known size, without allocating.
type benchClient struct {
	c    net.Conn
	req  []byte
	resp []byte
}

func newBenchClient(tb testing.TB, addr string) *benchClient {
	c, err := net.Dial("tcp", addr)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = c.Close() })
	return &benchClient{c: c, req: []byte(benchRequest), resp: make([]byte, len(benchResponse))}
}

func (b *benchClient) roundTrip() error {
	if _, err := b.c.Write(b.req); err != nil {
		return err
	}
	_, err := io.ReadFull(b.c, b.resp)
	return err
}

func BenchmarkRoundTrip(b *testing.B) {
	be := newFixedBackend(b, benchResponse)
	h := newHarness(b, be.ln.Addr().String(), nil)
	c := newBenchClient(b, h.addr)
	require.NoError(b, c.roundTrip())
	require.Equal(b, benchResponse, string(c.resp))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := c.roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRoundTripParallel(b *testing.B) {
	be := newFixedBackend(b, benchResponse)
	h := newHarness(b, be.ln.Addr().String(), nil)
	b.SetParallelism(8)
	b.ReportAllocs()
	var mu sync.Mutex
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		c := newBenchClient(b, h.addr)
		mu.Unlock()
		for pb.Next() {
			if err := c.roundTrip(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestSteadyStateAllocs checks that a proxied request allocates nothing
// once connections and buffers are warm (client and backend here do not
// allocate either).
func TestSteadyStateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	be := newFixedBackend(t, benchResponse)
	h := newHarness(t, be.ln.Addr().String(), nil)
	c := newBenchClient(t, h.addr)
	for range 100 {
		require.NoError(t, c.roundTrip())
	}
	var err error
	allocs := testing.AllocsPerRun(2000, func() {
		if e := c.roundTrip(); e != nil {
			err = e
		}
	})
	require.NoError(t, err)
	require.Equal(t, benchResponse, string(c.resp))
	// AllocsPerRun rounds down: below 1 means almost every request
	// allocates nothing (a rare runtime allocation may fall in the window).
	require.Zero(t, allocs, "allocations per proxied request")
	t.Log("allocations per request: " + strconv.FormatFloat(allocs, 'f', -1, 64))
}
