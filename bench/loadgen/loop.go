package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is what one run reports. Latencies are in microseconds.
type result struct {
	Mode       string  `json:"mode"`
	Addr       string  `json:"addr"`
	Loop       string  `json:"loop"` // "open" or "closed"
	Conns      int     `json:"conns"`
	RateTarget float64 `json:"rate_target,omitempty"`
	// RateAchieved is the measured requests over the measured window.
	RateAchieved float64 `json:"rate_achieved"`
	// Requests were measured; RequestsTotal also counts the warm-up and
	// the requests that straddled the window's edges.
	Requests      int     `json:"requests"`
	RequestsTotal int     `json:"requests_total"`
	DurationS     float64 `json:"duration_s"`
	Errors        int     `json:"errors"`
	Error         string  `json:"error,omitempty"`
	P50           float64 `json:"p50_us"`
	P90           float64 `json:"p90_us"`
	P99           float64 `json:"p99_us"`
	P999          float64 `json:"p999_us"`
	Max           float64 `json:"max_us"`
	Mean          float64 `json:"mean_us"`
	// SendLag is how late requests left after their scheduled time (open
	// loop): the generator's own scheduling error plus queueing when every
	// connection was busy.
	SendLagP50 float64 `json:"send_lag_p50_us,omitempty"`
	SendLagP99 float64 `json:"send_lag_p99_us,omitempty"`
	// CPUPerReq is the generator's own CPU time per request.
	CPUPerReq float64 `json:"loadgen_cpu_us_per_req"`
}

func (r *result) failed() bool { return r.Errors > 0 }

func (r *result) text() string {
	var b strings.Builder
	if r.Loop == "open" {
		fmt.Fprintf(&b, "%s %s: open loop at %.0f req/s over %d connections\n", r.Mode, r.Addr, r.RateTarget, r.Conns)
	} else {
		fmt.Fprintf(&b, "%s %s: closed loop over %d connections\n", r.Mode, r.Addr, r.Conns)
	}
	fmt.Fprintf(&b, "  %d requests in %.2fs = %.1f req/s, %d errors", r.Requests, r.DurationS, r.RateAchieved, r.Errors)
	if r.Error != "" {
		fmt.Fprintf(&b, " (first: %s)", r.Error)
	}
	fmt.Fprintf(&b, "\n  latency µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f\n",
		r.P50, r.P90, r.P99, r.P999, r.Max, r.Mean)
	if r.Loop == "open" {
		fmt.Fprintf(&b, "  send lag µs: p50 %.0f  p99 %.0f\n", r.SendLagP50, r.SendLagP99)
	}
	fmt.Fprintf(&b, "  generator CPU: %.1f µs/request\n", r.CPUPerReq)
	return b.String()
}

// failure keeps the first error of a run and tells everyone to stop.
type failure struct {
	stopped atomic.Bool
	mu      sync.Mutex
	count   int
	first   error
}

func (f *failure) record(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first == nil {
		f.first = err
	}
	f.count++
	f.stopped.Store(true)
}

func (f *failure) apply(r *result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Errors = f.count
	if f.first != nil {
		r.Error = f.first.Error()
	}
}

// dialAll opens c.conns request slots: in modes http and tcp one connection
// each; in modes h2c and grpc one stream each, c.streams of them sharing a
// connection.
func dialAll(c config, deadline time.Time) ([]roundTripper, error) {
	conns := make([]roundTripper, 0, c.conns)
	for len(conns) < c.conns {
		rts, err := dialSlots(c, deadline, max(1, min(c.streams, c.conns-len(conns))))
		if err != nil {
			for _, rt := range conns {
				rt.close()
			}
			return nil, fmt.Errorf("connect %s: %w", c.addr, err)
		}
		conns = append(conns, rts...)
	}
	return conns, nil
}

