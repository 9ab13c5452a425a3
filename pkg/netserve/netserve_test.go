package netserve_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// greet answers every connection with "hello" and closes it.
func greet(c net.Conn) {
	go func() {
		_, _ = io.WriteString(c, "hello")
		_ = c.Close()
	}()
}

func requireGreeted(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(30*time.Second)))
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
}

func TestServeRidesOutFileDescriptorExhaustion(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM} {
		t.Run(errno.Error(), func(t *testing.T) {
			fl := netservetest.FailAccepts(listen(t), errno, 6)
			log, logs := netservetest.NewLogger()
			errs := &netservetest.Counter{}
			done := make(chan error, 1)
			go func() {
				done <- netserve.Serve(fl, netserve.AcceptOptions{Name: "test", Log: log, Errors: errs}, greet)
			}()

			requireGreeted(t, fl.Addr().String())
			requireGreeted(t, fl.Addr().String())
			require.EqualValues(t, 6, errs.Load(), "every failed accept is counted")
			out := logs.String()
			require.Equal(t, 1, strings.Count(out, "accepting connections fails"), "one episode is logged once:\n%s", out)
			require.Equal(t, 1, strings.Count(out, "accepting connections again"), out)
			require.Contains(t, out, errno.Error())
			require.Contains(t, out, "failed_attempts=6")

			require.NoError(t, fl.Close())
			select {
			case err := <-done:
				require.NoError(t, err, "closing the listener is not a failure")
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return after the listener was closed")
			}
		})
	}
}

func TestServeReturnsPermanentErrors(t *testing.T) {
	fl := netservetest.FailAccepts(listen(t), syscall.EINVAL, -1)
	errs := &netservetest.Counter{}
	err := netserve.Serve(fl, netserve.AcceptOptions{Errors: errs}, greet)
	require.ErrorIs(t, err, syscall.EINVAL)
	require.Contains(t, err.Error(), fl.Addr().String())
	require.Zero(t, errs.Load(), "a permanent error is not retried")
}

func TestCloseEndsTheWaitToRetry(t *testing.T) {
	fl := netservetest.FailAccepts(listen(t), syscall.EMFILE, -1)
	errs := &netservetest.Counter{}
	ln := netserve.Listen(fl, netserve.AcceptOptions{Errors: errs})
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for errs.Load() < 3 {
		require.True(t, time.Now().Before(deadline), "Accept did not retry")
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, ln.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("Accept kept waiting after Close")
	}
}

// With the real socket closed, Serve returns nil even if it was backing off.
func TestServeOfAClosedListener(t *testing.T) {
	ln := listen(t)
	require.NoError(t, ln.Close())
	require.NoError(t, netserve.Serve(ln, netserve.AcceptOptions{}, greet))
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{netservetest.AcceptError(syscall.EMFILE), true},
		{netservetest.AcceptError(syscall.ENFILE), true},
		{netservetest.AcceptError(syscall.ECONNABORTED), true},
		{netservetest.AcceptError(syscall.ENOBUFS), true},
		{netservetest.AcceptError(syscall.ENOMEM), true},
		{netservetest.AcceptError(syscall.EPROTO), true},
		{fmt.Errorf("wrapped: %w", syscall.EMFILE), true},
		{os.ErrDeadlineExceeded, true},
		{netservetest.AcceptError(syscall.EINVAL), false},
		{netservetest.AcceptError(syscall.EBADF), false},
		{net.ErrClosed, false},
		{errors.New("something else"), false},
	} {
		require.Equal(t, tc.want, netserve.Temporary(tc.err), "%v", tc.err)
	}
}

// http.Server and gRPC get a wrapped listener: they never see the failures.
func TestListenUnderHTTPServer(t *testing.T) {
	fl := netservetest.FailAccepts(listen(t), syscall.EMFILE, 4)
	errs := &netservetest.Counter{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(netserve.Listen(fl, netserve.AcceptOptions{Errors: errs})) }()
	defer srv.Close()
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get("http://" + fl.Addr().String() + "/")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.Equal(t, "ok", string(b))
	require.EqualValues(t, 4, errs.Load())
}

