//go:build !race

package http1_test

// largeBodySize is the size of the bodies streamed in TestLargeBodiesStreamed.
const largeBodySize = 64 << 20

const raceEnabled = false
