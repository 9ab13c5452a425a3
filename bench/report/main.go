// Command report turns the raw results of bench/proxies.sh (JSON lines)
// into markdown tables: per protocol, one row per path with the median over
// rounds and the min–max range. Added latency is computed per round against
// the direct path of the same round, then summarised. The mesh-* paths are two
// proxies (a client kuma-dp's outbound, then a server kuma-dp's inbound): their
// rows say so, and their TLS handshake counts are reported under the table.
//
//	report bench/results/2026-11-26T13-00-00.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// line is one record written by proxies.sh.
type line struct {
	Kind    string          `json:"kind"`
	Proto   string          `json:"proto"`
	Round   int             `json:"round"`
	Path    string          `json:"path"`
	RC      int             `json:"rc"`
	Tool    string          `json:"tool"`
	Reason  string          `json:"reason"`
	Result  json.RawMessage `json:"result"`
	CPU     float64         `json:"cpu_ticks"`
	Backend float64         `json:"backend_cpu_ticks"`
	ClkTck  float64         `json:"clk_tck"`
	RSSKB   float64         `json:"rss_kb"`
	// AnonKB is the RssAnon part of RSSKB: the proxy's private memory (heap,
	// stacks), as opposed to file pages shared by every process mapping the
	// same executable or library. Absent in results written before it.
	AnonKB *float64 `json:"anon_kb"`
	// CPU1Busy and CPU1All are /proc/stat ticks of CPU 1 (the proxy's)
	// over the saturation run: everything that ran there, not only the proxy.
	CPU1Busy float64 `json:"cpu1_busy_ticks"`
	CPU1All  float64 `json:"cpu1_all_ticks"`
	// Syscalls is what perf counted made on CPU 1 over the saturation run
	// (proxies.sh --syscalls); absent otherwise.
	Syscalls *float64 `json:"syscalls"`
	// tls: the TLS handshakes a mesh path's client and server kuma-dp
	// counted, before ("before") or after ("after") the rounds.
	When             string `json:"when"`
	ClientHandshakes int64  `json:"client_handshakes"`
	ServerHandshakes int64  `json:"server_handshakes"`
	PlainRefused     *bool  `json:"plain_refused"`
	// meta
	Settings json.RawMessage `json:"settings"`
}

type loadResult struct {
	Requests      int     `json:"requests"`
	RequestsTotal int     `json:"requests_total"`
	RateAchieved  float64 `json:"rate_achieved"`
	RateTarget    float64 `json:"rate_target"`
	Errors        int     `json:"errors"`
	Error         string  `json:"error"`
	P50           float64 `json:"p50_us"`
	P99           float64 `json:"p99_us"`
	P999          float64 `json:"p999_us"`
	SendLagP99    float64 `json:"send_lag_p99_us"`
}

type scrapeResult struct {
	Scrapes  int     `json:"scrapes"`
	Failures int     `json:"failures"`
	Error    string  `json:"error"`
	Bytes    int64   `json:"bytes_last"`
	P50      float64 `json:"p50_ms"`
	Max      float64 `json:"max_ms"`
}

// round holds what one path measured in one round.
type round struct {
	open       *loadResult
	sat        *loadResult
	cpuPerReq  float64
	backendCPU float64
	rssMB      float64
	anonMB     float64 // 0: not recorded
	proxyBusy  float64 // % of CPU 1 used by the proxy at saturation
	cpu1Busy   float64 // % of CPU 1 used by anything at saturation
	syscalls   float64 // system calls on CPU 1 per request at saturation; 0: not counted
	scrape     *scrapeResult
	failures   []string
}

var pathOrder = []string{"direct", "haproxy", "nginx", "kuma-dp", "kuma-dp-scrape", "kuma-dp-b", "mesh-plain", "mesh-mtls"}

// twoProxies are the paths that go through two proxies: the mesh hop.
var twoProxies = map[string]bool{"mesh-plain": true, "mesh-mtls": true}

// label is a path's name in the table: the mesh paths say they are two proxies.
func label(path string) string {
	if twoProxies[path] {
		return path + " (2× kuma-dp)"
	}
	return path
}

