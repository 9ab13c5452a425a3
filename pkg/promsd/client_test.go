package promsd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

// fakeMADS is a MADS server the test drives: it answers a stream's first
// request with the current state and pushes every new state to every open
// stream, with a fresh nonce per response. It records what it sent and
// every request it received.
type fakeMADS struct {
	observabilityv1.UnimplementedMonitoringAssignmentDiscoveryServiceServer

	mu        sync.Mutex
	version   string
	resources []*anypb.Any
	hasState  bool
	streams   map[*fakeStream]struct{}
	nonce     int
	sent      []*discoveryv3.DiscoveryResponse
	requests  []*discoveryv3.DiscoveryRequest
}

func newFakeMADS() *fakeMADS {
	return &fakeMADS{streams: map[*fakeStream]struct{}{}}
}

// fakeStream is one open stream of a fakeMADS.
type fakeStream struct {
	notify chan struct{} // a new state is there
	kill   chan struct{} // end the stream
}

// closeStreams ends every open stream with an OK status.
func (s *fakeMADS) closeStreams() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st := range s.streams {
		close(st.kill)
		delete(s.streams, st)
	}
}

// set makes (version, resources) the state and pushes it to open streams.
func (s *fakeMADS) set(version string, resources ...*anypb.Any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version, s.resources, s.hasState = version, resources, true
	for st := range s.streams {
		select {
		case st.notify <- struct{}{}:
		default:
		}
	}
}

// setAssignments is set with well-formed resources.
func (s *fakeMADS) setAssignments(t *testing.T, version string, as ...*observabilityv1.MonitoringAssignment) {
	t.Helper()
	s.set(version, anys(t, as...)...)
}

func anys(t *testing.T, as ...*observabilityv1.MonitoringAssignment) []*anypb.Any {
	t.Helper()
	out := make([]*anypb.Any, 0, len(as))
	for _, a := range as {
		r, err := anypb.New(a)
		require.NoError(t, err)
		out = append(out, r)
	}
	return out
}

func (s *fakeMADS) response() *discoveryv3.DiscoveryResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasState {
		return nil
	}
	s.nonce++
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: s.version,
		Resources:   s.resources,
		TypeUrl:     TypeURL,
		Nonce:       fmt.Sprintf("nonce-%d", s.nonce),
	}
	s.sent = append(s.sent, resp)
	return resp
}

func (s *fakeMADS) record(req *discoveryv3.DiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
}

// receivedRequests returns a copy of the requests received so far.
func (s *fakeMADS) receivedRequests() []*discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), s.requests...)
}

// replyTo returns the client's reply to a response of version, once there is
// one.
func (s *fakeMADS) replyTo(version string) *discoveryv3.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	nonces := map[string]bool{}
	for _, r := range s.sent {
		if r.GetVersionInfo() == version {
			nonces[r.GetNonce()] = true
		}
	}
	for _, req := range s.requests {
		if nonces[req.GetResponseNonce()] {
			return req
		}
	}
	return nil
}

func (s *fakeMADS) StreamMonitoringAssignments(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	s.record(first)
	st := &fakeStream{notify: make(chan struct{}, 1), kill: make(chan struct{})}
	st.notify <- struct{}{}
	s.mu.Lock()
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()

	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			s.record(req)
		}
	}()
	for {
		select {
		case <-st.kill:
			return nil
		case <-st.notify:
			if resp := s.response(); resp != nil {
				if err := stream.Send(resp); err != nil {
					return err
				}
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// testServer is a gRPC server on the loopback serving a fakeMADS.
type testServer struct {
	addr string
	srv  *grpc.Server
	done chan struct{}
	once sync.Once
}

// startServer serves mads on addr ("" for a free port on 127.0.0.1). It is
// stopped at the end of the test.
func startServer(t *testing.T, mads *fakeMADS, addr string, opts ...grpc.ServerOption) *testServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	waitFor(t, "listening on "+addr, func() bool {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err == nil
	})
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.WaitForHandlers(true)}, opts...)...)
	observabilityv1.RegisterMonitoringAssignmentDiscoveryServiceServer(srv, mads)
	ts := &testServer{addr: lis.Addr().String(), srv: srv, done: make(chan struct{})}
	go func() {
		defer close(ts.done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(ts.stop)
	return ts
}

// stop closes the listener and every connection, and waits for the handlers.
func (ts *testServer) stop() {
	ts.once.Do(func() {
		ts.srv.Stop()
		<-ts.done
	})
}

// testBackoff keeps reconnections quick and, without jitter, predictable.
var testBackoff = Backoff{Initial: 5 * time.Millisecond, Max: 40 * time.Millisecond, Factor: 2, Jitter: 0}

// startClient runs a client of cfg until the end of the test.
func startClient(t *testing.T, cfg Config) *logBuffer {
	t.Helper()
	log, logs := newTestLogger(t)
	c, err := NewClient(cfg, WithLogger(log), WithBackoff(testBackoff))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(waitTimeout):
			t.Error("the client did not stop")
		}
	})
	return logs
}

