package stats

import (
	"fmt"
	"io"
	"regexp"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func cachedFilters(sn *snapshot) []*filterEntry {
	if l := sn.filters.Load(); l != nil {
		return *l
	}
	return nil
}

func TestFilterCache(t *testing.T) {
	t.Parallel()
	s := NewStore()
	for i := range 3 {
		NewClusterStats(s, fmt.Sprintf("c%d", i))
	}
	sn := s.snap.Load()

	t.Run("computed once per expression", func(t *testing.T) {
		first := sn.filter(regexp.MustCompile(`^cluster\.c1\.`))
		// A separately compiled regexp with the same source hits the cache.
		again := sn.filter(regexp.MustCompile(`^cluster\.c1\.`))
		require.Same(t, first, again)
		var n int
		for i, st := range sn.byName {
			if first.has(int32(i)) {
				n++
				require.Regexp(t, `^cluster\.c1\.`, st.name)
			}
		}
		require.Equal(t, len(sn.series)/3, n)
	})

	t.Run("bounded", func(t *testing.T) {
		for i := range 3 * maxCachedFilters {
			require.NoError(t, s.WriteEnvoy(io.Discard, RenderOptions{Filter: regexp.MustCompile(fmt.Sprintf("x%d", i))}))
		}
		require.Len(t, cachedFilters(sn), maxCachedFilters)
	})

	t.Run("a new generation starts empty", func(t *testing.T) {
		NewRBACStats(s, "l")
		require.NotSame(t, sn, s.snap.Load())
		require.Empty(t, cachedFilters(s.snap.Load()))
	})

	t.Run("concurrent scrapes agree", func(t *testing.T) {
		sn := s.snap.Load()
		var wg sync.WaitGroup
		got := make([]*filterEntry, 8)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = sn.filter(regexp.MustCompile(`rbac`))
			}()
		}
		wg.Wait()
		for _, e := range got {
			require.Equal(t, got[0].bits, e.bits)
		}
		n := 0
		for _, e := range cachedFilters(sn) {
			if e.expr == "rbac" {
				n++
			}
		}
		require.Equal(t, 1, n, "one cache entry per expression")
	})
}

func TestBucketQuantile(t *testing.T) {
	t.Parallel()
	var cum [NumBuckets]uint64
	for i := range cum {
		cum[i] = 10 // all ten observations in the first bucket (0, 0.5]
	}
	require.InDelta(t, 0.0, bucketQuantile(&cum, 0), 1e-12)
	require.InDelta(t, 0.25, bucketQuantile(&cum, 0.5), 1e-12)
	require.InDelta(t, 0.5, bucketQuantile(&cum, 1), 1e-12)
}
