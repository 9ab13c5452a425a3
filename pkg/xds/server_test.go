package xds

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testType = "type.googleapis.com/google.protobuf.StringValue"

const waitTimeout = 10 * time.Second

// snapshot builds a snapshot of StringValues: name → value.
func snapshot(t *testing.T, kv ...string) *Snapshot {
	t.Helper()
	var rs []Resource
	for i := 0; i < len(kv); i += 2 {
		r, err := NewResource(kv[i], wrapperspb.String(kv[i+1]))
		require.NoError(t, err)
		rs = append(rs, r)
	}
	s, err := NewSnapshot(testType, rs)
	require.NoError(t, err)
	return s
}

func TestSnapshotVersionFollowsContent(t *testing.T) {
	a := snapshot(t, "x", "1", "y", "2")
	b := snapshot(t, "y", "2", "x", "1")
	require.Equal(t, a.Version(), b.Version(), "order does not matter")
	require.NotEqual(t, a.Version(), snapshot(t, "x", "1", "y", "3").Version())
	require.NotEqual(t, a.Version(), snapshot(t, "x", "1").Version())
	require.NotEqual(t, snapshot(t, "xy", "1").Version(), snapshot(t, "x", "y1").Version(), "names and versions are delimited")
	require.Equal(t, []string{"x", "y"}, []string{a.Resources()[0].Name, a.Resources()[1].Name})
	_, ok := a.Get("y")
	require.True(t, ok)

	r, err := NewResource("x", wrapperspb.String("1"))
	require.NoError(t, err)
	_, err = NewSnapshot(testType, []Resource{r, r})
	require.ErrorContains(t, err, `"x" used twice`)
	other, err := NewResource("s", &structpb.Struct{})
	require.NoError(t, err)
	_, err = NewSnapshot(testType, []Resource{other})
	require.ErrorContains(t, err, "is not a")
}

type fakeStream[Req, Resp any] struct {
	ctx context.Context
	in  chan Req
	out chan Resp
}

func newFake[Req, Resp any](ctx context.Context) *fakeStream[Req, Resp] {
	return &fakeStream[Req, Resp]{ctx: ctx, in: make(chan Req, 16), out: make(chan Resp, 16)}
}

func (f *fakeStream[Req, Resp]) Context() context.Context { return f.ctx }

