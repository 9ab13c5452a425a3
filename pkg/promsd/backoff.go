package promsd

import (
	"math/rand/v2"
	"time"
)

// Backoff is the reconnection schedule: the n-th delay in a row is
// Initial*Factor^(n-1), capped at Max, minus a random part of up to Jitter
// (a fraction in [0, 1]) of it. The schedule restarts after a response from
// the control plane was handled.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Factor  float64
	Jitter  float64
}

// DefaultBackoff is 500ms, doubling up to 30s, with up to 20% jitter.
func DefaultBackoff() Backoff {
	return Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second, Factor: 2, Jitter: 0.2}
}

// normalized returns b with unusable fields replaced by the defaults'.
func (b Backoff) normalized() Backoff {
	d := DefaultBackoff()
	if b.Initial <= 0 {
		b.Initial = d.Initial
	}
	if b.Max <= 0 {
		b.Max = d.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if !(b.Factor >= 1) { // also catches NaN
		b.Factor = d.Factor
	}
	if !(b.Jitter >= 0) {
		b.Jitter = 0
	}
	if b.Jitter > 1 {
		b.Jitter = 1
	}
	return b
}

// backoffState walks a Backoff schedule.
type backoffState struct {
	cfg     Backoff
	current time.Duration // un-jittered delay of the next attempt
	rand    func() float64
}

func newBackoffState(cfg Backoff, rnd func() float64) *backoffState {
	if rnd == nil {
		rnd = rand.Float64
	}
	cfg = cfg.normalized()
	return &backoffState{cfg: cfg, current: cfg.Initial, rand: rnd}
}

// next returns the delay before the next attempt and advances the schedule.
func (s *backoffState) next() time.Duration {
	d := s.current
	grown := float64(s.current) * s.cfg.Factor
	if grown >= float64(s.cfg.Max) {
		s.current = s.cfg.Max
	} else {
		s.current = time.Duration(grown)
	}
	return d - time.Duration(s.cfg.Jitter*s.rand()*float64(d))
}

// reset restarts the schedule at Initial.
func (s *backoffState) reset() { s.current = s.cfg.Initial }
