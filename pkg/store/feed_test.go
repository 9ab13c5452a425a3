package store

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
)

func event(i int) Event {
	return Event{Type: Updated, Kind: resource.KindDataplane, Key: resource.Key{Mesh: "m", Name: "dp"}, Version: int64(i)}
}

// drain takes every event queued in ch without waiting.
func drain(ch <-chan Event) []Event {
	var got []Event
	for {
		select {
		case e := <-ch:
			got = append(got, e)
		default:
			return got
		}
	}
}

// A subscriber that falls behind gets what fitted, then one Resync in place
// of everything it lost; publishing never blocks on it, and a subscriber
// that keeps up loses nothing.
func TestFeedOverflowResyncs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var f Feed
	slow := f.Watch(ctx)
	fast := f.Watch(ctx)

	const n = feedBuffer + 100
	var fastGot []Event
	for i := 1; i <= n; i++ {
		f.Publish(event(i)) // a full subscriber must not block this
		fastGot = append(fastGot, drain(fast)...)
	}
	require.Len(t, fastGot, n, "a subscriber that keeps up loses nothing")
	for i, e := range fastGot {
		require.Equal(t, event(i+1), e)
	}

	slowGot := drain(slow)
	require.Len(t, slowGot, feedBuffer+1, "what fitted, then one Resync")
	for i, e := range slowGot[:feedBuffer] {
		require.Equal(t, event(i+1), e)
	}
	require.Equal(t, Event{Type: Resync}, slowGot[feedBuffer])

	// Once it has caught up, it gets events again, and a later overflow
	// queues a new Resync.
	f.Publish(event(n + 1))
	require.Equal(t, []Event{event(n + 1)}, drain(slow))
	for i := range feedBuffer + 5 {
		f.Publish(event(n + 2 + i))
	}
	again := drain(slow)
	require.Len(t, again, feedBuffer+1)
	require.Equal(t, Event{Type: Resync}, again[feedBuffer])
}

// A subscription ends with its context: the channel is closed and
// publishing goes on for the others.
func TestFeedUnsubscribes(t *testing.T) {
	var f Feed
	ctx, cancel := context.WithCancel(context.Background())
	gone := f.Watch(ctx)
	stay := f.Watch(t.Context())
	cancel()
	for range gone { // closed once the feed dropped it
	}
	f.Publish(event(1))
	require.Equal(t, []Event{event(1)}, drain(stay))
}
