package dpauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// counted is a fetch that answers with the token's name, kept for ttl, and
// counts its calls per token.
type counted struct {
	clock *fakeClock
	ttl   time.Duration
	mu    sync.Mutex
	calls map[string]int
}

func (f *counted) fetch(token string) func(context.Context) (identity, time.Time, error) {
	return func(context.Context) (identity, time.Time, error) {
		f.mu.Lock()
		f.calls[token]++
		f.mu.Unlock()
		return identity{authenticated: true, username: token}, f.clock.Now().Add(f.ttl), nil
	}
}

func (f *counted) count(token string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[token] }

func TestReviewCacheIsBounded(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	f := &counted{clock: clock, ttl: time.Minute, calls: map[string]int{}}
	c := newReviewCache(3, clock.Now)
	get := func(token string) {
		t.Helper()
		id, err := c.get(t.Context(), token, f.fetch(token))
		require.NoError(t, err)
		require.Equal(t, token, id.username)
	}

	for i := range 10 {
		get(fmt.Sprint("t", i))
		require.LessOrEqual(t, c.len(), 3)
	}
	require.Equal(t, 3, c.len())
	// t7..t9 are kept, the older ones were evicted.
	get("t9")
	get("t7")
	require.Equal(t, 1, f.count("t9"))
	require.Equal(t, 1, f.count("t7"))
	get("t0")
	require.Equal(t, 2, f.count("t0"), "evicted: reviewed again")
	// The least recently used (t8) made room for t0.
	get("t8")
	require.Equal(t, 2, f.count("t8"))
	get("t0")
	require.Equal(t, 2, f.count("t0"))

	// An answer lasts its time only.
	clock.Add(time.Minute)
	get("t0")
	require.Equal(t, 3, f.count("t0"), "expired: reviewed again")
	// Expired answers make room before used ones are evicted.
	get("a")
	get("b")
	require.Equal(t, 3, c.len())
	get("t0")
	get("a")
	get("b")
	require.Equal(t, 3, f.count("t0"), "kept: the expired t7 and t8 made room")
	require.Equal(t, 1, f.count("a"))
	require.Equal(t, 1, f.count("b"))
}

func TestReviewCacheKeepsNoErrors(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := newReviewCache(10, clock.Now)
	calls := 0
	failing := func(context.Context) (identity, time.Time, error) {
		calls++
		return identity{}, clock.Now().Add(time.Hour), errors.New("the API server is away")
	}
	for range 3 {
		_, err := c.get(t.Context(), "x", failing)
		require.ErrorContains(t, err, "away")
	}
	require.Equal(t, 3, calls)
	require.Zero(t, c.len())

	// An answer that may not be kept (until already past) is not.
	_, err := c.get(t.Context(), "y", func(context.Context) (identity, time.Time, error) { return identity{}, clock.Now(), nil })
	require.NoError(t, err)
	require.Zero(t, c.len())
}

// TestReviewCacheSharesOneReview: a reconnect storm of one proxy's calls
// costs one TokenReview.
func TestReviewCacheSharesOneReview(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	c := newReviewCache(10, clock.Now)
	release := make(chan struct{})
	var calls atomic.Int32
	fetch := func(context.Context) (identity, time.Time, error) {
		calls.Add(1)
		<-release
		return identity{authenticated: true, username: "u"}, clock.Now().Add(time.Minute), nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := c.get(context.Background(), "token", fetch)
			if err == nil && id.username != "u" {
				err = fmt.Errorf("got %q", id.username)
			}
			errs <- err
		}()
	}
	// Wait until the review is in flight, then let it answer.
	require.Eventually(t, func() bool { return calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int32(1), calls.Load())

	// A caller that gives up does not wait for the review.
	ctx, cancel := context.WithCancel(t.Context())
	block := make(chan struct{})
	started := make(chan struct{})
	go func() {
		_, _ = c.get(context.Background(), "slow", func(context.Context) (identity, time.Time, error) {
			close(started)
			<-block
			return identity{}, clock.Now().Add(time.Minute), nil
		})
	}()
	<-started
	cancel()
	_, err := c.get(ctx, "slow", nil)
	require.ErrorIs(t, err, context.Canceled)
	close(block)
}