// tlsCounts are the handshakes counted on a mesh path.
type tlsCounts struct {
	client, server int64
	plainRefused   *bool
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: report RESULTS.jsonl")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	defer f.Close()
	if err := run(f, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

type key struct {
	proto, path string
	round       int
}

func run(in io.Reader, out io.Writer) error {
	rounds := map[key]*round{}
	startFailed := map[[2]string]string{}
	// tls by [proto, path, when].
	tls := map[[3]string]tlsCounts{}
	get := func(l line) *round {
		k := key{l.Proto, l.Path, l.Round}
		if rounds[k] == nil {
			rounds[k] = &round{}
		}
		return rounds[k]
	}
	var settings string
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		switch l.Kind {
		case "meta":
			settings = string(l.Settings)
		case "failed":
			startFailed[[2]string{l.Proto, l.Path}] = l.Reason
		case "tls":
			tls[[3]string{l.Proto, l.Path, l.When}] = tlsCounts{l.ClientHandshakes, l.ServerHandshakes, l.PlainRefused}
		case "openloop", "saturation":
			r := get(l)
			var lr loadResult
			if err := decodeResult(l, &lr); err != nil {
				r.failures = append(r.failures, fmt.Sprintf("%s: %v", l.Kind, err))
				continue
			}
			if l.Kind == "openloop" {
				r.open = &lr
				continue
			}
			r.sat = &lr
			if l.ClkTck > 0 && lr.RequestsTotal > 0 {
				r.cpuPerReq = l.CPU / l.ClkTck * 1e6 / float64(lr.RequestsTotal)
				r.backendCPU = l.Backend / l.ClkTck * 1e6 / float64(lr.RequestsTotal)
			}
			if l.Syscalls != nil && lr.RequestsTotal > 0 {
				r.syscalls = *l.Syscalls / float64(lr.RequestsTotal)
			}
			r.rssMB = l.RSSKB / 1024
			if l.AnonKB != nil {
				r.anonMB = *l.AnonKB / 1024
			}
			if l.CPU1All > 0 {
				r.proxyBusy = 100 * l.CPU / l.CPU1All
				r.cpu1Busy = 100 * l.CPU1Busy / l.CPU1All
			}
		case "scrape":
			r := get(l)
			var s scrapeResult
			if err := json.Unmarshal(l.Result, &s); err != nil || l.RC != 0 {
				r.failures = append(r.failures, fmt.Sprintf("scrape: %d of %d failed: %s", s.Failures, s.Scrapes, s.Error))
			}
			r.scrape = &s
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if settings != "" {
		fmt.Fprintf(out, "Settings: `%s`\n\n", settings)
	}
	for _, proto := range []string{"http", "tcp", "http2", "grpc"} {
		writeTable(out, proto, rounds, startFailed, tls)
	}
	return nil
}

func decodeResult(l line, lr *loadResult) error {
	if len(l.Result) == 0 || string(l.Result) == "null" {
		return fmt.Errorf("no result (exit status %d)", l.RC)
	}
	if err := json.Unmarshal(l.Result, lr); err != nil {
		return err
	}
	if lr.Errors > 0 || l.RC != 0 {
		return fmt.Errorf("%d errors (exit status %d): %s", lr.Errors, l.RC, lr.Error)
	}
	return nil
}

func writeTable(out io.Writer, proto string, rounds map[key]*round, startFailed map[[2]string]string, tls map[[3]string]tlsCounts) {
	maxRound := 0
	present := map[string]bool{}
	for k := range rounds {
		if k.proto == proto {
			present[k.path] = true
			maxRound = max(maxRound, k.round)
		}
	}
	for k := range startFailed {
		if k[0] == proto {
			present[k[1]] = true
		}
	}
	if len(present) == 0 {
		return
	}
	sat := "max req/s (wrk -t1 -c32)"
	title := "HTTP/1.1, 1 KiB body"
	switch proto {
	case "tcp":
		sat = "max req/s (loadgen, 32 conns)"
		title = "TCP echo, 1 KiB message"
	case "http2":
		sat = "max req/s (loadgen, 32 streams)"
		title = "HTTP/2 (h2c), 1 KiB body"
	case "grpc":
		sat = "max req/s (loadgen, 32 streams)"
		title = "gRPC unary (h2c), 1 KiB answer"
	}
	rate := 1000.0
	for k, r := range rounds {
		if k.proto == proto && r.open != nil && r.open.RateTarget > 0 {
			rate = r.open.RateTarget
		}
	}
	at := fmt.Sprintf("@%gk", rate/1000)
	if maxRound > 0 {
		title += fmt.Sprintf(" (median of %d round%s, min–max in brackets)", maxRound, plural(maxRound))
	}
	fmt.Fprintf(out, "### %s\n\n", title)
	fmt.Fprintf(out, "| path | p50 %s | added p50 | p99 %s | added p99 | %s | proxy CPU µs/req | proxy RSS MB |\n", at, at, sat)
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	var notes []string
	if proto == "http2" && present["nginx"] {
		notes = append(notes, "nginx: h2c from the client, HTTP/1.1 (keep-alive) to the backend: nginx 1.22 cannot speak HTTP/2 to an upstream; the other proxies speak h2c on both sides")
	}
	mesh := false
	// The medians of haproxy's row, against which kuma-dp's are compared,
	// and of kuma-dp's, against which kuma-dp-b's are.
	var hap, dp medians
	var sysNotes, anonNotes []string
	for _, path := range pathOrder {
		if !present[path] {
			continue
		}
		if twoProxies[path] {
			mesh = true
			if n := tlsNote(path, tls, proto); n != "" {
				notes = append(notes, n)
			}
		}
		if reason, ok := startFailed[[2]string{proto, path}]; ok {
			fmt.Fprintf(out, "| %s | FAILED | | | | | | |\n", label(path))
			notes = append(notes, fmt.Sprintf("%s did not run: %s", path, reason))
			continue
		}
		var p50, p99, add50, add99, rps, cpu, rss, anon, busy, cpu1, sys []float64
		failed := 0
		for i := 1; i <= maxRound; i++ {
			r := rounds[key{proto, path, i}]
			if r == nil {
				continue
			}
			for _, f := range r.failures {
				notes = append(notes, fmt.Sprintf("%s round %d: %s", path, i, f))
			}
			if len(r.failures) > 0 {
				failed++
			}
			if r.open != nil {
				p50, p99 = append(p50, r.open.P50), append(p99, r.open.P99)
				if d := rounds[key{proto, "direct", i}]; d != nil && d.open != nil {
					add50 = append(add50, r.open.P50-d.open.P50)
					add99 = append(add99, r.open.P99-d.open.P99)
				}
			}
			if r.sat != nil {
				rps = append(rps, r.sat.RateAchieved)
				cpu = append(cpu, r.cpuPerReq)
				busy, cpu1 = append(busy, r.proxyBusy), append(cpu1, r.cpu1Busy)
				rss = append(rss, r.rssMB)
				if r.anonMB > 0 {
					anon = append(anon, r.anonMB)
				}
				if r.syscalls > 0 {
					sys = append(sys, r.syscalls)
				}
			}
			if r.scrape != nil && len(r.failures) == 0 {
				notes = append(notes, fmt.Sprintf("%s round %d: %d scrapes during the run, all 200, last body %d bytes, scrape time p50 %.2f ms, max %.2f ms",
					path, i, r.scrape.Scrapes, r.scrape.Bytes, r.scrape.P50, r.scrape.Max))
			}
		}
		row := []string{label(path), summary(p50, "%.0f", " µs"), "—", summary(p99, "%.0f", " µs"), "—", summary(rps, "%.0f", ""), "—", "—"}
		if path != "direct" {
			row[2], row[4] = summary(add50, "%+.0f", " µs"), summary(add99, "%+.0f", " µs")
			row[6], row[7] = summary(cpu, "%.1f", ""), summary(rss, "%.1f", "")
			if len(cpu) > 0 {
				m := mediansOf(cpu, rps, sys)
				switch path {
				case "haproxy":
					hap = m
				case "kuma-dp", "kuma-dp-scrape", "kuma-dp-b":
					if hap.cpu > 0 && hap.rps > 0 {
						notes = append(notes, path+" against haproxy (medians): "+m.against(hap))
					}
				}
				switch {
				case path == "kuma-dp":
					dp = m
				case path == "kuma-dp-b" && dp.cpu > 0 && dp.rps > 0:
					notes = append(notes, "kuma-dp-b (BENCH_KUMA_DP_B) against kuma-dp in the same rounds (medians): "+m.against(dp))
				}
			}
			if len(sys) > 0 {
				sysNotes = append(sysNotes, fmt.Sprintf("%s %s", path, summary(sys, "%.2f", "")))
			}
			if len(anon) > 0 {
				anonNotes = append(anonNotes, fmt.Sprintf("%s %s", path, summary(anon, "%.1f", "")))
			}
			if len(busy) > 0 {
				note := fmt.Sprintf("%s used %s of CPU 1 at saturation; CPU 1 was %s busy in all",
					path, summary(busy, "%.0f", "%"), summary(cpu1, "%.0f", "%"))
				switch {
				case median(busy) >= 90:
				case median(cpu1) >= 90:
					note += ": other jobs took CPU 1 from the proxy, its max req/s is too low"
				default:
					note += ": CPU 1 was not saturated, the limit was elsewhere (likely CPU 0: load generator and backend), its max req/s is too low"
				}
				notes = append(notes, note)
			}
		} else if len(rps) > 0 {
			var b []float64
			for i := 1; i <= maxRound; i++ {
				if r := rounds[key{proto, path, i}]; r != nil && r.sat != nil {
					b = append(b, r.backendCPU)
				}
			}
			notes = append(notes, fmt.Sprintf("direct: the backend itself used %s µs of CPU per request at saturation (it shares CPU 0 with the load)", summary(b, "%.1f", "")))
		}
		if failed > 0 {
			row[0] = fmt.Sprintf("%s (%d of %d rounds failed)", label(path), failed, maxRound)
		}
		fmt.Fprintf(out, "| %s |\n", strings.Join(row, " | "))
	}
	if len(sysNotes) > 0 {
		notes = append(notes, "system calls made on CPU 1 per request at saturation (perf stat, raw_syscalls:sys_enter): "+strings.Join(sysNotes, ", "))
	}
	if len(anonNotes) > 0 {
		notes = append(notes, "of the RSS, private memory (RssAnon: heap, stacks, buffers) in MB: "+strings.Join(anonNotes, ", ")+
			"; the rest is file pages of the executable and its libraries, shared by every process that maps the same file")
	}
	if present["kuma-dp"] && present["kuma-dp-scrape"] {
		notes = append(notes, "kuma-dp and kuma-dp-scrape are one process: once its first kuma-dp-scrape run is over, "+
			"kuma-dp's RSS also holds what the scrapes touched (the metrics endpoint's code and buffers)")
	}
	if mesh {
		notes = append([]string{"mesh-* rows are a mesh hop through two proxies: load → client kuma-dp's outbound (127.0.0.1) → " +
			"server kuma-dp's inbound (its dataplane address) → backend, both kuma-dp on CPU 1. Their added latency is against direct " +
			"(no proxy), their CPU per request and RSS are both processes together; mesh-mtls − mesh-plain is the cost of mTLS."}, notes...)
	}
	fmt.Fprintln(out)
	for _, n := range notes {
		fmt.Fprintf(out, "- %s\n", n)
	}
	if len(notes) > 0 {
		fmt.Fprintln(out)
	}
}

// medians are a path's medians of CPU per request, max req/s and system
// calls per request (0: not counted).
type medians struct{ cpu, rps, sys float64 }

func mediansOf(cpu, rps, sys []float64) medians {
	m := medians{cpu: median(cpu), rps: median(rps)}
	if len(sys) > 0 {
		m.sys = median(sys)
	}
	return m
}

// against says m as multiples of ref.
func (m medians) against(ref medians) string {
	out := fmt.Sprintf("%.2f× its CPU per request, %.2f× its max req/s", m.cpu/ref.cpu, m.rps/ref.rps)
	if ref.sys > 0 && m.sys > 0 {
		out += fmt.Sprintf(", %.2f× its system calls per request", m.sys/ref.sys)
	}
	return out
}

// summary renders "median unit (min–max)" of v, or "—" when v is empty.
func summary(v []float64, verb, unit string) string {
	if len(v) == 0 {
		return "—"
	}
	out := fmt.Sprintf(verb, median(v)) + unit
	if len(v) > 1 {
		out += fmt.Sprintf(" ("+verb+"–"+verb+")", slices.Min(v), slices.Max(v))
	}
	return out
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// tlsNote says what a mesh path's proxies counted: TLS handshakes before the
// rounds (the check that the hop is what it claims) and by their end.
// Empty when none was recorded.
func tlsNote(path string, tls map[[3]string]tlsCounts, proto string) string {
	before, okBefore := tls[[3]string{proto, path, "before"}]
	after, okAfter := tls[[3]string{proto, path, "after"}]
	if !okBefore && !okAfter {
		return ""
	}
	count := func(n int64) string {
		if n < 0 {
			return "?"
		}
		return fmt.Sprint(n)
	}
	note := fmt.Sprintf("%s TLS handshakes (client towards the server / server inbound):", path)
	if okBefore {
		note += fmt.Sprintf(" %s / %s before the rounds", count(before.client), count(before.server))
	} else {
		note += " none recorded before the rounds"
	}
	if before.plainRefused != nil {
		if *before.plainRefused {
			note += ", plain text refused by the server's inbound"
		} else {
			note += ", plain text ACCEPTED by the server's inbound"
		}
	}
	if okAfter {
		note += fmt.Sprintf(", %s / %s by the end of the rounds", count(after.client), count(after.server))
	}
	return note
}
