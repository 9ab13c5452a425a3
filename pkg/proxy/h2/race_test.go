//go:build race

package h2

// raceEnabled: the race detector's own allocations blur allocation counts.
const raceEnabled = true
