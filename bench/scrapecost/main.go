// Command scrapecost measures what scraping kuma-dp's metrics endpoint every
// second costs its data path, with a store of many series.
//
// A real kuma-cp configures one kuma-dp (alone on CPU 1) with an HTTP (or
// TCP) inbound in front of the benchmark backend and -clusters outbounds
// (each cluster's statistics are series of the endpoint). The load
// (bench/loadgen) and the backend run on CPU 0 with this command. The run
// alternates windows of the same load without and with a scrape every
// second (as Prometheus does: Accept-Encoding gzip), -pairs times, and
// compares, pair by pair:
//
//   - at a fixed rate (-rate, default 10000 req/s): the proxy's CPU per
//     second. The difference is what the scrapes take from the proxy's
//     core, i.e. the share of its maximum rate they cost.
//
//   - saturated (-saturate): requests per second of the window.
//
//     go run ./bench/scrapecost -clusters 250
package main

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
	"github.com/kumametrics/mesh/internal/loopback"
)

type settings struct {
	bin, proto        string
	clusters, pairs   int
	rate              int
	window            time.Duration
	saturate          bool
	conns             int
	proxyCPU, loadCPU int
}

func main() {
	var s settings
	flag.StringVar(&s.bin, "bin", "bin", "directory with kuma-cp and kuma-dp (make build)")
	flag.StringVar(&s.proto, "proto", "http", "http or tcp")
	flag.IntVar(&s.clusters, "clusters", 70, "outbounds of the proxy (one cluster each, ~140 series each: 70 make ~10k)")
	flag.IntVar(&s.pairs, "pairs", 6, "window pairs (without, with scrapes)")
	flag.IntVar(&s.rate, "rate", 10000, "fixed request rate of the CPU comparison (req/s)")
	flag.DurationVar(&s.window, "window", 5*time.Second, "length of a window")
	flag.BoolVar(&s.saturate, "saturate", false, "also compare saturated windows (requests per second)")
	flag.IntVar(&s.conns, "conns", 32, "connections of the load")
	flag.IntVar(&s.proxyCPU, "proxy-cpu", 1, "CPU of the proxy")
	flag.IntVar(&s.loadCPU, "load-cpu", 0, "CPU of this command, the load and the backend")
	flag.Parse()
	if s.proto != "http" && s.proto != "tcp" {
		fmt.Fprintln(os.Stderr, "bench/scrapecost: -proto must be http or tcp")
		os.Exit(2)
	}
	if err := run(s); err != nil {
		fmt.Fprintln(os.Stderr, "bench/scrapecost:", err)
		os.Exit(1)
	}
}

func run(s settings) error {
	var cpu unix.CPUSet
	cpu.Set(s.loadCPU)
	if err := unix.SchedSetaffinity(0, &cpu); err != nil {
		return fmt.Errorf("pinning to CPU %d: %w", s.loadCPU, err)
	}
	dir, err := os.MkdirTemp("", "bench-scrapecost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+"/", "./bench/backend", "./bench/loadgen")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the backend and loadgen: %w", err)
	}

	backendHost := loopback.Host()
	backendAddr := net.JoinHostPort(backendHost, map[string]string{"http": "18001", "tcp": "18002"}[s.proto])
	backend := exec.Command(filepath.Join(dir, "backend"), "-http", net.JoinHostPort(backendHost, "18001"), "-tcp", net.JoinHostPort(backendHost, "18002"))
	backend.Stderr = os.Stderr
	if err := backend.Start(); err != nil {
		return err
	}
	defer func() { _ = backend.Process.Kill(); _ = backend.Wait() }()

	cp, err := cpproc.Start(filepath.Join(s.bin, "kuma-cp"), dir, "KUMA_STORE_TYPE=memory", "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none")
	if err != nil {
		return err
	}
	defer cp.Stop()
	outbounds, err := cp.MeshWithServices(s.clusters)
	if err != nil {
		return err
	}

	// The proxy: one inbound in front of the backend, the outbounds.
	dpAddr, adminHost := loopback.Host(), loopback.Host()
	_, backendPort, _ := net.SplitHostPort(backendAddr)
	yaml := fmt.Sprintf("type: Dataplane\nmesh: default\nname: bench\nnetworking:\n  address: %s\n  inbound:\n  - port: 8080\n    servicePort: %s\n    serviceAddress: %s\n    tags:\n      kuma.io/service: bench\n      kuma.io/protocol: %s\n",
		dpAddr, backendPort, backendHost, s.proto)
	if s.clusters > 0 {
		yaml += "  outbound:\n" + strings.Join(outbounds, "")
	}
	file := filepath.Join(dir, "bench.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return err
	}
	dp := exec.Command("taskset", "-c", strconv.Itoa(s.proxyCPU), filepath.Join(s.bin, "kuma-dp"), "run", "--log-level=warn",
		"--cp-address", cp.DPServer, "--ca-cert-file", cp.CAFile(),
		"--dataplane-file", file, "--admin-address", adminHost, "--admin-port", "9901")
	dp.Stderr = os.Stderr
	if err := dp.Start(); err != nil {
		return err
	}
	defer func() { _ = dp.Process.Kill(); _ = dp.Wait() }()
	metrics := "http://" + net.JoinHostPort(dpAddr, "5670") + "/metrics"
	target := net.JoinHostPort(dpAddr, "8080")
	if err := cpproc.WaitFor(60*time.Second, func() bool {
		_, n, err := scrape(metrics)
		return err == nil && n > 0 && reachable(target)
	}); err != nil {
		return fmt.Errorf("the proxy never served its inbound and metrics: %w", err)
	}
	body, series, err := scrape(metrics)
	if err != nil {
		return err
	}
	load := func(rate int) (loadResult, error) {
		return runLoad(filepath.Join(dir, "loadgen"), s.proto, target, rate, s.conns, s.window)
	}
	// Warm up (connections, pools, the proxy's first config settles).
	if _, err := load(s.rate); err != nil {
		return err
	}
	fmt.Printf("kuma-dp: %d clusters, %d series, one scrape %d bytes gzipped; proxy on CPU %d, load on CPU %d\n",
		s.clusters, series, body, s.proxyCPU, s.loadCPU)

	type arm struct{ cpu, rps, scrapeMs []float64 }
	var fixed, sat [2]arm // [0] without scrapes, [1] with
	for p := range s.pairs {
		for withScrapes := range 2 {
			for _, saturated := range []bool{false, true} {
				if saturated && !s.saturate {
					continue
				}
				rate := s.rate
				if saturated {
					rate = 0
				}
				stop := make(chan struct{})
				took := make(chan []float64, 1)
				if withScrapes == 1 {
					go func() { took <- scrapeEvery(metrics, time.Second, stop) }()
				} else {
					close(took)
				}
				c0, t0 := procCPU(dp.Process.Pid), time.Now()
				res, err := load(rate)
				c1, wall := procCPU(dp.Process.Pid), time.Since(t0)
				close(stop)
				scrapes := <-took
				if err != nil {
					return fmt.Errorf("pair %d: %w", p+1, err)
				}
				a := &fixed[withScrapes]
				if saturated {
					a = &sat[withScrapes]
				}
				a.cpu = append(a.cpu, (c1-c0).Seconds()*1000/wall.Seconds()) // proxy CPU ms per second of the window
				a.rps = append(a.rps, res.RateAchieved)
				a.scrapeMs = append(a.scrapeMs, scrapes...)
			}
		}
	}
	report := func(name string, a [2]arm) {
		var cpuDelta, rpsRatio []float64
		for i := range a[0].cpu {
			cpuDelta = append(cpuDelta, a[1].cpu[i]-a[0].cpu[i])
			rpsRatio = append(rpsRatio, a[1].rps[i]/a[0].rps[i])
		}
		fmt.Printf("%s: proxy CPU %.1f ms/s without scrapes, %.1f with (pairs' median difference %+.1f ms/s = %.2f%% of a core); req/s %.0f without, %.0f with (median ratio %.3f); scrape p50 %.1f ms\n",
			name, median(a[0].cpu), median(a[1].cpu), median(cpuDelta), median(cpuDelta)/10, median(a[0].rps), median(a[1].rps), median(rpsRatio), median(a[1].scrapeMs))
	}
	report(fmt.Sprintf("%s at %d req/s", s.proto, s.rate), fixed)
	if s.saturate {
		report(s.proto+" saturated", sat)
	}
	return nil
}

