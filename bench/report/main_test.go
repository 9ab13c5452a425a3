package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAddedLatencyIsPerRound(t *testing.T) {
	t.Parallel()
	got := render(t,
		`{"kind":"meta","settings":{"rounds":2}}`,
		`{"proto":"http","round":1,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":100,"p99_us":200}}`,
		`{"proto":"http","round":1,"path":"haproxy","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":400,"p99_us":900}}`,
		`{"proto":"http","round":2,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":300,"p99_us":400}}`,
		`{"proto":"http","round":1,"path":"haproxy","kind":"saturation","rc":0,"tool":"wrk","result":{"requests_total":100000,"rate_achieved":20000},"cpu_ticks":350,"clk_tck":100,"cpu1_busy_ticks":500,"cpu1_all_ticks":500,"rss_kb":15360}`,
		`{"proto":"http","round":2,"path":"haproxy","kind":"openloop","rc":1,"result":null}`,
		`{"proto":"tcp","path":"nginx","kind":"failed","reason":"nginx did not start"}`,
	)
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

func TestMeshRowsAreTwoProxies(t *testing.T) {
	t.Parallel()
	got := render(t,
		`{"proto":"tcp","round":1,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":100,"p99_us":200}}`,
		`{"proto":"tcp","round":1,"path":"mesh-plain","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":500,"p99_us":900}}`,
		`{"proto":"tcp","round":1,"path":"mesh-mtls","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":600,"p99_us":1000}}`,
		`{"kind":"tls","proto":"tcp","path":"mesh-plain","when":"before","client_handshakes":0,"server_handshakes":0,"plain_refused":null}`,
		`{"kind":"tls","proto":"tcp","path":"mesh-plain","when":"after","client_handshakes":0,"server_handshakes":0,"plain_refused":null}`,
		`{"kind":"tls","proto":"tcp","path":"mesh-mtls","when":"before","client_handshakes":2,"server_handshakes":2,"plain_refused":true}`,
		`{"kind":"tls","proto":"tcp","path":"mesh-mtls","when":"after","client_handshakes":51,"server_handshakes":51,"plain_refused":null}`,
	)
	require.Contains(t, got, "| mesh-plain (2× kuma-dp) | 500 µs | +400 µs |")
	require.Contains(t, got, "| mesh-mtls (2× kuma-dp) | 600 µs | +500 µs |")
	require.Contains(t, got, "- mesh-* rows are a mesh hop through two proxies")
	require.Contains(t, got, "mesh-plain TLS handshakes (client towards the server / server inbound): 0 / 0 before the rounds, 0 / 0 by the end of the rounds")
	require.Contains(t, got, "mesh-mtls TLS handshakes (client towards the server / server inbound): 2 / 2 before the rounds, plain text refused by the server's inbound, 51 / 51 by the end of the rounds")
	require.Less(t, strings.Index(got, "| mesh-plain"), strings.Index(got, "| mesh-mtls"))
}

// The HTTP/2 and gRPC phases get tables of their own, with the same
// columns, nginx's HTTP/1.1 upstream said, and kuma-dp against haproxy.
func TestHTTP2AndGRPCTables(t *testing.T) {
	t.Parallel()
	sat := func(proto, path string, ticks, rps int) string { return satLine(proto, path, 1, ticks, rps, "") }
	var lines []string
	for _, proto := range []string{"http2", "grpc"} {
		lines = append(lines,
			`{"proto":"`+proto+`","round":1,"path":"direct","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":100,"p99_us":200}}`,
			`{"proto":"`+proto+`","round":1,"path":"haproxy","kind":"openloop","rc":0,"result":{"rate_target":1000,"p50_us":300,"p99_us":500}}`,
			sat(proto, "haproxy", 200, 20000),
			sat(proto, "nginx", 300, 15000),
			sat(proto, "kuma-dp", 300, 16000),
		)
	}
	got := render(t, lines...)
	h2 := strings.Index(got, "### HTTP/2 (h2c), 1 KiB body (median of 1 round")
	g := strings.Index(got, "### gRPC unary (h2c), 1 KiB answer (median of 1 round")
	require.GreaterOrEqual(t, h2, 0, got)
	require.Greater(t, g, h2, got)
	require.Contains(t, got, "| path | p50 @1k | added p50 | p99 @1k | added p99 | max req/s (loadgen, 32 streams) | proxy CPU µs/req | proxy RSS MB |")
	require.Contains(t, got, "| haproxy | 300 µs | +200 µs | 500 µs | +300 µs | 20000 | 20.0 | 10.0 |")
	require.Contains(t, got, "| kuma-dp | — | — | — | — | 16000 | 30.0 | 10.0 |")
	require.Equal(t, 2, strings.Count(got, "kuma-dp against haproxy (medians): 1.50× its CPU per request, 0.80× its max req/s"))
	// nginx's HTTP/1.1 upstream is said once: under the HTTP/2 table only.
	note := strings.Index(got, "nginx: h2c from the client, HTTP/1.1 (keep-alive) to the backend")
	require.Greater(t, note, h2)
	require.Less(t, note, g)
	require.Equal(t, 1, strings.Count(got, "nginx: h2c from the client"))
}

// With --syscalls the saturation lines carry perf's count: per request,
// per path, and kuma-dp's against haproxy's; without it nothing is said.
func TestSyscallsPerRequest(t *testing.T) {
	t.Parallel()
	sat := func(path string, round int, syscalls string) string {
		return satLine("tcp", path, round, 300, 20000, syscalls)
	}
	got := render(t,
		sat("haproxy", 1, `,"syscalls":500000`), sat("haproxy", 2, `,"syscalls":520000`),
		sat("kuma-dp", 1, `,"syscalls":400000`), sat("kuma-dp", 2, `,"syscalls":null`),
	)
	require.Contains(t, got, "system calls made on CPU 1 per request at saturation (perf stat, raw_syscalls:sys_enter): haproxy 5.10 (5.00–5.20), kuma-dp 4.00")
	require.Contains(t, got, "kuma-dp against haproxy (medians): 1.00× its CPU per request, 1.00× its max req/s, 0.78× its system calls per request")

	require.NotContains(t, render(t, sat("haproxy", 1, ""), sat("kuma-dp", 1, "")), "system calls")
}

// satLine is a saturation record of proxies.sh: 100000 requests at rps,
// ticks of the proxy's CPU (clk_tck 100), 10 MB RSS; extra is appended to
// its fields (`,"name":value`).
func satLine(proto, path string, round, ticks, rps int, extra string) string {
	return fmt.Sprintf(`{"proto":%q,"round":%d,"path":%q,"kind":"saturation","rc":0,"tool":"loadgen","result":{"requests_total":100000,"rate_achieved":%d},`+
		`"cpu_ticks":%d,"clk_tck":100,"cpu1_busy_ticks":500,"cpu1_all_ticks":500,"rss_kb":10240%s}`, proto, round, path, rps, ticks, extra)
}

// kuma-dp-b, a second build measured in the same rounds, is compared with
// kuma-dp (and with haproxy, as kuma-dp is).
func TestSecondBuildAgainstKumaDP(t *testing.T) {
	t.Parallel()
	got := render(t,
		satLine("tcp", "haproxy", 1, 300, 20000, `,"syscalls":600000`),
		satLine("tcp", "kuma-dp", 1, 300, 20000, `,"syscalls":600000`),
		satLine("tcp", "kuma-dp-b", 1, 240, 25000, `,"syscalls":480000`),
	)
	require.Contains(t, got, "kuma-dp-b (BENCH_KUMA_DP_B) against kuma-dp in the same rounds (medians): 0.80× its CPU per request, 1.25× its max req/s, 0.80× its system calls per request")
	require.Contains(t, got, "kuma-dp-b against haproxy (medians): 0.80× its CPU per request")
	require.Less(t, strings.Index(got, "| kuma-dp |"), strings.Index(got, "| kuma-dp-b |"))
}

// render is the report of the given lines of proxies.sh's results.
func render(t *testing.T, lines ...string) string {
	t.Helper()
	var out strings.Builder
	require.NoError(t, run(strings.NewReader(strings.Join(lines, "\n")), &out))
	return out.String()
}

// The private part of the RSS (RssAnon) is reported per path when recorded,
// and the kuma-dp row says it shares its process with kuma-dp-scrape.
func TestPrivateMemoryAndTheSharedProcess(t *testing.T) {
	t.Parallel()
	got := render(t,
		satLine("tcp", "haproxy", 1, 300, 20000, `,"anon_kb":3891`),
		satLine("tcp", "haproxy", 2, 300, 20000, `,"anon_kb":3993`),
		satLine("tcp", "kuma-dp", 1, 300, 20000, `,"anon_kb":5120`),
		satLine("tcp", "kuma-dp-scrape", 1, 300, 20000, `,"anon_kb":5632`),
	)
	require.Contains(t, got, "of the RSS, private memory (RssAnon: heap, stacks, buffers) in MB: haproxy 3.8 (3.8–3.9), kuma-dp 5.0, kuma-dp-scrape 5.5; the rest is file pages")
	require.Contains(t, got, "kuma-dp and kuma-dp-scrape are one process")

	older := render(t, satLine("tcp", "haproxy", 1, 300, 20000, ""), satLine("tcp", "kuma-dp", 1, 300, 20000, ""))
	require.NotContains(t, older, "private memory")
	require.NotContains(t, older, "one process")
}
