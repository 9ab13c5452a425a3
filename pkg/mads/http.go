package mads

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kumametrics/mesh/pkg/resource"
)

// HTTP paths of the server.
const (
	// FetchPath is where Prometheus' kuma_sd_configs long-polls.
	FetchPath = "/v3/discovery:monitoringassignments"
	// HTTPSDPath serves Prometheus http_sd_configs.
	HTTPSDPath = FetchPath + "/http_sd"
)

// maxRequestBody bounds a discovery request's body.
const maxRequestBody = 1 << 20

var unmarshalRequest = protojson.UnmarshalOptions{DiscardUnknown: true}

func (s *Server) httpHandler(reg prometheus.Registerer) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc(FetchPath, s.handleFetch)
	mux.HandleFunc(HTTPSDPath, s.handleHTTPSD)
	var h http.Handler = mux
	if reg != nil {
		dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mads_server_http_request_duration_seconds",
			Help:    "Duration of MADS HTTP requests (long polls last until a change or their fetch-timeout).",
			Buckets: []float64{0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300},
		}, []string{"handler", "code", "method"})
		held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mads_server_long_polls_held",
			Help: "HTTP discovery requests waiting for a change of the assignments.",
		}, func() float64 { return float64(s.held.Load()) })
		rejected := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mads_server_long_polls_rejected_total",
			Help: "HTTP discovery requests answered 503 because the server held its maximum of long polls.",
		}, func() float64 { return float64(s.rejected.Load()) })
		for _, c := range []prometheus.Collector{dur, held, rejected} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("mads metrics: %w", err)
			}
		}
		mux = http.NewServeMux()
		mux.Handle(FetchPath, promhttp.InstrumentHandlerDuration(dur.MustCurryWith(prometheus.Labels{"handler": "fetch"}), http.HandlerFunc(s.handleFetch)))
		mux.Handle(HTTPSDPath, promhttp.InstrumentHandlerDuration(dur.MustCurryWith(prometheus.Labels{"handler": "http_sd"}), http.HandlerFunc(s.handleHTTPSD)))
		h = mux
	}
	return s.grpcHandler(s.authenticate(h)), nil
}

type errorBody struct {
	Title   string `json:"title"`
	Details string `json:"details"`
}

func writeError(w http.ResponseWriter, status int, title, details string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Title: title, Details: details})
}

// retryAfter is what a long poll refused for lack of room is told to wait
// (seconds): a held poll ends at a change of the assignments or its
// fetch-timeout, so room comes back within one.
const retryAfter = "10"