func (f *fakeStream[Req, Resp]) Send(r Resp) error {
	select {
	case f.out <- r:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

func (f *fakeStream[Req, Resp]) Recv() (Req, error) {
	var zero Req
	select {
	case r, ok := <-f.in:
		if !ok {
			return zero, io.EOF
		}
		return r, nil
	case <-f.ctx.Done():
		return zero, f.ctx.Err()
	}
}

func (f *fakeStream[Req, Resp]) next(t *testing.T) Resp {
	t.Helper()
	select {
	case r := <-f.out:
		return r
	case <-time.After(waitTimeout):
		t.Fatal("no response")
	}
	var zero Resp
	return zero
}

// serve runs fn in the background; the returned func waits for it to end
// (without cancelling) and returns its error. Cleanup cancels and waits.
func serve(t *testing.T, fn func() error, cancel context.CancelFunc) func() error {
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	var (
		once sync.Once
		err  error
	)
	wait := func() error {
		once.Do(func() {
			select {
			case err = <-errc:
			case <-time.After(waitTimeout):
				t.Error("stream did not end")
			}
		})
		return err
	}
	t.Cleanup(func() { cancel(); _ = wait() })
	return wait
}

func names(rs []*discoveryv3.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}

func TestSotWPushesOnlyNewVersions(t *testing.T) {
	reg := prometheus.NewRegistry()
	metrics, err := NewMetrics(reg)
	require.NoError(t, err)
	var src Shared
	srv := NewServer(testType, &src, metrics, nil)
	ctx, cancel := context.WithCancel(t.Context())
	st := newFake[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](ctx)
	var acked, nacked []string
	waitEnd := serve(t, func() error {
		return srv.StreamSotW(st, Callbacks{
			OnAck:  func(v string) { acked = append(acked, v) },
			OnNack: func(v, d string) { nacked = append(nacked, v+":"+d) },
		})
	}, cancel)

	st.in <- &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "prom"}, TypeUrl: testType}
	// Nothing is ready yet: the first publish answers the first request.
	s1 := snapshot(t, "a", "1")
	require.True(t, src.Publish(s1))
	r1 := st.next(t)
	require.Equal(t, s1.Version(), r1.GetVersionInfo())
	require.Equal(t, testType, r1.GetTypeUrl())
	require.Len(t, r1.GetResources(), 1)
	st.in <- &discoveryv3.DiscoveryRequest{VersionInfo: r1.GetVersionInfo(), ResponseNonce: r1.GetNonce(), TypeUrl: testType}
	// (An ACK read after the next push would be stale: wait for it.)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.requestsReceived.WithLabelValues(testType, ACK)) == 1
	}, waitTimeout, time.Millisecond)

	// Same content again: not published, nothing sent; the next real change is the next response.
	require.False(t, src.Publish(snapshot(t, "a", "1")))
	s2 := snapshot(t, "a", "1", "b", "2")
	require.True(t, src.Publish(s2))
	r2 := st.next(t)
	require.Equal(t, s2.Version(), r2.GetVersionInfo())
	require.Len(t, r2.GetResources(), 2)
	require.NotEqual(t, r1.GetNonce(), r2.GetNonce())

	// A stale nonce is ignored, a NACK is reported and nothing is resent.
	st.in <- &discoveryv3.DiscoveryRequest{VersionInfo: r1.GetVersionInfo(), ResponseNonce: r1.GetNonce(), ErrorDetail: &rpcstatus.Status{Message: "stale"}}
	st.in <- &discoveryv3.DiscoveryRequest{VersionInfo: r1.GetVersionInfo(), ResponseNonce: r2.GetNonce(), ErrorDetail: &rpcstatus.Status{Message: "bad b"}}
	// (A change published before the server reads the NACK would make it stale: wait for it.)
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.requestsReceived.WithLabelValues(testType, NACK)) == 1
	}, waitTimeout, time.Millisecond)
	s3 := snapshot(t, "b", "2")
	require.True(t, src.Publish(s3))
	r3 := st.next(t)
	require.Equal(t, s3.Version(), r3.GetVersionInfo())
	st.in <- &discoveryv3.DiscoveryRequest{VersionInfo: r3.GetVersionInfo(), ResponseNonce: r3.GetNonce()}

	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.requestsReceived.WithLabelValues(testType, ACK)) == 2
	}, waitTimeout, time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.requestsReceived.WithLabelValues(testType, NACK)))
	require.Equal(t, 3.0, testutil.ToFloat64(metrics.responsesSent.WithLabelValues(testType)))
	require.Equal(t, 1.0, testutil.ToFloat64(metrics.streamsActive.WithLabelValues(testType)))
	close(st.in)
	require.NoError(t, waitEnd(), "the client closing its side ends the stream cleanly")
	require.Equal(t, 0.0, testutil.ToFloat64(metrics.streamsActive.WithLabelValues(testType)))
	require.Equal(t, []string{s1.Version(), s3.Version()}, acked)
	require.Equal(t, []string{s2.Version() + ":bad b"}, nacked)
}

func TestSotWClientWithCurrentVersionWaitsForAChange(t *testing.T) {
	var src Shared
	s1 := snapshot(t, "a", "1")
	src.Publish(s1)
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	st := newFake[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamSotW(st, Callbacks{}) }, cancel)
	st.in <- &discoveryv3.DiscoveryRequest{VersionInfo: s1.Version(), TypeUrl: testType}
	s2 := snapshot(t, "a", "2")
	src.Publish(s2)
	require.Equal(t, s2.Version(), st.next(t).GetVersionInfo(), "the first response is the change, not a resend")
}

func TestWrongTypeURLEndsTheStream(t *testing.T) {
	var src Shared
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st := newFake[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](ctx)
	st.in <- &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/other"}
	err := srv.StreamSotW(st, Callbacks{})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.ErrorContains(t, err, "type.googleapis.com/other")

	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: "type.googleapis.com/other"}
	require.Equal(t, codes.InvalidArgument, status.Code(srv.StreamDelta(dt, Callbacks{})))
}

