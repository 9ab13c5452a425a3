package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kumametrics/mesh/bench/internal/benchgrpc"
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

// listen serves on 127.0.0.1:0 with serve until the test ends.
func listen(t *testing.T, serve func(net.Listener) error, stop func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = serve(ln) }()
	t.Cleanup(stop)
	return ln.Addr().String()
}

func TestH2CServer(t *testing.T) {
	t.Parallel()
	srv := newH2CServer(1024)
	addr := listen(t, srv.Serve, func() { _ = srv.Close() })
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	client := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
	for range 3 { // several requests on one connection
		res, err := client.Get("http://" + addr + "/any/path")
		require.NoError(t, err)
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		require.Equal(t, 2, res.ProtoMajor)
		require.Equal(t, "1024", res.Header.Get("Content-Length"))
		require.Equal(t, string(httpAnswer(1024)[len(httpAnswer(1024))-1024:]), string(b))
	}
	// HTTP/1.1 is not spoken: the port is h2c only.
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/")
	if err == nil {
		res.Body.Close()
	}
	require.Error(t, err)
}

func TestGRPCServer(t *testing.T) {
	t.Parallel()
	srv := newGRPCServer(1024)
	addr := listen(t, srv.Serve, srv.Stop)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	out := new(wrapperspb.BytesValue)
	require.NoError(t, conn.Invoke(t.Context(), benchgrpc.Path, wrapperspb.Bytes([]byte("hello")), out))
	require.Len(t, out.GetValue(), 1024)
	require.Equal(t, benchgrpc.Encoded(1024), proto.Size(out))
	err = conn.Invoke(t.Context(), "/"+benchgrpc.Service+"/Other", wrapperspb.Bytes(nil), out)
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
}
