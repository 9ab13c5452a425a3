// Package demoapp is the demo's workload: a backend that fails a
// configurable share of requests, a frontend that calls the backend through
// its proxy, and a bounded traffic generator. Each serves its own Prometheus
// metrics on /metrics, to show application metrics merged into the proxy's.
package demoapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kumametrics/mesh/pkg/netserve"
)

// BackendOptions configure a backend.
type BackendOptions struct {
	Name string
	// ErrorRate is the share of requests answered 500, from 0 to 1.
	ErrorRate float64
	// Latency is the mean added latency (uniform between 0 and 2×).
	Latency time.Duration
}

// appMetrics is an application's own request counter and latency histogram.
type appMetrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
}

func newAppMetrics(app string) *appMetrics {
	m := &appMetrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "demo_" + app + "_requests_total", Help: "Requests served, by status code.",
		}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demo_" + app + "_request_duration_seconds", Help: "Time to serve a request.",
			Buckets: prometheus.DefBuckets,
		}),
	}
	m.reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *appMetrics) observe(code int, began time.Time) {
	m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	m.latency.Observe(time.Since(began).Seconds())
}

// Backend returns the backend's handler: / answers 200 or, for ErrorRate of
// the requests, 500; /metrics serves its metrics.
func Backend(o BackendOptions) (http.Handler, error) {
	if o.ErrorRate < 0 || o.ErrorRate > 1 {
		return nil, fmt.Errorf("--error-rate: must be between 0 and 1, got %g", o.ErrorRate)
	}
	if o.Latency < 0 {
		return nil, fmt.Errorf("--latency: must not be negative, got %s", o.Latency)
	}
	m := newAppMetrics("backend")
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		if o.Latency > 0 {
			time.Sleep(time.Duration(rand.Int64N(int64(2 * o.Latency))))
		}
		code := http.StatusOK
		if rand.Float64() < o.ErrorRate {
			code = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		if code == http.StatusOK {
			fmt.Fprintf(w, "hello from %s\n", o.Name)
		} else {
			fmt.Fprintf(w, "%s failed (injected)\n", o.Name)
		}
		m.observe(code, began)
	})
	return mux, nil
}

// Frontend returns the frontend's handler: / calls backendURL and answers
// 200 with its body, or 502 when the backend failed; /metrics serves its
// metrics.
func Frontend(backendURL string) http.Handler {
	m := newAppMetrics("frontend")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		code, body := http.StatusBadGateway, "backend unreachable\n"
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, backendURL, nil)
		if err == nil {
			var res *http.Response
			if res, err = client.Do(req); err == nil {
				b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
				res.Body.Close()
				body = "frontend -> " + string(b)
				if res.StatusCode == http.StatusOK {
					code = http.StatusOK
				}
			}
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
		m.observe(code, began)
	})
	return mux
}

// Serve serves h on addr until ctx is done.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := netserve.HTTPServer(h, netserve.DefaultHTTPLimits, log)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", "address", ln.Addr().String())
	if err := srv.Serve(netserve.Listen(ln, netserve.AcceptOptions{Name: addr, Log: log})); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// TrafficOptions configure the traffic generator.
type TrafficOptions struct {
	Target string
	// Rate in requests per second; Requests (0: no limit) and Duration (0:
	// no limit) bound the run.
	Rate     float64
	Requests int
	Duration time.Duration
	// Report is how often a summary is logged.
	Report time.Duration
}

// Result counts what the generator got.
type Result struct {
	Sent, OK, Failed, Errors int64
}

// Traffic sends GET requests to Target at Rate until a bound is reached or
// ctx is done. At most 64 requests are in flight; when the target is slower
// than that, sends are skipped rather than queued.
func Traffic(ctx context.Context, o TrafficOptions, log *slog.Logger) (Result, error) {
	if o.Rate <= 0 {
		return Result{}, fmt.Errorf("--rate: must be positive, got %g", o.Rate)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	if o.Report <= 0 {
		o.Report = 10 * time.Second
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	var sent, ok, failed, errs atomic.Int64
	slots := make(chan struct{}, 64)
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
	defer tick.Stop()
	report := time.NewTicker(o.Report)
	defer report.Stop()
	done := func() Result {
		for range cap(slots) {
			slots <- struct{}{}
		}
		return Result{Sent: sent.Load(), OK: ok.Load(), Failed: failed.Load(), Errors: errs.Load()}
	}
	for {
		select {
		case <-ctx.Done():
			return done(), nil
		case <-report.C:
			log.Info("traffic", "sent", sent.Load(), "ok", ok.Load(), "failed", failed.Load(), "errors", errs.Load())
		case <-tick.C:
			if o.Requests > 0 && sent.Load() >= int64(o.Requests) {
				return done(), nil
			}
			select {
			case slots <- struct{}{}:
			default:
				continue
			}
			sent.Add(1)
			go func() {
				defer func() { <-slots }()
				req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, o.Target, nil)
				if err != nil {
					errs.Add(1)
					return
				}
				res, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}()
		}
	}
}

// ServeTCPEcho listens on addr and sends back what every connection sends
// (the guide's kuma-tcp-echo workload) until ctx ends.
func ServeTCPEcho(ctx context.Context, addr string, log *slog.Logger) error {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	ln := netserve.Listen(raw, netserve.AcceptOptions{Name: addr, Log: log})
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	log.Info("listening", "address", raw.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", addr, err)
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}