func clientConfig(t *testing.T, addr string) Config {
	cfg := DefaultConfig()
	cfg.CPAddress = "grpc://" + addr
	cfg.OutputFile = filepath.Join(t.TempDir(), "sd", "kuma.file_sd.json")
	cfg.Name = "test-sd"
	return cfg
}

func render(t *testing.T, as ...*observabilityv1.MonitoringAssignment) []byte {
	t.Helper()
	data, err := Render(as)
	require.NoError(t, err)
	return data
}

// waitForFile waits until path holds want.
func waitForFile(t *testing.T, path string, want []byte) {
	t.Helper()
	var got []byte
	if !poll(func() bool {
		got, _ = os.ReadFile(path)
		return bytes.Equal(got, want)
	}) {
		require.Equal(t, string(want), string(got), "timed out waiting for the output file")
	}
}

func waitForReply(t *testing.T, mads *fakeMADS, version string) *discoveryv3.DiscoveryRequest {
	t.Helper()
	var reply *discoveryv3.DiscoveryRequest
	waitFor(t, "the reply to version "+version, func() bool {
		reply = mads.replyTo(version)
		return reply != nil
	})
	return reply
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi
}

func requireUntouched(t *testing.T, path string, before os.FileInfo, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
	after := stat(t, path)
	require.True(t, os.SameFile(before, after), "the file was replaced")
	require.Equal(t, before.ModTime(), after.ModTime())
}

var (
	web1 = dataplane("default", "web-1", "10.0.0.1:5670", "web")
	web2 = dataplane("default", "web-2", "10.0.0.2:5670", "web")
	db1  = dataplane("payments", "db-1", "10.0.1.1:5670", "db")
)

