package stats

import "time"

// HTTPConnManagerStats are the statistics of one HTTP connection manager
// (http.<prefix>.* / envoy_http_*{envoy_http_conn_manager_prefix="<prefix>"}).
// DownstreamRqXX is indexed by class-1.
type HTTPConnManagerStats struct {
	prefix string
	scope  *Scope

	DownstreamRqTotal  *Counter
	DownstreamRqXX     [5]*Counter
	DownstreamRqActive *Gauge
	DownstreamRqTime   *Histogram
	DownstreamCxTotal  *Counter
	DownstreamCxActive *Gauge
}

// NewHTTPConnManagerStats registers and publishes the statistics of the HTTP
// connection manager with stat prefix prefix (e.g. inbound_8080).
func NewHTTPConnManagerStats(s *Store, prefix string) *HTTPConnManagerStats {
	b := builder{
		sc:     s.NewScope(),
		prefix: "http." + prefix + ".",
		family: "envoy_http_",
		labels: []Label{{Name: LabelHTTPConnManagerPrefix, Value: prefix}},
	}
	h := &HTTPConnManagerStats{
		prefix: prefix,
		scope:  b.sc,

		DownstreamRqTotal:  b.counter("downstream_rq_total", "Total requests."),
		DownstreamRqXX:     b.perClass("downstream_rq", "downstream_rq", "Responses by response code class."),
		DownstreamRqActive: b.gauge("downstream_rq_active", "Total active requests."),
		DownstreamRqTime:   b.histogram("downstream_rq_time", "Total time for request and response (milliseconds)."),
		DownstreamCxTotal:  b.counter("downstream_cx_total", "Total connections."),
		DownstreamCxActive: b.gauge("downstream_cx_active", "Total active connections."),
	}
	b.sc.Publish()
	return h
}

// Prefix returns the stat prefix.
func (h *HTTPConnManagerStats) Prefix() string { return h.prefix }

// RequestDone records a finished downstream request: downstream_rq_total,
// the response class counter and downstream_rq_time. It does not touch
// downstream_rq_active. It does not allocate.
func (h *HTTPConnManagerStats) RequestDone(status int, d time.Duration) {
	h.DownstreamRqTotal.Inc()
	if i := classIndex(status); i >= 0 {
		h.DownstreamRqXX[i].Inc()
	}
	h.DownstreamRqTime.Observe(d)
}

// ConnectionOpened records a new downstream connection
// (downstream_cx_total, downstream_cx_active).
func (h *HTTPConnManagerStats) ConnectionOpened() {
	h.DownstreamCxTotal.Inc()
	h.DownstreamCxActive.Inc()
}

// ConnectionClosed records the end of a downstream connection.
func (h *HTTPConnManagerStats) ConnectionClosed() { h.DownstreamCxActive.Dec() }

// Release removes the statistics from the store.
func (h *HTTPConnManagerStats) Release() { h.scope.Release() }

// RBACStats count the authorization decisions of one listener
// (rbac.<listener>.allowed|denied / envoy_rbac_allowed|denied{listener}).
type RBACStats struct {
	scope   *Scope
	Allowed *Counter
	Denied  *Counter
}

// NewRBACStats registers and publishes the RBAC statistics of a listener.
// The label keeps the listener name as given; the dotted name has ':' and
// other characters Envoy drops from stat names replaced by '_'.
func NewRBACStats(s *Store, listener string) *RBACStats {
	b := builder{
		sc:     s.NewScope(),
		prefix: "rbac." + listener + ".",
		family: "envoy_rbac_",
		labels: []Label{{Name: LabelListener, Value: listener}},
	}
	r := &RBACStats{
		scope:   b.sc,
		Allowed: b.counter("allowed", "Total requests that were allowed access."),
		Denied:  b.counter("denied", "Total requests that were denied access."),
	}
	b.sc.Publish()
	return r
}

// Record counts one decision.
func (r *RBACStats) Record(allowed bool) {
	if allowed {
		r.Allowed.Inc()
	} else {
		r.Denied.Inc()
	}
}

// Release removes the statistics from the store.
func (r *RBACStats) Release() { r.scope.Release() }

// ListenerStats are kuma-dp's own statistics of one listener, beyond
// Envoy's: accepts that failed temporarily (out of file descriptors) and
// were retried (listener.<name>.accept_errors /
// kuma_dp_accept_errors_total{listener}), and connections whose serving
// goroutine panicked, which only ended that connection
// (listener.<name>.connection_panics /
// kuma_dp_connection_panics_total{listener}).
type ListenerStats struct {
	scope            *Scope
	AcceptErrors     *Counter
	ConnectionPanics *Counter
}

// NewListenerStats registers and publishes the statistics of a listener
// (the label keeps the name as given).
func NewListenerStats(s *Store, listener string) *ListenerStats {
	sc := s.NewScope()
	label := []Label{{Name: LabelListener, Value: listener}}
	l := &ListenerStats{
		scope: sc,
		AcceptErrors: sc.Counter(Opts{Name: "listener." + listener + ".accept_errors", Family: "kuma_dp_accept_errors_total", Labels: label,
			Help: "Accepts that failed temporarily (out of file descriptors, a connection aborted) and were retried with backoff."}),
		ConnectionPanics: sc.Counter(Opts{Name: "listener." + listener + ".connection_panics", Family: "kuma_dp_connection_panics_total", Labels: label,
			Help: "Connections whose serving goroutine panicked: logged with the stack, only that connection ended."}),
	}
	sc.Publish()
	return l
}

// Release removes the statistics from the store.
func (l *ListenerStats) Release() { l.scope.Release() }

// RedirectStats count what a transparent proxy's redirect listener could
// not route: connections whose original destination matched no inbound or
// outbound while passthrough was off, or that were not redirected at all
// (their original destination is the listener itself), which are closed
// (listener.<address>.no_filter_chain_match /
// envoy_listener_no_filter_chain_match{envoy_listener_address}, as Envoy
// counts a connection that no filter chain matched; the address is
// Envoy's form, 0.0.0.0_15001).
type RedirectStats struct {
	scope              *Scope
	NoFilterChainMatch *Counter
}

// NewRedirectStats registers and publishes the statistics of the redirect
// listener bound to address (host_port).
func NewRedirectStats(s *Store, address string) *RedirectStats {
	sc := s.NewScope()
	r := &RedirectStats{
		scope: sc,
		NoFilterChainMatch: sc.Counter(Opts{Name: "listener." + address + ".no_filter_chain_match", Family: "envoy_listener_no_filter_chain_match",
			Labels: []Label{{Name: LabelListenerAddress, Value: address}},
			Help:   "Connections of a transparent proxy's redirect listener that matched no inbound or outbound and were not passed through."}),
	}
	sc.Publish()
	return r
}

// Release removes the statistics from the store.
func (r *RedirectStats) Release() { r.scope.Release() }

// HTTPBundles returns cluster and listener, each replaced, when nil, by one
// recording into a private store: what an HTTP engine records into when its
// owner gave it nowhere to (tests, tools).
func HTTPBundles(cluster *ClusterStats, listener *HTTPConnManagerStats) (*ClusterStats, *HTTPConnManagerStats) {
	if cluster != nil && listener != nil {
		return cluster, listener
	}
	s := NewStore()
	if cluster == nil {
		cluster = NewClusterStats(s, "unnamed")
	}
	if listener == nil {
		listener = NewHTTPConnManagerStats(s, "unnamed")
	}
	return cluster, listener
}
