package demoapp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func TestBackendErrorRate(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want int
	}{{0, 200}, {1, 500}} {
		h, err := Backend(BackendOptions{Name: "b", ErrorRate: tc.rate})
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		for range 20 {
			code, _ := get(t, srv.URL+"/")
			require.Equal(t, tc.want, code)
		}
		_, metrics := get(t, srv.URL+"/metrics")
		require.Contains(t, metrics, `demo_backend_requests_total{code="`+map[int]string{200: "200", 500: "500"}[tc.want]+`"} 20`)
		srv.Close()
	}
	_, err := Backend(BackendOptions{ErrorRate: 2})
	require.ErrorContains(t, err, "--error-rate")
}

func TestFrontendReportsBackendFailures(t *testing.T) {
	ok, _ := Backend(BackendOptions{Name: "b1"})
	bad, _ := Backend(BackendOptions{Name: "b2", ErrorRate: 1})
	okSrv, badSrv := httptest.NewServer(ok), httptest.NewServer(bad)
	defer okSrv.Close()
	defer badSrv.Close()

	f := httptest.NewServer(Frontend(okSrv.URL + "/"))
	defer f.Close()
	code, body := get(t, f.URL+"/")
	require.Equal(t, 200, code)
	require.Equal(t, "frontend -> hello from b1\n", body)

	f2 := httptest.NewServer(Frontend(badSrv.URL + "/"))
	defer f2.Close()
	code, _ = get(t, f2.URL+"/")
	require.Equal(t, 502, code)

	f3 := httptest.NewServer(Frontend("http://127.0.0.1:1/"))
	defer f3.Close()
	code, body = get(t, f3.URL+"/")
	require.Equal(t, 502, code)
	require.True(t, strings.HasPrefix(body, "backend unreachable"))
}

func TestTrafficIsBounded(t *testing.T) {
	h, _ := Backend(BackendOptions{Name: "b"})
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := Traffic(context.Background(), TrafficOptions{Target: srv.URL + "/", Rate: 500, Requests: 50}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.Equal(t, Result{Sent: 50, OK: 50}, res)
	_, err = Traffic(context.Background(), TrafficOptions{Target: srv.URL, Rate: 0}, nil)
	require.ErrorContains(t, err, "--rate")
}

// TestServeTCPEcho: what a connection sends comes back, on every
// connection, until the context ends.
func TestServeTCPEcho(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	host := loopback.Host()
	go func() { done <- ServeTCPEcho(ctx, net.JoinHostPort(host, "8000"), slog.New(slog.DiscardHandler)) }()
	var c net.Conn
	require.Eventually(t, func() bool {
		var err error
		c, err = net.Dial("tcp", net.JoinHostPort(host, "8000"))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	defer c.Close()
	_, err := c.Write([]byte("ping\n"))
	require.NoError(t, err)
	got := make([]byte, 5)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, "ping\n", string(got))
	cancel()
	require.NoError(t, <-done)
}