// handleFetch answers POST /v3/discovery:monitoringassignments: at once when
// the client's version_info differs from the current version, otherwise when
// the assignments change or fetch-timeout passes (304 Not Modified), held at
// most MaxFetchTimeout. Beyond MaxHeldLongPolls held at once it answers 503
// with Retry-After.
func (s *Server) handleFetch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "use POST with a JSON DiscoveryRequest")
		return
	}
	timeout := s.opts.DefaultFetchTimeout
	if v, ok := r.URL.Query()["fetch-timeout"]; ok {
		d, err := resource.ParseDuration(strings.TrimSpace(v[0]))
		if err != nil {
			writeError(w, http.StatusBadRequest, "Bad request", fmt.Sprintf("fetch-timeout: %q is not a duration such as 30s", v[0]))
			return
		}
		timeout = min(d, s.opts.MaxFetchTimeout)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "Bad request", "reading the body: "+err.Error())
		return
	}
	if len(body) > maxRequestBody {
		writeError(w, http.StatusRequestEntityTooLarge, "Request too large", fmt.Sprintf("the body must be at most %d bytes", maxRequestBody))
		return
	}
	req := &discoveryv3.DiscoveryRequest{}
	if err := unmarshalRequest.Unmarshal(body, req); err != nil {
		writeError(w, http.StatusBadRequest, "Bad request", "the body is not a JSON DiscoveryRequest: "+protoError(err))
		return
	}
	// The path names the type: a request's type_url is not needed to answer it.

	var expire <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expire = t.C
	}
	held := false
	defer func() {
		if held {
			s.held.Add(-1)
		}
	}()
	for {
		p, changed := s.current.Get()
		if p != nil && p.snap.Version() != req.GetVersionInfo() {
			s.writeFetch(w, p)
			return
		}
		if timeout <= 0 {
			if p == nil {
				writeError(w, http.StatusServiceUnavailable, "Not ready", "the control plane has not generated assignments yet")
				return
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
		if !held {
			if s.held.Add(1) > int64(s.opts.MaxHeldLongPolls) {
				s.held.Add(-1)
				s.rejected.Add(1)
				w.Header().Set("Retry-After", retryAfter)
				writeError(w, http.StatusServiceUnavailable, "Too many long polls",
					fmt.Sprintf("the control plane already holds %d long polls (monitoringAssignmentServer.maxHeldLongPolls); retry after %s seconds", s.opts.MaxHeldLongPolls, retryAfter))
				return
			}
			held = true
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return // the client left
		case <-s.pollCtx.Done():
			writeError(w, http.StatusServiceUnavailable, "Shutting down", "the control plane is stopping")
			return
		case <-expire:
			if p == nil {
				writeError(w, http.StatusServiceUnavailable, "Not ready", "the control plane has not generated assignments yet")
				return
			}
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
}

// protoError drops protojson's "proto:" prefix (followed by a space that is
// sometimes a no-break space) from an error message.
func protoError(err error) string {
	return strings.TrimLeft(strings.TrimPrefix(err.Error(), "proto:"), " \u00a0")
}

func (s *Server) writeFetch(w http.ResponseWriter, p *published) {
	writeBody(w, p.fetchResponse())
}

func writeBody(w http.ResponseWriter, b *body) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(b.size))
	for _, p := range b.parts {
		if _, err := w.Write(p); err != nil {
			return // the client left
		}
	}
}

// TargetGroup is one entry of a Prometheus http_sd (and file_sd) document.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Prometheus' labels of a Kuma target, as its kuma_sd_configs sets them.
const (
	MetaMesh        = "__meta_kuma_mesh"
	MetaService     = "__meta_kuma_service"
	MetaDataplane   = "__meta_kuma_dataplane"
	MetaLabelPrefix = "__meta_kuma_label_"
)

// HTTPSDGroups renders assignments as Prometheus http_sd target groups with
// exactly the labels Prometheus' own kuma_sd_configs gives a target, so the
// same relabel_configs work with either.
func HTTPSDGroups(as []Assignment) []TargetGroup {
	out := make([]TargetGroup, 0, len(as))
	for _, a := range as {
		for _, t := range a.Targets {
			labels := make(map[string]string, len(t.Labels)+len(a.Labels)+6)
			for k, v := range t.Labels {
				labels[MetaLabelPrefix+SanitizeLabelName(k)] = v
			}
			for k, v := range a.Labels {
				labels[MetaLabelPrefix+SanitizeLabelName(k)] = v
			}
			labels[MetaMesh] = a.Mesh
			labels[MetaService] = a.Service
			labels[MetaDataplane] = t.Name
			labels["instance"] = t.Name
			labels["__scheme__"] = t.Scheme
			labels["__metrics_path__"] = t.MetricsPath
			out = append(out, TargetGroup{Targets: []string{t.Address}, Labels: labels})
		}
	}
	slices.SortStableFunc(out, func(a, b TargetGroup) int {
		if c := strings.Compare(a.Labels[MetaMesh], b.Labels[MetaMesh]); c != 0 {
			return c
		}
		return strings.Compare(a.Labels[MetaDataplane], b.Labels[MetaDataplane])
	})
	return out
}

// handleHTTPSD serves GET /v3/discovery:monitoringassignments/http_sd.
func (s *Server) handleHTTPSD(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "Method not allowed", "use GET")
		return
	}
	p, err := s.await(r.Context())
	if err != nil {
		if errors.Is(err, r.Context().Err()) {
			return
		}
		writeError(w, http.StatusServiceUnavailable, "Not ready", err.Error())
		return
	}
	w.Header().Set("X-Kuma-Version", p.snap.Version())
	writeBody(w, p.httpSD())
}
