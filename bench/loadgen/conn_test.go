package main

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTPRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		answer  string
		wantErr string
	}{
		{name: "200 with length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{name: "header names in any case", answer: "HTTP/1.1 200 OK\r\ncontent-LENGTH:  3 \r\nConnection: keep-alive\r\n\r\nabc"},
		{name: "HTTP/1.0 keep-alive", answer: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"},
		{name: "not 200", answer: "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", wantErr: `status "HTTP/1.1 503 Service Unavailable", want 200`},
		{name: "2000 is not 200", answer: "HTTP/1.1 2000 Odd\r\nContent-Length: 0\r\n\r\n", wantErr: "want 200"},
		{name: "short body", answer: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", wantErr: "short body: 5 of 10 bytes: unexpected EOF"},
		{name: "closed before the status line", answer: "", wantErr: "reading status line: unexpected EOF"},
		{name: "closed in the headers", answer: "HTTP/1.1 200 OK\r\nContent-Le", wantErr: "reading headers: unexpected EOF"},
		{name: "chunked", answer: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", wantErr: errNoLength.Error()},
		{name: "no length", answer: "HTTP/1.1 200 OK\r\n\r\nhello", wantErr: errNoLength.Error()},
		{name: "connection close", answer: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", wantErr: errConnClose.Error()},
		{name: "HTTP/1.0 without keep-alive", answer: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", wantErr: errConnClose.Error()},
		{name: "bad length", answer: "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", wantErr: `bad Content-Length "5x"`},
		{name: "garbage", answer: "SSH-2.0-OpenSSH\r\n", wantErr: "malformed status line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, server := net.Pipe()
			defer client.Close()
			req := "GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-loadgen\r\n\r\n"
			got := make(chan string, 1)
			go func() {
				defer server.Close()
				buf := make([]byte, len(req))
				_, _ = io.ReadFull(server, buf)
				got <- string(buf)
				_, _ = io.WriteString(server, tc.answer)
			}()
			h := &httpConn{conn: client, br: bufio.NewReaderSize(client, 4096), req: []byte(req)}
			err := h.roundTrip()
			require.Equal(t, req, <-got)
			requireErr(t, err, tc.wantErr)
		})
	}
}

func TestEchoRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		echo    func(msg []byte) []byte
		wantErr string
	}{
		{name: "same bytes", echo: func(m []byte) []byte { return m }},
		{name: "short", echo: func(m []byte) []byte { return m[:3] }, wantErr: "short echo: 3 of 8 bytes"},
		{name: "different", echo: func(m []byte) []byte { return []byte("zzzzzzzz") }, wantErr: "echo differs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, server := net.Pipe()
			defer client.Close()
			msg := []byte("abcdefgh")
			go func() {
				defer server.Close()
				buf := make([]byte, len(msg))
				_, _ = io.ReadFull(server, buf)
				_, _ = server.Write(tc.echo(buf))
			}()
			e := &echoConn{conn: client, msg: msg, buf: make([]byte, len(msg))}
			err := e.roundTrip()
			requireErr(t, err, tc.wantErr)
		})
	}
}

func TestQuantile(t *testing.T) {
	t.Parallel()
	v := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, int64(5), quantile(v, 0.5))
	require.Equal(t, int64(9), quantile(v, 0.9))
	require.Equal(t, int64(10), quantile(v, 0.99))
	require.Equal(t, int64(1), quantile(v, 0))
}

// cannedServer answers every request line it reads with a fixed 200.
func cannedServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestRuns(t *testing.T) {
	t.Parallel()
	addr := cannedServer(t)
	base := config{mode: "http", addr: addr, conns: 4, path: "/", host: "bench", timeout: 10 * time.Second}

	requireOpenLoop(t, base)

	closed := base
	closed.warmup, closed.duration = 10*time.Millisecond, 100*time.Millisecond
	r := runClosedLoop(closed)
	require.Zero(t, r.Errors, r.Error)
	require.Positive(t, r.Requests)
	require.GreaterOrEqual(t, r.RequestsTotal, r.Requests)

	refused := base
	refused.addr = "127.0.0.1:1"
	refused.rate, refused.n = 1000, 10
	r = runOpenLoop(refused)
	require.Equal(t, 1, r.Errors)
	require.Contains(t, r.Error, "connect")
}

// requireErr: no error when want is empty, else an error containing want.
func requireErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		require.NoError(t, err)
		return
	}
	require.ErrorContains(t, err, want)
}

// requireOpenLoop runs base open loop, 200 requests at 2000/s after a
// 10 ms warm-up (20 requests), and checks what it reports.
func requireOpenLoop(t *testing.T, base config) {
	t.Helper()
	open := base
	open.rate, open.n, open.warmup = 2000, 200, 10*time.Millisecond
	r := runOpenLoop(open)
	require.Zero(t, r.Errors, r.Error)
	require.Equal(t, 200, r.Requests)
	require.Equal(t, 220, r.RequestsTotal)
	require.Positive(t, r.P50)
	require.LessOrEqual(t, r.P50, r.P99)
	require.LessOrEqual(t, r.P99, r.Max)
}