func TestRecoverEndsOnlyThatConnection(t *testing.T) {
	ln := listen(t)
	log, logs := netservetest.NewLogger()
	panics := &netservetest.Counter{}
	p := &netserve.Panics{Name: "inbound:test", Log: log, Count: panics}
	go func() {
		_ = netserve.Serve(ln, netserve.AcceptOptions{}, func(c net.Conn) {
			go func() {
				defer p.Recover(c)
				var b [1]byte
				if _, err := c.Read(b[:]); err != nil {
					return
				}
				if b[0] == '!' {
					explode()
				}
				_, _ = c.Write(b[:])
				_ = c.Close()
			}()
		})
	}()
	bad, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer bad.Close()
	_, err = bad.Write([]byte("!"))
	require.NoError(t, err)
	require.NoError(t, bad.SetReadDeadline(time.Now().Add(30*time.Second)))
	n, err := bad.Read(make([]byte, 1))
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF, "the panicking connection is closed")
	require.EqualValues(t, 1, panics.Load())
	out := logs.String()
	require.Contains(t, out, "recovered a panic")
	require.Contains(t, out, "listener=inbound:test")
	require.Contains(t, out, "explode", "the log carries the stack of the panic")

	good, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer good.Close()
	_, err = good.Write([]byte("a"))
	require.NoError(t, err)
	b, err := io.ReadAll(good)
	require.NoError(t, err)
	require.Equal(t, "a", string(b), "the listener keeps serving")
}

//go:noinline
func explode() { panic("boom") }

func TestRecoverHTTPFailsTheRequest(t *testing.T) {
	log, logs := netservetest.NewLogger()
	panics := &netservetest.Counter{}
	p := &netserve.Panics{Name: "admin", Log: log, Count: panics}
	srv := netserve.HTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer p.RecoverHTTP()
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		if r.URL.Path == "/panic" {
			_, _ = io.WriteString(w, "partial")
			explode()
		}
		_, _ = io.WriteString(w, "ok")
	}), netserve.HTTPLimits{}, log)
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := http.Client{Timeout: 30 * time.Second}
	res, err := c.Get("http://" + ln.Addr().String() + "/panic")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		_ = res.Body.Close()
	}
	require.Error(t, err, "a request whose handler panicked must not look complete")
	res, err = c.Get("http://" + ln.Addr().String() + "/abort")
	if err == nil {
		_ = res.Body.Close()
	}
	require.Error(t, err)
	require.EqualValues(t, 1, panics.Load(), "a deliberate abort is not counted")
	require.Equal(t, 1, strings.Count(logs.String(), "recovered a panic"), logs.String())
	res, err = c.Get("http://" + ln.Addr().String() + "/")
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	require.Equal(t, "ok", string(b))
}

func TestNilPanicsRecovers(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	func() {
		var p *netserve.Panics
		defer p.Recover(a)
		explode()
	}()
	_, err := a.Write([]byte("x"))
	require.ErrorIs(t, err, io.ErrClosedPipe, "the connection was closed")
}

var smallHTTPLimits = netserve.HTTPLimits{
	ReadHeaderTimeout: 300 * time.Millisecond,
	ReadTimeout:       300 * time.Millisecond,
	IdleTimeout:       300 * time.Millisecond,
	MaxHeaderBytes:    1024,
}

func TestHTTPServerLimits(t *testing.T) {
	srv := netserve.HTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}), smallHTTPLimits, nil)
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	netservetest.CheckHTTPLimits(t, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, http.MethodPost, "/", smallHTTPLimits)
}

func TestHTTPServerDefaults(t *testing.T) {
	srv := netserve.HTTPServer(http.NotFoundHandler(), netserve.HTTPLimits{}, nil)
	d := netserve.DefaultHTTPLimits
	require.Equal(t, d.ReadHeaderTimeout, srv.ReadHeaderTimeout)
	require.Equal(t, d.ReadTimeout, srv.ReadTimeout)
	require.Equal(t, d.IdleTimeout, srv.IdleTimeout)
	require.Equal(t, d.MaxHeaderBytes, srv.MaxHeaderBytes)
	require.Zero(t, srv.WriteTimeout, "no write timeout unless asked: long polls")
}

func TestGRPCServerLimits(t *testing.T) {
	limits := netserve.GRPCLimits{
		MaxConcurrentStreams: 7,
		KeepaliveTime:        300 * time.Millisecond,
		KeepaliveTimeout:     300 * time.Millisecond,
		KeepaliveMinTime:     100 * time.Millisecond,
	}
	srv := grpc.NewServer(netserve.GRPCServerOptions(limits)...)
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	netservetest.CheckGRPCLimits(t, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, limits)
}

func TestGRPCServerDefaultsAnnounceTheStreamLimit(t *testing.T) {
	srv := grpc.NewServer(netserve.GRPCServerOptions(netserve.GRPCLimits{})...)
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	netservetest.CheckGRPCStreamLimit(t, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, 100)
}
