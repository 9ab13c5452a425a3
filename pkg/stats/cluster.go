package stats

import (
	"strconv"
	"time"
)

// Label names of the Envoy-compatible Prometheus families.
const (
	LabelClusterName           = "envoy_cluster_name"
	LabelResponseCodeClass     = "envoy_response_code_class"
	LabelHTTPConnManagerPrefix = "envoy_http_conn_manager_prefix"
	LabelListener              = "listener"
	LabelListenerAddress       = "envoy_listener_address"
)

// classIndex maps an HTTP status to its response code class index (0 for
// 1xx … 4 for 5xx), or -1 for a status outside 100–599.
func classIndex(status int) int {
	c := status/100 - 1
	if status < 100 || c > 4 {
		return -1
	}
	return c
}

// builder registers the statistics of one bundle in one scope.
type builder struct {
	sc     *Scope
	prefix string // dotted prefix, e.g. "cluster.backend."
	family string // family prefix, e.g. "envoy_cluster_"
	labels []Label
}

func (b *builder) opts(stat, family, help string, extra ...Label) Opts {
	ls := b.labels
	if len(extra) > 0 {
		ls = append(append(make([]Label, 0, len(b.labels)+len(extra)), b.labels...), extra...)
	}
	return Opts{Name: b.prefix + stat, Family: b.family + family, Help: help, Labels: ls}
}

func (b *builder) counter(stat, help string) *Counter {
	return b.sc.Counter(b.opts(stat, stat, help))
}

func (b *builder) gauge(stat, help string) *Gauge {
	return b.sc.Gauge(b.opts(stat, stat, help))
}

func (b *builder) histogram(stat, help string) *Histogram {
	return b.sc.Histogram(b.opts(stat, stat, help))
}

// perClass registers the five <dotted>Nxx counters of family <family>_xx,
// e.g. cluster.backend.external.upstream_rq_2xx →
// envoy_cluster_external_upstream_rq_xx{…,envoy_response_code_class="2"}.
func (b *builder) perClass(dotted, family, help string) (out [5]*Counter) {
	for i := range out {
		class := strconv.Itoa(i + 1)
		out[i] = b.sc.Counter(b.opts(dotted+"_"+class+"xx", family+"_xx", help,
			Label{Name: LabelResponseCodeClass, Value: class}))
	}
	return out
}

// ClusterStats are the statistics of one upstream cluster
// (cluster.<name>.* / envoy_cluster_*{envoy_cluster_name="<name>"}). The
// per-class arrays are indexed by class-1 (index 1 is 2xx). All handles are
// safe for concurrent use; record through the helpers where one exists.
type ClusterStats struct {
	name  string
	scope *Scope

	UpstreamRqTotal               *Counter
	UpstreamRqXX                  [5]*Counter
	UpstreamRqCompleted           *Counter
	UpstreamRqActive              *Gauge
	UpstreamRqTimeout             *Counter
	UpstreamRqRxReset             *Counter
	UpstreamRqTxReset             *Counter
	UpstreamRqPendingOverflow     *Counter
	UpstreamRqPendingFailureEject *Counter
	UpstreamRqRetryOverflow       *Counter
	ExternalUpstreamRqXX          [5]*Counter
	InternalUpstreamRqXX          [5]*Counter
	UpstreamRqTime                *Histogram

	UpstreamCxTotal                     *Counter
	UpstreamCxActive                    *Gauge
	UpstreamCxConnectFail               *Counter
	UpstreamCxConnectTimeout            *Counter
	UpstreamCxOverflow                  *Counter
	UpstreamCxDestroyLocalWithActiveRq  *Counter
	UpstreamCxDestroyRemoteWithActiveRq *Counter
	UpstreamCxRxBytesTotal              *Counter
	UpstreamCxTxBytesTotal              *Counter
	UpstreamCxConnectMs                 *Histogram
	UpstreamCxLengthMs                  *Histogram

	MembershipTotal                 *Gauge
	MembershipHealthy               *Gauge
	OutlierDetectionEjectionsActive *Gauge
	HealthCheckHealthy              *Gauge
	SSLHandshake                    *Counter
}

