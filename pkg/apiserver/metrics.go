package apiserver

import (
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
	m.duration.WithLabelValues(handler, method, strconv.Itoa(code)).Observe(d.Seconds())
}