// runOpenLoop schedules requests k = 0, 1, ... at start + k*period. A
// worker per connection takes the next due request; when every connection is
// busy the request waits in the queue, and that wait is part of its latency.
func runOpenLoop(c config) *result {
	r := &result{Mode: c.mode, Addr: c.addr, Loop: "open", Conns: c.conns}
	period := time.Duration(float64(time.Second) / c.rate)
	r.RateTarget = float64(time.Second) / float64(period)
	warm := int(c.warmup / period)
	total := warm + c.n
	deadline := time.Now().Add(time.Duration(total)*period + c.timeout)
	conns, err := dialAll(c, deadline)
	if err != nil {
		r.Errors, r.Error = 1, err.Error()
		return r
	}
	defer func() {
		for _, rt := range conns {
			rt.close()
		}
	}()

	lat := make([]int64, c.n)
	lag := make([]int64, c.n)
	jobs := make(chan int64, total)
	lastDone := make([]int64, len(conns))
	var fail failure
	clk := newClock()
	start := clk.now() + int64(20*time.Millisecond)
	tk, err := newTicker(clk, start, period)
	if err != nil {
		r.Errors, r.Error = 1, err.Error()
		return r
	}
	defer tk.stop()
	cpu0 := cpuTime()

	var wg sync.WaitGroup
	for i, rt := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				if fail.stopped.Load() {
					return
				}
				sched := start + k*int64(period)
				sent := clk.now()
				if err := rt.roundTrip(); err != nil {
					fail.record(err)
					return
				}
				done := clk.now()
				lastDone[i] = done
				if m := int(k) - warm; m >= 0 {
					lat[m] = done - sched
					lag[m] = sent - sched
				}
			}
		}()
	}
	for k := 0; k < total && !fail.stopped.Load(); {
		n, err := tk.wait()
		if err != nil {
			fail.record(fmt.Errorf("timer: %w", err))
			break
		}
		for ; n > 0 && k < total; n-- {
			jobs <- int64(k)
			k++
		}
	}
	close(jobs)
	wg.Wait()
	cpu := cpuTime() - cpu0

	fail.apply(r)
	if r.Errors > 0 {
		return r
	}
	r.Requests, r.RequestsTotal = c.n, total
	window := slices.Max(lastDone) - (start + int64(warm)*int64(period))
	r.DurationS = float64(window) / 1e9
	r.RateAchieved = float64(c.n) / r.DurationS
	r.CPUPerReq = float64(cpu.Microseconds()) / float64(total)
	fillLatency(r, lat)
	slices.Sort(lag)
	r.SendLagP50, r.SendLagP99 = us(quantile(lag, 0.5)), us(quantile(lag, 0.99))
	return r
}

// runClosedLoop has every connection send back to back. Requests that lie
// wholly inside [warm-up end, warm-up end + duration] are measured.
func runClosedLoop(c config) *result {
	r := &result{Mode: c.mode, Addr: c.addr, Loop: "closed", Conns: c.conns}
	deadline := time.Now().Add(c.warmup + c.duration + c.timeout)
	conns, err := dialAll(c, deadline)
	if err != nil {
		r.Errors, r.Error = 1, err.Error()
		return r
	}
	defer func() {
		for _, rt := range conns {
			rt.close()
		}
	}()

	var fail failure
	clk := newClock()
	from := clk.now() + int64(c.warmup)
	to := from + int64(c.duration)
	lats := make([][]int64, len(conns))
	counts := make([]int, len(conns))
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	for i, rt := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]int64, 0, 1<<16)
			for !fail.stopped.Load() {
				sent := clk.now()
				if sent >= to {
					break
				}
				if err := rt.roundTrip(); err != nil {
					fail.record(err)
					break
				}
				done := clk.now()
				counts[i]++
				if sent >= from && done <= to {
					mine = append(mine, done-sent)
				}
			}
			lats[i] = mine
		}()
	}
	wg.Wait()
	cpu := cpuTime() - cpu0

	fail.apply(r)
	if r.Errors > 0 {
		return r
	}
	all := slices.Concat(lats...)
	for _, n := range counts {
		r.RequestsTotal += n
	}
	r.Requests = len(all)
	r.DurationS = c.duration.Seconds()
	r.RateAchieved = float64(r.Requests) / r.DurationS
	r.CPUPerReq = float64(cpu.Microseconds()) / float64(max(r.RequestsTotal, 1))
	fillLatency(r, all)
	return r
}

func fillLatency(r *result, lat []int64) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	var sum int64
	for _, v := range lat {
		sum += v
	}
	r.P50, r.P90, r.P99 = us(quantile(lat, 0.5)), us(quantile(lat, 0.9)), us(quantile(lat, 0.99))
	r.P999, r.Max = us(quantile(lat, 0.999)), us(lat[len(lat)-1])
	r.Mean = us(sum / int64(len(lat)))
}

// quantile is the nearest-rank quantile of sorted values.
func quantile(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func us(ns int64) float64 { return float64(ns/100) / 10 }