// NewClusterStats registers and publishes the statistics of cluster name
// (already sanitized by the caller: localhost_<port> for an inbound, the
// destination service for an outbound). Registering a cluster that is
// already registered shares its statistics (each holder must Release).
func NewClusterStats(s *Store, name string) *ClusterStats {
	b := builder{
		sc:     s.NewScope(),
		prefix: "cluster." + name + ".",
		family: "envoy_cluster_",
		labels: []Label{{Name: LabelClusterName, Value: name}},
	}
	c := &ClusterStats{
		name:  name,
		scope: b.sc,

		UpstreamRqTotal:               b.counter("upstream_rq_total", "Total requests."),
		UpstreamRqXX:                  b.perClass("upstream_rq", "upstream_rq", "Upstream responses by response code class."),
		UpstreamRqCompleted:           b.counter("upstream_rq_completed", "Total upstream requests completed."),
		UpstreamRqActive:              b.gauge("upstream_rq_active", "Total active requests."),
		UpstreamRqTimeout:             b.counter("upstream_rq_timeout", "Total requests that timed out waiting for a response."),
		UpstreamRqRxReset:             b.counter("upstream_rq_rx_reset", "Total requests that were reset remotely."),
		UpstreamRqTxReset:             b.counter("upstream_rq_tx_reset", "Total requests that were reset locally."),
		UpstreamRqPendingOverflow:     b.counter("upstream_rq_pending_overflow", "Total requests that overflowed connection pool or requests circuit breaking and were failed."),
		UpstreamRqPendingFailureEject: b.counter("upstream_rq_pending_failure_eject", "Total requests that were failed due to a connection pool connection failure or remote connection termination."),
		UpstreamRqRetryOverflow:       b.counter("upstream_rq_retry_overflow", "Total requests not retried due to circuit breaking or exceeding the retry budget."),
		ExternalUpstreamRqXX:          b.perClass("external.upstream_rq", "external_upstream_rq", "Upstream responses to external requests by response code class."),
		InternalUpstreamRqXX:          b.perClass("internal.upstream_rq", "internal_upstream_rq", "Upstream responses to internal requests by response code class."),
		UpstreamRqTime:                b.histogram("upstream_rq_time", "Request time milliseconds."),

		UpstreamCxTotal:                     b.counter("upstream_cx_total", "Total connections."),
		UpstreamCxActive:                    b.gauge("upstream_cx_active", "Total active connections."),
		UpstreamCxConnectFail:               b.counter("upstream_cx_connect_fail", "Total connection failures."),
		UpstreamCxConnectTimeout:            b.counter("upstream_cx_connect_timeout", "Total connection connect timeouts."),
		UpstreamCxOverflow:                  b.counter("upstream_cx_overflow", "Total times that the cluster's connection circuit breaker overflowed."),
		UpstreamCxDestroyLocalWithActiveRq:  b.counter("upstream_cx_destroy_local_with_active_rq", "Total connections destroyed locally with 1+ active request."),
		UpstreamCxDestroyRemoteWithActiveRq: b.counter("upstream_cx_destroy_remote_with_active_rq", "Total connections destroyed remotely with 1+ active request."),
		UpstreamCxRxBytesTotal:              b.counter("upstream_cx_rx_bytes_total", "Total received connection bytes."),
		UpstreamCxTxBytesTotal:              b.counter("upstream_cx_tx_bytes_total", "Total sent connection bytes."),
		UpstreamCxConnectMs:                 b.histogram("upstream_cx_connect_ms", "Connection establishment milliseconds."),
		UpstreamCxLengthMs:                  b.histogram("upstream_cx_length_ms", "Connection length milliseconds."),

		MembershipTotal:   b.gauge("membership_total", "Current cluster membership total."),
		MembershipHealthy: b.gauge("membership_healthy", "Current cluster healthy total."),
		OutlierDetectionEjectionsActive: b.sc.Gauge(b.opts("outlier_detection.ejections_active",
			"outlier_detection_ejections_active", "Number of currently ejected hosts.")),
		HealthCheckHealthy: b.sc.Gauge(b.opts("health_check.healthy",
			"health_check_healthy", "Number of healthy members.")),
		SSLHandshake: b.sc.Counter(b.opts("ssl.handshake", "ssl_handshake", "Total successful TLS connection handshakes.")),
	}
	b.sc.Publish()
	return c
}

// Name returns the cluster name.
func (c *ClusterStats) Name() string { return c.name }

// RequestDone records a finished upstream request: upstream_rq_total, the
// response class counter, its external or internal twin,
// upstream_rq_completed and upstream_rq_time. A status outside 100–599
// counts in the totals only. It does not touch upstream_rq_active. It does
// not allocate.
func (c *ClusterStats) RequestDone(status int, d time.Duration, external bool) {
	c.UpstreamRqTotal.Inc()
	if i := classIndex(status); i >= 0 {
		c.UpstreamRqXX[i].Inc()
		if external {
			c.ExternalUpstreamRqXX[i].Inc()
		} else {
			c.InternalUpstreamRqXX[i].Inc()
		}
	}
	c.UpstreamRqCompleted.Inc()
	c.UpstreamRqTime.Observe(d)
}

// ConnectionOpened records an established upstream connection:
// upstream_cx_total, upstream_cx_active and upstream_cx_connect_ms.
func (c *ClusterStats) ConnectionOpened(connect time.Duration) {
	c.UpstreamCxTotal.Inc()
	c.UpstreamCxActive.Inc()
	c.UpstreamCxConnectMs.Observe(connect)
}

// ConnectionClosed records the end of a connection recorded with
// ConnectionOpened: upstream_cx_active and upstream_cx_length_ms.
func (c *ClusterStats) ConnectionClosed(length time.Duration) {
	c.UpstreamCxActive.Dec()
	c.UpstreamCxLengthMs.Observe(length)
}

// Release removes the cluster's statistics from the store (when no other
// holder shares them). The handles stay safe to use.
func (c *ClusterStats) Release() { c.scope.Release() }
