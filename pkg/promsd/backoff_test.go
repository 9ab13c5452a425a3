package promsd

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		cfg   Backoff
		rand  float64
		steps int
		want  []time.Duration
	}{
		{
			name:  "default schedule without jitter: 500ms doubling up to 30s",
			cfg:   DefaultBackoff(),
			rand:  0,
			steps: 9,
			want:  []time.Duration{500 * ms, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second},
		},
		{
			name:  "full jitter draw takes off at most the jitter fraction",
			cfg:   DefaultBackoff(),
			rand:  1,
			steps: 3,
			want:  []time.Duration{400 * ms, 800 * ms, 1600 * ms},
		},
		{
			name:  "zero fields take the defaults",
			cfg:   Backoff{},
			rand:  0,
			steps: 2,
			want:  []time.Duration{500 * ms, time.Second},
		},
		{
			name:  "unusable values are corrected",
			cfg:   Backoff{Initial: 10 * ms, Max: 5 * ms, Factor: math.NaN(), Jitter: -1},
			rand:  1,
			steps: 2,
			want:  []time.Duration{10 * ms, 10 * ms},
		},
		{
			name:  "jitter above 1 is capped",
			cfg:   Backoff{Initial: 10 * ms, Max: 40 * ms, Factor: 3, Jitter: 7},
			rand:  0.5,
			steps: 3,
			want:  []time.Duration{5 * ms, 15 * ms, 20 * ms},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newBackoffState(tc.cfg, func() float64 { return tc.rand })
			var got []time.Duration
			for range tc.steps {
				got = append(got, s.next())
			}
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("reset restarts the schedule", func(t *testing.T) {
		t.Parallel()
		s := newBackoffState(DefaultBackoff(), func() float64 { return 0 })
		for range 5 {
			s.next()
		}
		s.reset()
		require.Equal(t, 500*time.Millisecond, s.next())
	})

	t.Run("random jitter stays within bounds", func(t *testing.T) {
		t.Parallel()
		s := newBackoffState(DefaultBackoff(), nil)
		base := 500 * time.Millisecond
		for range 20 {
			d := s.next()
			require.LessOrEqual(t, d, base)
			require.GreaterOrEqual(t, d, base-base/5)
			base = min(2*base, 30*time.Second)
		}
	})
}
