package h2

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientBytes writes what a client sends after its preface with a framer.
func clientBytes(write func(fr *http2.Framer, enc func(fields ...string) []byte)) []byte {
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	e := hpack.NewEncoder(&hbuf)
	enc := func(fields ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = e.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	_ = fr.WriteSettings()
	write(fr, enc)
	return buf.Bytes()
}

var get = []string{":method", "GET", ":scheme", "http", ":authority", "echo", ":path", "/"}

// Whatever a client sends, the engine neither panics nor hangs: once the
// client stops sending, its connection ends, and the engine goes on
// serving other clients.
func FuzzClientFrames(f *testing.F) {
	f.Add(clientBytes(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(get...), EndStream: true, EndHeaders: true})
	}))
	f.Add(clientBytes(func(fr *http2.Framer, enc func(...string) []byte) {
		post := []string{":method", "POST", ":scheme", "http", ":authority", "echo", ":path", "/", "content-length", "5"}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(post...), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("hel"))
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteData(1, false, []byte("lo"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc("x-t", "1"), EndStream: true, EndHeaders: true})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: enc(get...), EndStream: true, EndHeaders: true})
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
		_ = fr.WritePing(false, [8]byte{1, 2, 3})
	}))
	f.Add(clientBytes(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(get...)[:3], EndHeaders: false})
		_ = fr.WriteContinuation(1, true, enc(get...)[3:])
		_ = fr.WriteWindowUpdate(1, 1<<31-1)
		_ = fr.WriteWindowUpdate(1, 1<<31-1)
		_ = fr.WriteData(0, true, []byte("x"))
	}))
	f.Add(clientBytes(func(fr *http2.Framer, enc func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: []byte{0xff, 0xff, 0xff}, EndHeaders: true})
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = fr.WritePriority(5, http2.PriorityParam{StreamDep: 5})
	}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x09, 0, 0, 0, 0, 1})

	backend := h2cFuzzServer(f)
	r := newRig(f, backend, func(c *Config) { c.IdleTimeout = 2 * time.Second })
	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		go func() {
			_, _ = io.WriteString(c, http2.ClientPreface)
			_, _ = c.Write(input)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		// Ended: closed, or reset when the engine gave up on a broken
		// client with its input unread. Not: still open at the deadline.
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection did not end after the client's input ended: %v", err)
		}
	})
}

func h2cFuzzServer(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})}
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
