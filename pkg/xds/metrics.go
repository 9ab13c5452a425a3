package xds

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of xDS streams and of snapshot generation, shared by every server
// of a control plane (names as the reference system's: xds_*).
type Metrics struct {
	streamsActive    *prometheus.GaugeVec
	requestsReceived *prometheus.CounterVec
	responsesSent    *prometheus.CounterVec
	generation       *prometheus.SummaryVec
	generationErrors *prometheus.CounterVec
}

// Confirmation values of xds_requests_received.
const (
	ACK  = "ACK"
	NACK = "NACK"
)

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		streamsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "xds_streams_active", Help: "Number of open xDS streams.",
		}, []string{"type_url"}),
		requestsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_requests_received", Help: "xDS requests received, by confirmation (ACK or NACK of the previous response).",
		}, []string{"type_url", "confirmation"}),
		responsesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_responses_sent", Help: "xDS responses sent.",
		}, []string{"type_url"}),
		generation: prometheus.NewSummaryVec(prometheus.SummaryOpts{
			Name: "xds_generation", Help: "Time to generate a snapshot, in milliseconds.",
			Objectives: map[float64]float64{0.5: 0.05, 0.9: 0.01, 0.99: 0.001},
		}, []string{"type_url"}),
		generationErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xds_generation_errors", Help: "Snapshot generations that failed.",
		}, []string{"type_url"}),
	}
	for _, c := range []prometheus.Collector{m.streamsActive, m.requestsReceived, m.responsesSent, m.generation, m.generationErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("xds metrics: %w", err)
		}
	}
	return m, nil
}

// initType creates the series of a type URL at zero, so that a healthy
// system shows 0 errors and NACKs rather than nothing.
func (m *Metrics) initType(typeURL string) {
	if m == nil {
		return
	}
	m.streamsActive.WithLabelValues(typeURL)
	m.requestsReceived.WithLabelValues(typeURL, ACK)
	m.requestsReceived.WithLabelValues(typeURL, NACK)
	m.responsesSent.WithLabelValues(typeURL)
	m.generationErrors.WithLabelValues(typeURL)
}

// ObserveGeneration records one generation of a snapshot of typeURL.
func (m *Metrics) ObserveGeneration(typeURL string, ms float64, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.generationErrors.WithLabelValues(typeURL).Inc()
		return
	}
	m.generation.WithLabelValues(typeURL).Observe(ms)
}

func (m *Metrics) streamOpened(typeURL string) func() {
	if m == nil {
		return func() {}
	}
	g := m.streamsActive.WithLabelValues(typeURL)
	g.Inc()
	return g.Dec
}

func (m *Metrics) request(typeURL, confirmation string) {
	if m != nil {
		m.requestsReceived.WithLabelValues(typeURL, confirmation).Inc()
	}
}

func (m *Metrics) response(typeURL string) {
	if m != nil {
		m.responsesSent.WithLabelValues(typeURL).Inc()
	}
}
