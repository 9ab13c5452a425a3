package xds

import (
	"context"
	"strconv"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
)

// A name that does not exist is reported removed and not kept: when it
// appears later, the client is not sent it.
func TestDeltaUnknownNamesAreNotKept(t *testing.T) {
	var src Shared
	src.Publish(snapshot(t, "a", "1", "b", "1"))
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamDelta(dt, Callbacks{}) }, cancel)

	dt.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: testType, ResourceNamesSubscribe: []string{"b", "invented"}}
	r1 := dt.next(t)
	require.Equal(t, []string{"b"}, names(r1.GetResources()))
	require.Equal(t, []string{"invented"}, r1.GetRemovedResources())

	src.Publish(snapshot(t, "a", "1", "b", "2", "invented", "1"))
	r2 := dt.next(t)
	require.Equal(t, []string{"b"}, names(r2.GetResources()), "the subscription to a name that did not exist was not kept")

	// Subscribing again, now that it exists, works.
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{ResponseNonce: r2.GetNonce(), ResourceNamesSubscribe: []string{"invented"}}
	r3 := dt.next(t)
	require.Equal(t, []string{"invented"}, names(r3.GetResources()))

	// A subscribed resource that goes away is reported once and forgotten.
	src.Publish(snapshot(t, "a", "1", "b", "2"))
	r4 := dt.next(t)
	require.Equal(t, []string{"invented"}, r4.GetRemovedResources())
	src.Publish(snapshot(t, "a", "1", "b", "3", "invented", "2"))
	r5 := dt.next(t)
	require.Equal(t, []string{"b"}, names(r5.GetResources()))
}

// Subscriptions sent before the first snapshot are checked against it.
func TestDeltaSubscriptionsBeforeTheFirstSnapshot(t *testing.T) {
	var src Shared
	srv := NewServer(testType, &src, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	dt := newFake[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](ctx)
	serve(t, func() error { return srv.StreamDelta(dt, Callbacks{}) }, cancel)
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: testType, ResourceNamesSubscribe: []string{"a", "invented"}}
	dt.in <- &discoveryv3.DeltaDiscoveryRequest{TypeUrl: testType, ResourceNamesSubscribe: []string{"c", "more"}}
	src.Publish(snapshot(t, "a", "1", "b", "1", "c", "1"))
	r1 := dt.next(t)
	require.Equal(t, []string{"a"}, names(r1.GetResources()))
	require.Equal(t, []string{"invented"}, r1.GetRemovedResources())
	r2 := dt.next(t)
	require.Equal(t, []string{"c"}, names(r2.GetResources()))
	require.Equal(t, []string{"more"}, r2.GetRemovedResources())
}

// However many names a client invents, a stream keeps none of them.
func TestInventedNamesDoNotGrowTheStreamState(t *testing.T) {
	snap := snapshot(t, "a", "1")
	d := &deltaState{subscribed: map[string]bool{}, known: map[string]string{}}
	for round := range 10 {
		invented := make([]string, 10000)
		for i := range invented {
			invented[i] = "invented-" + strconv.Itoa(round) + "-" + strconv.Itoa(i)
		}
		d.subscribe(append(invented, "a"))
		changed, removed := d.diff(snap)
		require.Len(t, removed, len(invented))
		if round == 0 {
			require.Len(t, changed, 1)
		}
		require.Len(t, d.subscribed, 1, "only the name that exists is kept")
		require.Len(t, d.known, 1)
	}
}
