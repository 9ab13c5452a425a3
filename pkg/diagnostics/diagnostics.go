// Package diagnostics serves the control plane's health and metrics
// endpoints: /healthy (the process runs), /ready (its store answers) and
// /metrics (the Prometheus registry), and on request Go's profiler under
// /debug/pprof/.
package diagnostics

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Pinger reports whether a dependency can serve requests.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Handler returns the diagnostics endpoints; debug adds Go's profiler
// (/debug/pprof/: the index, cmdline, profile, symbol, trace and the named
// profiles such as heap and goroutine).
func Handler(ready Pinger, gatherer prometheus.Gatherer, debug bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthy", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("OK\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready.Ping(ctx); err != nil {
			http.Error(w, "store not reachable: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("OK\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	if debug {
		// pprof.Index serves the named profiles (heap, goroutine, …) too.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
