package mads

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

func emptyViews() Views { return mirror.New(memory.New(), nil) }

// A long poll asking for more than MaxFetchTimeout is held at most that.
func TestFetchTimeoutIsCapped(t *testing.T) {
	h := start(t, func(o *Options) {
		o.DefaultFetchTimeout, o.MaxFetchTimeout = 100*time.Millisecond, 300*time.Millisecond
	})
	h.addDataplane(t, "web-1", "10.0.0.1")
	version := h.waitAssignments(t, 1).Version()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, asked := range []string{"1h", "1d", "10m"} {
		r := h.fetch(t, ctx, "?fetch-timeout="+asked, requestBody(version))
		require.Equal(t, http.StatusNotModified, r.status, "fetch-timeout=%s is held at most the 300ms cap", asked)
	}
}

func TestMaxFetchTimeoutBelowTheDefaultIsRefused(t *testing.T) {
	_, err := New(Options{Views: emptyViews(), DefaultFetchTimeout: time.Minute, MaxFetchTimeout: time.Second})
	require.ErrorContains(t, err, "exceeds the maximum")
}

// Beyond MaxHeldLongPolls a long poll is refused with 503 and Retry-After,
// and counted; room comes back when held polls are answered.
func TestHeldLongPollsAreBounded(t *testing.T) {
	h := start(t, func(o *Options) { o.MaxHeldLongPolls = 3 })
	h.addDataplane(t, "web-1", "10.0.0.1")
	version := h.waitAssignments(t, 1).Version()

	got := make(chan fetchResult, 3)
	for range 3 {
		go func() { got <- h.fetch(t, t.Context(), "?fetch-timeout=1m", requestBody(version)) }()
	}
	h.waitHeld(t, 3)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+h.addr+FetchPath+"?fetch-timeout=1m", bytes.NewBufferString(requestBody(version)))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var body struct{ Title, Details string }
	require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
	_ = res.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After must be a number of seconds")
	require.Positive(t, secs)
	require.Equal(t, "Too many long polls", body.Title)
	require.Contains(t, body.Details, "maxHeldLongPolls")
	require.Equal(t, 1.0, sum(t, h.reg, "mads_server_long_polls_rejected_total"))
	require.EqualValues(t, 3, h.srv.held.Load(), "a refused poll does not count as held")

	// A change answers the held polls; then there is room again.
	h.addDataplane(t, "web-2", "10.0.0.2")
	for range 3 {
		select {
		case r := <-got:
			require.Equal(t, http.StatusOK, r.status)
		case <-time.After(waitTimeout):
			t.Fatal("held polls not answered after a change")
		}
	}
	version = h.waitAssignments(t, 2).Version()
	go func() { got <- h.fetch(t, t.Context(), "?fetch-timeout=1m", requestBody(version)) }()
	h.waitHeld(t, 1)
	h.addDataplane(t, "web-3", "10.0.0.3")
	require.Equal(t, http.StatusOK, (<-got).status)
}

// ReadTimeout bounds reading a request, not the wait of a long poll.
func TestLongPollOutlivesReadTimeout(t *testing.T) {
	h := start(t, func(o *Options) { o.HTTPLimits = netserve.HTTPLimits{ReadTimeout: 100 * time.Millisecond} })
	h.addDataplane(t, "web-1", "10.0.0.1")
	version := h.waitAssignments(t, 1).Version()
	began := time.Now()
	r := h.fetch(t, t.Context(), "?fetch-timeout=600ms", requestBody(version))
	require.Equal(t, http.StatusNotModified, r.status)
	require.GreaterOrEqual(t, time.Since(began), 600*time.Millisecond, "held for its whole fetch-timeout")
}

func TestHTTPLimits(t *testing.T) {
	limits := netserve.HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 1024}
	h := start(t, func(o *Options) { o.HTTPLimits = limits })
	h.waitAssignments(t, 0)
	netservetest.CheckHTTPLimits(t, func() (net.Conn, error) { return net.Dial("tcp", h.addr) }, http.MethodPost, FetchPath+"?fetch-timeout=0s", limits)
}

// The default head limit is 64 KiB, not net/http's 1 MiB.
func TestDefaultHeadLimit(t *testing.T) {
	h := start(t, nil)
	h.waitAssignments(t, 0)
	netservetest.CheckHTTPHeadLimit(t, func() (net.Conn, error) { return net.Dial("tcp", h.addr) }, http.MethodPost, FetchPath+"?fetch-timeout=0s", 64<<10)
}

func TestGRPCLimits(t *testing.T) {
	limits := netserve.GRPCLimits{MaxConcurrentStreams: 5, KeepaliveTime: 300 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond, KeepaliveMinTime: 100 * time.Millisecond}
	h := start(t, func(o *Options) { o.GRPCLimits = limits })
	netservetest.CheckGRPCLimits(t, func() (net.Conn, error) { return net.Dial("tcp", h.addr) }, limits)
}

func TestDefaultStreamLimit(t *testing.T) {
	h := start(t, nil)
	netservetest.CheckGRPCStreamLimit(t, func() (net.Conn, error) { return net.Dial("tcp", h.addr) }, 100)
}

// Out of file descriptors, the protocol split keeps accepting once
// descriptors are free again: HTTP and gRPC are served.
func TestServesAgainAfterFileDescriptorExhaustion(t *testing.T) {
	errs := &netservetest.Counter{}
	var failing *netservetest.FailingListener
	h := startOn(t, func(o *Options) { o.AcceptErrors = errs }, func(ln net.Listener) net.Listener {
		failing = netservetest.FailAccepts(ln, syscall.EMFILE, 5)
		return failing
	})
	h.addDataplane(t, "web-1", "10.0.0.1")
	h.waitAssignments(t, 1)

	r := h.fetch(t, t.Context(), "?fetch-timeout=0s", requestBody(""))
	require.Equal(t, http.StatusOK, r.status)
	require.EqualValues(t, 5, failing.Failed.Load())

	client := grpcClient(t, h.addr, insecure.NewCredentials())
	f, err := client.FetchMonitoringAssignments(t.Context(), &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "sd"}})
	require.NoError(t, err)
	require.Len(t, f.GetResources(), 1)
	require.EqualValues(t, 5, errs.Load())
}

// An accept error that is not temporary ends Serve with it: the control
// plane then stops and says why, instead of running without discovery.
func TestPermanentAcceptErrorEndsServe(t *testing.T) {
	srv, err := New(Options{Views: emptyViews()})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	err = srv.Serve(t.Context(), netservetest.FailAccepts(ln, syscall.EINVAL, -1))
	require.ErrorIs(t, err, syscall.EINVAL)
}
