package apiserver

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "api_server_http_request_duration_seconds",
			Help:    "Duration of REST API requests.",
			Buckets: prometheus.DefBuckets,
		}, []string{"handler", "method", "code"}),
	}
	if reg != nil {
		if err := reg.Register(m.duration); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(handler, method string, code int, d time.Duration) {
	m.duration.WithLabelValues(handler, methodLabel(method), strconv.Itoa(code)).Observe(d.Seconds())
}

// methodLabel is method when HTTP defines it (RFC 9110, and PATCH), else
// "other": a client inventing methods must not create series.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}
