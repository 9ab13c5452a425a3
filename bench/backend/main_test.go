package main

import (
	"bufio"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		in            string
		wantKeepAlive bool
		wantErr       error
		wantRest      string
	}{
		{name: "HTTP/1.1 keeps the connection", in: "GET / HTTP/1.1\r\nHost: x\r\n\r\nNEXT", wantKeepAlive: true, wantRest: "NEXT"},
		{name: "Connection: close", in: "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"},
		{name: "HTTP/1.0 closes", in: "GET / HTTP/1.0\r\n\r\n"},
		{name: "HTTP/1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", wantKeepAlive: true},
		{name: "body is skipped", in: "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyNEXT", wantKeepAlive: true, wantRest: "NEXT"},
		{name: "chunked body is refused", in: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errBadRequest},
		{name: "bad length", in: "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", wantErr: errBadRequest},
		{name: "unknown protocol", in: "GET / HTTP/2.0\r\n\r\n", wantErr: errBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			br := bufio.NewReader(strings.NewReader(tc.in))
			keepAlive, err := readRequest(br)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantKeepAlive, keepAlive)
			rest, _ := br.Peek(br.Buffered())
			require.Equal(t, tc.wantRest, string(rest))
		})
	}
}

func TestHTTPAnswer(t *testing.T) {
	t.Parallel()
	a := string(httpAnswer(1024))
	head, body, ok := strings.Cut(a, "\r\n\r\n")
	require.True(t, ok)
	require.Contains(t, head, "Content-Length: 1024")
	require.Len(t, body, 1024)
}
