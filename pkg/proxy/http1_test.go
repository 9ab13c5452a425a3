package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTP1ThroughTheProxy(t *testing.T) {
	backend := func(name string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fail" {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			fmt.Fprint(w, name)
		}))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	a, b := backend("a"), backend("b")
	dead := addr(freePort(t))
	p, st := newProxy(t)
	port := freePort(t)
	cfg := outboundConfig(t, port, dead, a, b)
	cfg.Outbounds[0].Protocol = "http"
	require.NoError(t, p.Apply(cfg))

	seen := map[string]int{}
	for range 6 {
		// A new client connection each time: upstream connections are chosen round robin.
		tr := &http.Transport{DisableKeepAlives: true}
		res, err := (&http.Client{Transport: tr}).Get("http://" + addr(port))
		require.NoError(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		require.Equal(t, 200, res.StatusCode)
		seen[string(body)]++
	}
	require.Len(t, seen, 2, "both live endpoints served: %v", seen)
	res, err := http.Get("http://" + addr(port) + "/fail")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 503, res.StatusCode)

	require.Eventually(t, func() bool {
		return counter(t, st, "cluster.echo.upstream_rq_2xx") == "6" && counter(t, st, "cluster.echo.upstream_rq_5xx") == "1" &&
			counter(t, st, "http.echo.downstream_rq_total") == "7"
	}, waitTimeout, time.Millisecond)
	require.NotEqual(t, "0", counter(t, st, "cluster.echo.upstream_cx_connect_fail"), "the dead endpoint was tried and counted")
	require.NotEqual(t, "0", counter(t, st, "cluster.echo.upstream_cx_rx_bytes_total"))

	// Endpoint change: new requests go to the new set.
	cfg = outboundConfig(t, port, b)
	cfg.Outbounds[0].Protocol = "http"
	require.NoError(t, p.Apply(cfg))
	for range 3 {
		c, err := net.Dial("tcp", addr(port))
		require.NoError(t, err)
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		out, _ := io.ReadAll(c)
		c.Close()
		require.Contains(t, string(out), "\r\n\r\nb")
	}
}