func TestClient(t *testing.T) {
	t.Parallel()

	t.Run("first request, initial write and ACK", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1, web2, db1)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		logs := startClient(t, cfg)

		waitForFile(t, cfg.OutputFile, render(t, web1, web2, db1))
		ack := waitForReply(t, mads, "v1")
		require.Equal(t, "v1", ack.GetVersionInfo())
		require.Equal(t, "nonce-1", ack.GetResponseNonce())
		require.Equal(t, TypeURL, ack.GetTypeUrl())
		require.Nil(t, ack.GetErrorDetail())

		first := mads.receivedRequests()[0]
		require.Equal(t, "test-sd", first.GetNode().GetId())
		require.Equal(t, TypeURL, first.GetTypeUrl())
		require.Empty(t, first.GetVersionInfo())
		require.Empty(t, first.GetResponseNonce())

		require.NotEmpty(t, logs.lines("connected to the control plane"))
		require.NotEmpty(t, logs.lines("accepted an update", "version=v1", "targets=3"))
		require.Equal(t, FileMode, stat(t, cfg.OutputFile).Mode().Perm())
	})

	t.Run("updates rewrite the file; removed dataplanes disappear; each response is ACKed", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1, web2, db1)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		startClient(t, cfg)
		waitForFile(t, cfg.OutputFile, render(t, web1, web2, db1))
		waitForReply(t, mads, "v1")

		web2v2 := dataplane("default", "web-2", "10.0.0.22:5670", "web")
		mads.setAssignments(t, "v2", web1, web2v2, db1)
		waitForFile(t, cfg.OutputFile, render(t, web1, web2v2, db1))
		ack := waitForReply(t, mads, "v2")
		require.Equal(t, "v2", ack.GetVersionInfo())
		require.Nil(t, ack.GetErrorDetail())

		mads.setAssignments(t, "v3", web2v2)
		waitForFile(t, cfg.OutputFile, render(t, web2v2))
		require.Equal(t, "v3", waitForReply(t, mads, "v3").GetVersionInfo())

		mads.setAssignments(t, "v4")
		waitForFile(t, cfg.OutputFile, []byte("[]\n"))
		require.Equal(t, "v4", waitForReply(t, mads, "v4").GetVersionInfo())
	})

	t.Run("same content under a new version is ACKed without rewriting", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		logs := startClient(t, cfg)
		want := render(t, web1)
		waitForFile(t, cfg.OutputFile, want)
		waitForReply(t, mads, "v1")
		before := stat(t, cfg.OutputFile)

		mads.setAssignments(t, "v2", web1)
		require.Equal(t, "v2", waitForReply(t, mads, "v2").GetVersionInfo())
		requireUntouched(t, cfg.OutputFile, before, want)
		require.NotEmpty(t, logs.lines("accepted an update", "version=v2", "changed=false"))
	})

	for _, tc := range []struct {
		name     string
		bad      func(t *testing.T) *anypb.Any
		inDetail string
	}{
		{
			name: "wrong type URL",
			bad: func(t *testing.T) *anypb.Any {
				r := anys(t, db1)[0]
				r.TypeUrl = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
				return r
			},
			inDetail: "envoy.config.cluster.v3.Cluster",
		},
		{
			name: "undecodable bytes",
			bad: func(*testing.T) *anypb.Any {
				return &anypb.Any{TypeUrl: TypeURL, Value: []byte{0xff, 0xff, 0xff}}
			},
			inDetail: "decoding",
		},
		{
			name: "invalid UTF-8 in a string field",
			bad: func(*testing.T) *anypb.Any {
				// Field 2 (mesh) holding the byte 0xff.
				value := protowire.AppendTag(nil, 2, protowire.BytesType)
				value = protowire.AppendBytes(value, []byte{0xff})
				return &anypb.Any{TypeUrl: TypeURL, Value: value}
			},
			inDetail: "UTF-8",
		},
	} {
		t.Run("bad resource is NACKed and the file stays: "+tc.name, func(t *testing.T) {
			t.Parallel()
			mads := newFakeMADS()
			mads.setAssignments(t, "v1", web1)
			srv := startServer(t, mads, "")
			cfg := clientConfig(t, srv.addr)
			logs := startClient(t, cfg)
			want := render(t, web1)
			waitForFile(t, cfg.OutputFile, want)
			waitForReply(t, mads, "v1")
			before := stat(t, cfg.OutputFile)

			mads.set("v2", append(anys(t, web1), tc.bad(t))...)
			nack := waitForReply(t, mads, "v2")
			require.Equal(t, "v1", nack.GetVersionInfo(), "a NACK carries the last accepted version")
			require.NotEmpty(t, nack.GetResponseNonce())
			require.Equal(t, TypeURL, nack.GetTypeUrl())
			require.NotNil(t, nack.GetErrorDetail())
			require.Contains(t, nack.GetErrorDetail().GetMessage(), "resource[1]")
			require.Contains(t, nack.GetErrorDetail().GetMessage(), tc.inDetail)
			require.NotZero(t, nack.GetErrorDetail().GetCode())
			requireUntouched(t, cfg.OutputFile, before, want)
			require.NotEmpty(t, logs.lines("rejected an update (NACK)", "version=v2"))

			// The stream goes on: a good update is still taken.
			mads.setAssignments(t, "v3", web1, web2)
			waitForFile(t, cfg.OutputFile, render(t, web1, web2))
			require.Equal(t, "v3", waitForReply(t, mads, "v3").GetVersionInfo())
		})
	}

	t.Run("server stops: the file stays; the client reconnects with backoff and converges", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1, web2)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		logs := startClient(t, cfg)
		want := render(t, web1, web2)
		waitForFile(t, cfg.OutputFile, want)
		waitForReply(t, mads, "v1")
		before := stat(t, cfg.OutputFile)

		srv.stop()
		waitFor(t, "the disconnection", func() bool {
			return len(logs.lines("disconnected from the control plane")) > 0
		})
		waitFor(t, "three failed reconnections", func() bool {
			return len(logs.lines("cannot connect to the control plane")) >= 3
		})
		requireUntouched(t, cfg.OutputFile, before, want)

		// The delays follow the schedule: reset after the handled
		// response, then growing.
		var delays []string
		for _, line := range logs.lines("retry_in=")[:4] {
			delays = append(delays, regexp.MustCompile(`retry_in=(\S+)`).FindStringSubmatch(line)[1])
		}
		require.Equal(t, []string{"5ms", "10ms", "20ms", "40ms"}, delays)

		mads2 := newFakeMADS()
		mads2.setAssignments(t, "v2", web2, db1)
		startServer(t, mads2, srv.addr)
		waitForFile(t, cfg.OutputFile, render(t, web2, db1))
		require.Equal(t, "v2", waitForReply(t, mads2, "v2").GetVersionInfo())
		require.Equal(t, "test-sd", mads2.receivedRequests()[0].GetNode().GetId())
	})

	t.Run("an unwritable file is neither ACKed nor NACKed but retried", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		// A non-empty directory where the file should be: rename fails.
		require.NoError(t, os.MkdirAll(filepath.Join(cfg.OutputFile, "blocker"), 0o755))
		logs := startClient(t, cfg)
		waitFor(t, "two failed attempts", func() bool {
			return len(logs.lines("cannot apply an update", "rename")) >= 2
		})
		require.Nil(t, mads.replyTo("v1"))

		require.NoError(t, os.RemoveAll(cfg.OutputFile))
		waitForFile(t, cfg.OutputFile, render(t, web1))
		require.Nil(t, waitForReply(t, mads, "v1").GetErrorDetail())
	})

	t.Run("a stream closed by the server is reopened", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1)
		srv := startServer(t, mads, "")
		cfg := clientConfig(t, srv.addr)
		logs := startClient(t, cfg)
		waitForFile(t, cfg.OutputFile, render(t, web1))

		mads.closeStreams()
		waitFor(t, "the reconnection", func() bool {
			return len(logs.lines("connected to the control plane")) >= 2
		})
		require.NotEmpty(t, logs.lines("disconnected from the control plane", "closed the stream"))
		mads.setAssignments(t, "v2", web2)
		waitForFile(t, cfg.OutputFile, render(t, web2))
	})
}

