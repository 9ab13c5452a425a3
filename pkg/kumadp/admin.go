package kumadp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/stats"
)

// adminServer is the admin API on 127.0.0.1, as Envoy's: /stats (Envoy
// text, or ?format=prometheus), /stats/prometheus, /ready, /config_dump.
type adminServer struct {
	a      *Agent
	srv    *http.Server
	ln     atomic.Pointer[net.Listener]
	stats  *stats.ListenerStats
	panics *netserve.Panics
}

// adminListener names the admin API in logs and statistics.
const adminListener = "kuma:admin"

func newAdminServer(a *Agent) *adminServer {
	st := stats.NewListenerStats(a.stats, adminListener)
	s := &adminServer{a: a, stats: st, panics: &netserve.Panics{Name: adminListener, Log: a.log, Count: st.ConnectionPanics}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", s.handleStats)
	mux.HandleFunc("GET /stats/prometheus", func(w http.ResponseWriter, r *http.Request) {
		s.writeStats(w, r, stats.FormatPrometheus)
	})
	mux.HandleFunc("GET /ready", s.handleReady)
	mux.HandleFunc("GET /config_dump", s.handleConfigDump)
	s.srv = netserve.HTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer s.panics.RecoverHTTP()
		mux.ServeHTTP(w, r)
	}), netserve.DefaultHTTPLimits, a.log)
	return s
}

func (s *adminServer) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin API: listen on %s: %w", addr, err)
	}
	wrapped := netserve.Listen(ln, netserve.AcceptOptions{Name: adminListener, Log: s.a.log, Errors: s.stats.AcceptErrors})
	s.ln.Store(&wrapped)
	go func() {
		if err := s.srv.Serve(wrapped); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.a.log.Error("the admin API stopped accepting connections", "address", addr, "err", err)
		}
	}()
	return nil
}

// addr is where the admin API listens ("" before start).
func (s *adminServer) addr() string {
	ln := s.ln.Load()
	if ln == nil {
		return ""
	}
	return (*ln).Addr().String()
}

func (s *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

func (s *adminServer) handleStats(w http.ResponseWriter, r *http.Request) {
	switch f := r.URL.Query().Get("format"); f {
	case "", "text":
		s.writeStats(w, r, stats.FormatEnvoy)
	case "prometheus":
		s.writeStats(w, r, stats.FormatPrometheus)
	default:
		http.Error(w, fmt.Sprintf("format: %q is not supported (text or prometheus)", f), http.StatusBadRequest)
	}
}

// writeStats renders the statistics with Envoy's query parameters: filter
// (a regular expression on the dotted name) and usedonly.
func (s *adminServer) writeStats(w http.ResponseWriter, r *http.Request, format stats.Format) {
	var opts stats.RenderOptions
	q := r.URL.Query()
	if f := q.Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			http.Error(w, "filter: invalid regular expression: "+err.Error(), http.StatusBadRequest)
			return
		}
		opts.Filter = re
	}
	_, opts.UsedOnly = q["usedonly"]
	w.Header().Set("Content-Type", format.ContentType())
	_ = s.a.stats.Write(w, format, opts)
}

func (s *adminServer) handleReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.a.draining.Load():
		http.Error(w, "DRAINING", http.StatusServiceUnavailable)
	case !s.a.ready.Load():
		http.Error(w, "PRE_INITIALIZING", http.StatusServiceUnavailable)
	default:
		if err := s.a.notAccepting(); err != nil {
			http.Error(w, "NOT_ACCEPTING: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("LIVE\n"))
	}
}

func (s *adminServer) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	cfg, version := s.a.Current()
	if cfg == nil {
		http.Error(w, "no config received yet", http.StatusServiceUnavailable)
		return
	}
	body, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(cfg)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, "{\n\"version_info\": %q,\n\"config\": %s\n}\n", version, body)
}