type loadResult struct {
	RateAchieved float64 `json:"rate_achieved"`
	DurationS    float64 `json:"duration_s"`
	Errors       int     `json:"errors"`
	Error        string  `json:"error"`
}

// runLoad runs bench/loadgen for one window: open loop at rate, or closed
// loop (rate 0).
func runLoad(loadgen, proto, addr string, rate, conns int, window time.Duration) (loadResult, error) {
	args := []string{"-mode", proto, "-addr", addr, "-conns", strconv.Itoa(conns), "-json", "-rate", strconv.Itoa(rate)}
	if rate > 0 {
		args = append(args, "-n", strconv.Itoa(int(float64(rate)*window.Seconds())), "-warmup", "0s")
	} else {
		args = append(args, "-duration", window.String())
	}
	out, err := exec.Command(loadgen, args...).Output()
	var r loadResult
	if jerr := json.Unmarshal(bytes.TrimSpace(out), &r); jerr != nil {
		return r, fmt.Errorf("loadgen %s: %v (output %q)", strings.Join(args, " "), cmp.Or(err, jerr), out)
	}
	if err != nil || r.Errors > 0 || r.DurationS <= 0 {
		return r, fmt.Errorf("loadgen %s: %v, %d errors: %s", strings.Join(args, " "), err, r.Errors, r.Error)
	}
	return r, nil
}

// scrapeEvery scrapes url every interval until stop, and returns each
// scrape's time in ms.
func scrapeEvery(url string, every time.Duration, stop chan struct{}) []float64 {
	var took []float64
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		t0 := time.Now()
		if _, _, err := scrape(url); err != nil {
			fmt.Fprintln(os.Stderr, "scrape:", err)
		}
		took = append(took, float64(time.Since(t0).Microseconds())/1000)
		select {
		case <-stop:
			return took
		case <-tick.C:
		}
	}
}

var scraper = &http.Client{Timeout: 10 * time.Second}

// scrape GETs the metrics as Prometheus does and returns the compressed
// size and the number of series.
func scrape(url string) (int, int, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	res, err := scraper.Do(req) // Accept-Encoding set by hand: the body stays compressed
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s: %s", url, res.Status)
	}
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, 0, err
	}
	text := raw
	if res.Header.Get("Content-Encoding") == "gzip" {
		if text, err = gunzip(raw); err != nil {
			return 0, 0, err
		}
	}
	series := 0
	for line := range bytes.Lines(text) {
		if len(line) > 1 && line[0] != '#' {
			series++
		}
	}
	return len(raw), series, nil
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// procCPU is the CPU time the process's threads ran so far, from each
// thread's schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks).
func procCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