func TestClientTLS(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "control plane CA")
	other := newTestCA(t, "someone else's CA")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, ca.certPEM, 0o600))
	otherFile := filepath.Join(dir, "other.pem")
	require.NoError(t, os.WriteFile(otherFile, other.certPEM, 0o600))
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}, MinVersion: tls.VersionTLS12})

	for _, tc := range []struct {
		name      string
		host      string
		configure func(*Config)
		wantErr   string // in the connection failure log; empty: converges
	}{
		{name: "verified with --ca-cert-file", host: "127.0.0.1", configure: func(c *Config) { c.CACertFile = caFile }},
		{name: "--insecure-skip-verify", host: "127.0.0.1", configure: func(c *Config) { c.InsecureSkipVerify = true }},
		{name: "wrong CA fails", host: "127.0.0.1", configure: func(c *Config) { c.CACertFile = otherFile }, wantErr: "unknown authority"},
		{name: "no CA: the system roots do not know a private CA", host: "127.0.0.1", configure: func(*Config) {}, wantErr: "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mads := newFakeMADS()
			mads.setAssignments(t, "v1", web1)
			srv := startServer(t, mads, "", grpc.Creds(creds))
			_, port, err := net.SplitHostPort(srv.addr)
			require.NoError(t, err)
			cfg := clientConfig(t, srv.addr)
			cfg.CPAddress = "grpcs://" + net.JoinHostPort(tc.host, port)
			tc.configure(&cfg)
			logs := startClient(t, cfg)

			if tc.wantErr == "" {
				waitForFile(t, cfg.OutputFile, render(t, web1))
				require.Nil(t, waitForReply(t, mads, "v1").GetErrorDetail())
				return
			}
			waitFor(t, "a failed handshake", func() bool {
				return len(logs.lines("cannot connect to the control plane", tc.wantErr)) >= 2
			})
			require.NoFileExists(t, cfg.OutputFile)
			require.Empty(t, mads.receivedRequests())
		})
	}

	t.Run("plain grpc client against a TLS server fails", func(t *testing.T) {
		t.Parallel()
		mads := newFakeMADS()
		mads.setAssignments(t, "v1", web1)
		srv := startServer(t, mads, "", grpc.Creds(creds))
		cfg := clientConfig(t, srv.addr)
		logs := startClient(t, cfg)
		waitFor(t, "a failed connection", func() bool {
			return len(logs.lines("control plane", "err=")) >= 2
		})
		require.NoFileExists(t, cfg.OutputFile)
		require.Empty(t, mads.receivedRequests())
	})
}

func TestDecodeResponse(t *testing.T) {
	t.Parallel()
	good, err := anypb.New(web1)
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		resp    *discoveryv3.DiscoveryResponse
		want    int
		wantErr []string
	}{
		{name: "nil response", resp: nil, want: 0},
		{name: "no resources", resp: &discoveryv3.DiscoveryResponse{TypeUrl: TypeURL}, want: 0},
		{name: "response type URL may be left out", resp: &discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{good, good}}, want: 2},
		{
			name:    "wrong response type URL",
			resp:    &discoveryv3.DiscoveryResponse{TypeUrl: "type.googleapis.com/other", Resources: []*anypb.Any{good}},
			wantErr: []string{"response type URL", "type.googleapis.com/other"},
		},
		{
			name:    "nil resource",
			resp:    &discoveryv3.DiscoveryResponse{TypeUrl: TypeURL, Resources: []*anypb.Any{good, nil}},
			wantErr: []string{"resource[1]", "missing"},
		},
		{
			name:    "resource without type URL",
			resp:    &discoveryv3.DiscoveryResponse{TypeUrl: TypeURL, Resources: []*anypb.Any{{Value: good.GetValue()}}},
			wantErr: []string{"resource[0]", "type URL"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := decodeResponse(tc.resp)
			if tc.wantErr != nil {
				for _, s := range tc.wantErr {
					require.ErrorContains(t, err, s)
				}
				return
			}
			require.NoError(t, err)
			require.Len(t, got, tc.want)
		})
	}
}
