package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAddedLatencyIsPerRound(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		`{"kind":"meta","settings":{"rounds":2}}`,
		`{"proto":"http","round":1,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":100,"p99_us":200}}`,
		`{"proto":"http","round":1,"path":"haproxy","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":400,"p99_us":900}}`,
		`{"proto":"http","round":2,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":300,"p99_us":400}}`,
		`{"proto":"http","round":1,"path":"haproxy","kind":"saturation","rc":0,"tool":"wrk","result":{"requests_total":100000,"rate_achieved":20000},"cpu_ticks":350,"clk_tck":100,"cpu1_busy_ticks":500,"cpu1_all_ticks":500,"rss_kb":15360}`,
		`{"proto":"http","round":2,"path":"haproxy","kind":"openloop","rc":1,"result":null}`,
		`{"proto":"tcp","path":"nginx","kind":"failed","reason":"nginx did not start"}`,
	}, "\n")
	var out strings.Builder
	require.NoError(t, run(strings.NewReader(in), &out))
	got := out.String()
	// Round 2 failed: haproxy's only round is compared with direct's round 1
	// (+300 µs), not with direct's median (200 µs).
	require.Contains(t, got, "| haproxy (1 of 2 rounds failed) | 400 µs | +300 µs | 900 µs | +700 µs | 20000 | 35.0 | 15.0 |")
	require.Contains(t, got, "haproxy round 2: openloop: no result (exit status 1)")
	require.Contains(t, got, "| direct | 200 µs (100–300) | — | 300 µs (200–400) |")
	require.Contains(t, got, "haproxy used 70% of CPU 1 at saturation; CPU 1 was 100% busy in all")
	require.Contains(t, got, "### TCP echo, 1 KiB message\n")
	require.Contains(t, got, "| nginx | FAILED |")
	require.Contains(t, got, "nginx did not start")
}

func TestSummary(t *testing.T) {
	t.Parallel()
	require.Equal(t, "—", summary(nil, "%.0f", ""))
	require.Equal(t, "5 µs", summary([]float64{5}, "%.0f", " µs"))
	require.Equal(t, "+3 µs (+1–+9)", summary([]float64{9, 1, 2, 4}, "%+.0f", " µs"))
}
