package latest

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSetWakesEveryWaiter(t *testing.T) {
	var v Value[int]
	got, ch := v.Get()
	require.Equal(t, 0, got)
	_, ch2 := v.Get()
	select {
	case <-ch:
		t.Fatal("woken before Set")
	default:
	}
	v.Set(7)
	for _, c := range []<-chan struct{}{ch, ch2} {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not woken")
		}
	}
	got, ch3 := v.Get()
	require.Equal(t, 7, got)
	require.Equal(t, 7, v.Load())
	select {
	case <-ch3:
		t.Fatal("a channel handed out after Set must wait for the next Set")
	default:
	}
}

func TestConcurrentSetAndGet(t *testing.T) {
	var v Value[int]
	var wg sync.WaitGroup
	const n = 1000
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= n; i++ {
			v.Set(i)
		}
	}()
	last := 0
	for last < n {
		got, ch := v.Get()
		require.GreaterOrEqual(t, got, last, "values go backwards")
		last = got
		if last < n {
			<-ch
		}
	}
	wg.Wait()
}
