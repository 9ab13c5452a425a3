//go:build race

package http1_test

// largeBodySize is smaller under the race detector, which slows copying ~10×.
const largeBodySize = 8 << 20

const raceEnabled = true