func TestDeltaWildcardSendsOnlyChanges(t *testing.T) {
	var src Shared
	src.Publish(snapshot(t, "a", "1", "b", "1", "c", "1"))
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamDelta(dt, Callbacks{}) }, cancel)

	dt.in <- &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "sd"}, TypeUrl: testType}
	r1 := dt.next(t)
	require.Equal(t, []string{"a", "b", "c"}, names(r1.GetResources()))
	require.Empty(t, r1.GetRemovedResources())
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r1.GetNonce()}

	s2 := snapshot(t, "a", "1", "b", "2", "d", "1")
	src.Publish(s2)
	r2 := dt.next(t)
	require.Equal(t, []string{"b", "d"}, names(r2.GetResources()))
	require.Equal(t, []string{"c"}, r2.GetRemovedResources())
	require.Equal(t, s2.Version(), r2.GetSystemVersionInfo())
}

func TestDeltaReconnectSendsOnlyWhatDiffers(t *testing.T) {
	var src Shared
	s := snapshot(t, "a", "1", "b", "1")
	src.Publish(s)
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamDelta(dt, Callbacks{}) }, cancel)
	a, _ := s.Get("a")
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{
		TypeUrl:                 testType,
		InitialResourceVersions: map[string]string{"a": a.Version, "b": "old", "gone": "x"},
	}
	r := dt.next(t)
	require.Equal(t, []string{"b"}, names(r.GetResources()))
	require.Equal(t, []string{"gone"}, r.GetRemovedResources())
}

func TestDeltaNamedSubscriptions(t *testing.T) {
	var src Shared
	src.Publish(snapshot(t, "a", "1", "b", "1", "c", "1"))
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamDelta(dt, Callbacks{}) }, cancel)

	dt.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: testType, ResourceNamesSubscribe: []string{"b", "nope"}}
	r1 := dt.next(t)
	require.Equal(t, []string{"b"}, names(r1.GetResources()))
	require.Equal(t, []string{"nope"}, r1.GetRemovedResources(), "a subscribed name that does not exist is reported")

	dt.in <- &discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r1.GetNonce(), ResourceNamesSubscribe: []string{"c"}}
	r2 := dt.next(t)
	require.Equal(t, []string{"c"}, names(r2.GetResources()))

	// Unsubscribing b and subscribing a in one request: the answer (a) shows it was read.
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r2.GetNonce(), ResourceNamesUnsubscribe: []string{"b"}, ResourceNamesSubscribe: []string{"a"}}
	r3 := dt.next(t)
	require.Equal(t, []string{"a"}, names(r3.GetResources()))
	// Changes to unsubscribed resources are not sent.
	src.Publish(snapshot(t, "a", "2", "b", "2", "c", "2"))
	r4 := dt.next(t)
	require.Equal(t, []string{"a", "c"}, names(r4.GetResources()))
	require.Empty(t, r4.GetRemovedResources())
}

func TestOnOpenCanRefuseAndOnCloseFollows(t *testing.T) {
	var src Shared
	src.Publish(snapshot(t, "a", "1"))
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	refused := newFake[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](ctx)
	refused.in <- &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "intruder"}}
	closed := 0
	err := srv.StreamSotW(refused, Callbacks{
		OnOpen:  func(n *corev3.Node) error { return status.Errorf(codes.PermissionDenied, "no %s", n.GetId()) },
		OnClose: func() { closed++ },
	})
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Equal(t, 0, closed, "a refused stream was never open")

	ok := newFake[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](ctx)
	ok.in <- &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "proxy"}}
	close(ok.in)
	go func() { <-ok.out }()
	require.NoError(t, srv.StreamSotW(ok, Callbacks{OnOpen: func(*corev3.Node) error { return nil }, OnClose: func() { closed++ }}))
	require.Equal(t, 1, closed)
}

func TestSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	require.NoError(t, err)
	NewServer(testType, &Shared{}, m, nil)
	require.Equal(t, 0.0, testutil.ToFloat64(m.requestsReceived.WithLabelValues(testType, NACK)))
	require.Equal(t, 0.0, testutil.ToFloat64(m.generationErrors.WithLabelValues(testType)))
	n, err := testutil.GatherAndCount(reg, "xds_generation_errors", "xds_requests_received")
	require.NoError(t, err)
	require.Equal(t, 3, n, "errors, ACK and NACK exist before any event")
}
