// Command loadgen is the load generator of the proxy benchmarks.
//
// Open loop (-rate > 0): requests are scheduled at a constant rate by a
// timerfd and handed to N persistent connections; each latency is counted
// from the request's scheduled send time, so a stalled path is charged for
// every request it delayed (no coordinated omission). Closed loop (-rate 0):
// every connection sends back to back for -duration, for the maximum rate.
//
// Modes: -mode http (GET over HTTP/1.1 keep-alive, hand-written client that
// checks the status line and reads exactly Content-Length bytes) and -mode
// tcp (echo of a fixed-size message, checked byte for byte), and over HTTP/2
// with prior knowledge (h2c), -conns concurrent streams of which -streams
// share a connection: -mode h2c (GET; 200 with exactly -size body bytes) and
// -mode grpc (the unary call of bench/internal/benchgrpc; 200, grpc-status 0
// and one BytesValue of -size bytes; hand-written client on x/net/http2's
// framer, one reader goroutine per connection). Any error (a
// non-200, a short read, a closed connection) stops the run and makes the
// exit status 1. -scrape URL instead GETs URL at a fixed interval until
// -duration or SIGTERM and reports the scrapes.
//
//	loadgen -mode http -addr 127.0.0.1:18001 -rate 1000 -n 5000 -warmup 1s
//	loadgen -mode tcp -addr 127.0.0.1:18002 -rate 0 -conns 32 -duration 8s -json
//	loadgen -mode grpc -addr 127.0.0.1:18004 -rate 0 -conns 32 -streams 8 -duration 8s
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/kumametrics/mesh/bench/internal/benchgrpc"
)

type config struct {
	mode     string
	addr     string
	conns    int
	streams  int
	rate     float64
	n        int
	warmup   time.Duration
	duration time.Duration
	size     int
	path     string
	host     string
	timeout  time.Duration
	probe    bool
	jsonOut  bool
	scrape   string
	every    time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.mode, "mode", "http", "http, tcp, h2c (HTTP/2 GET with prior knowledge) or grpc (unary "+benchgrpc.Path+")")
	flag.StringVar(&c.addr, "addr", "127.0.0.1:18001", "target host:port")
	flag.IntVar(&c.conns, "conns", 16, "persistent connections (h2c, grpc: concurrent streams, -streams per connection)")
	flag.IntVar(&c.streams, "streams", 4, "h2c, grpc: concurrent streams per connection")
	flag.Float64Var(&c.rate, "rate", 1000, "requests per second, scheduled open loop; 0 = closed loop at the maximum rate")
	flag.IntVar(&c.n, "n", 5000, "measured requests (open loop; -duration alone sets it to rate × duration)")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "warm-up before measuring, excluded from the results")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured time (closed loop, scrape)")
	flag.IntVar(&c.size, "size", 1024, "echo message size in bytes (tcp); expected response body (h2c) or BytesValue (grpc) size")
	flag.StringVar(&c.path, "path", "/", "request path (http, h2c; grpc: / means "+benchgrpc.Path+")")
	flag.StringVar(&c.host, "host", "bench", "Host header (http), :authority (h2c, grpc)")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "extra time allowed after the planned end before the run fails")
	flag.BoolVar(&c.probe, "probe", false, "send one request on one connection and exit 0 if it succeeded")
	flag.BoolVar(&c.jsonOut, "json", false, "print the result as one JSON object")
	flag.StringVar(&c.scrape, "scrape", "", "scrape this URL every -every until -duration or SIGTERM")
	flag.DurationVar(&c.every, "every", time.Second, "scrape interval")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.rate > 0 && set["duration"] && !set["n"] {
		c.n = int(c.rate * c.duration.Seconds()) // open loop for a duration
	}

	if c.scrape != "" {
		os.Exit(report(c, runScrape(c.scrape, c.every, c.duration, c.timeout)))
	}
	if err := c.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if c.probe {
		if err := probe(c); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: probe:", err)
			os.Exit(1)
		}
		return
	}
	var r *result
	if c.rate > 0 {
		r = runOpenLoop(c)
	} else {
		r = runClosedLoop(c)
	}
	os.Exit(report(c, r))
}

func (c *config) validate() error {
	switch {
	case c.mode != "http" && c.mode != "tcp" && c.mode != "h2c" && c.mode != "grpc":
		return fmt.Errorf("-mode must be http, tcp, h2c or grpc, not %q", c.mode)
	case c.conns < 1:
		return errors.New("-conns must be at least 1")
	case (c.mode == "h2c" || c.mode == "grpc") && (c.streams < 1 || c.streams > 100):
		return errors.New("-streams must be in 1..100 (the fewest concurrent streams a server must allow)")
	case (c.mode == "h2c" || c.mode == "grpc") && (c.size < 0 || c.size > 1<<20):
		return errors.New("-size must be in 0..1048576")
	case c.rate < 0 || c.rate > 1e6:
		return errors.New("-rate must be in 0..1000000")
	case c.rate > 0 && c.n < 1:
		return errors.New("-n must be at least 1")
	case c.rate == 0 && c.duration <= 0:
		return errors.New("-duration must be positive")
	case c.mode == "tcp" && (c.size < 1 || c.size > 1<<20):
		return errors.New("-size must be in 1..1048576")
	}
	return nil
}

// reporter is a run's result.
type reporter interface {
	text() string
	failed() bool
}

// report prints r, as text or JSON, and returns the exit status.
func report(c config, r reporter) int {
	if c.jsonOut {
		b, err := json.Marshal(r)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			return 1
		}
		fmt.Println(string(b))
	} else {
		fmt.Print(r.text())
	}
	if r.failed() {
		return 1
	}
	return 0
}
