// Package meshgraph computes the graph of a mesh: its services as nodes and
// the traffic between them as edges, from the results of instant PromQL
// queries over the proxies' statistics and the control plane's service
// insights. It is pure: Queries says what to ask Prometheus, Compute turns
// the answers into nodes and edges; the caller does the I/O.
//
// An edge is a (caller, upstream cluster) pair: the series of
// envoy_cluster_upstream_* scraped from the caller's proxies (label
// kuma_io_service, which Prometheus adds from discovery) for an outbound
// cluster (label envoy_cluster_name, the destination's kuma.io/service with
// characters outside [a-zA-Z0-9_-] replaced by '_'). Inbound clusters
// (localhost_<port>) and Envoy's internal ones are left out.
package meshgraph

import (
	"strconv"
	"strings"
	"time"
)

// Metric names one instant query of the graph.
type Metric string

// The queries of a graph, one per statistic.
const (
	// RequestsByClass: requests per second by response class (1…5).
	RequestsByClass Metric = "requests_by_class"
	// Requests: requests per second.
	Requests Metric = "requests"
	// LatencyBuckets: the request time histogram's buckets (ms) per second.
	LatencyBuckets Metric = "latency_buckets"
	// Connections: new upstream connections per second.
	Connections Metric = "connections"
	// ActiveConnections: open upstream connections (a gauge).
	ActiveConnections Metric = "active_connections"
	// SentBytes and ReceivedBytes: bytes per second sent to and received
	// from the upstream.
	SentBytes     Metric = "sent_bytes"
	ReceivedBytes Metric = "received_bytes"
	// Handshakes: TLS handshakes to the upstream within the window.
	Handshakes Metric = "handshakes"
)

// The labels the queries group by.
const (
	// LabelSource is the caller's service: Prometheus' relabelling of the
	// discovery label __meta_kuma_label_kuma_io_service.
	LabelSource  = "kuma_io_service"
	LabelCluster = "envoy_cluster_name"
	LabelClass   = "envoy_response_code_class"
	LabelLe      = "le"
	labelMesh    = "mesh"
	labelZone    = "kuma_io_zone"
)

// excludedClusters are clusters that are no edge: inbound clusters to the
// local application (localhost_<port>) and Envoy's own (xDS, admin).
const excludedClusters = `localhost_[0-9]+|ads_cluster|kuma_envoy_admin`

// Params choose the traffic of a graph.
type Params struct {
	// Mesh is the mesh whose proxies' statistics count.
	Mesh string
	// Zone is an RE2 regular expression the proxies' kuma_io_zone label
	// must match; "" or ".*" matches every proxy, with or without zone.
	Zone string
	// Window is the range of rate(); see Window.
	Window time.Duration
}

// Query is one instant PromQL query of a graph.
type Query struct {
	Metric Metric
	PromQL string
}

// Window is the rate window of a graph for a query interval: the interval
// floored to whole minutes, at least a minute (statistics are scraped every
// few seconds; shorter windows would be noise).
func Window(interval time.Duration) time.Duration {
	w := interval.Truncate(time.Minute)
	if w < time.Minute {
		return time.Minute
	}
	return w
}

// Queries are the instant queries whose answers Compute needs, one per
// Metric, in a fixed order.
func Queries(p Params) []Query {
	sel := selector(p)
	w := "[" + promDuration(p.Window) + "]"
	by := "sum by (" + LabelSource + ", " + LabelCluster
	rate := func(metric string) string { return "rate(" + metric + sel + w + ")" }
	return []Query{
		{RequestsByClass, by + ", " + LabelClass + ") (" + rate("envoy_cluster_upstream_rq_xx") + ")"},
		{Requests, by + ") (" + rate("envoy_cluster_upstream_rq_total") + ")"},
		{LatencyBuckets, by + ", " + LabelLe + ") (" + rate("envoy_cluster_upstream_rq_time_bucket") + ")"},
		{Connections, by + ") (" + rate("envoy_cluster_upstream_cx_total") + ")"},
		{ActiveConnections, by + ") (envoy_cluster_upstream_cx_active" + sel + ")"},
		{SentBytes, by + ") (" + rate("envoy_cluster_upstream_cx_tx_bytes_total") + ")"},
		{ReceivedBytes, by + ") (" + rate("envoy_cluster_upstream_cx_rx_bytes_total") + ")"},
		{Handshakes, by + ") (increase(envoy_cluster_ssl_handshake" + sel + w + "))"},
	}
}

// selector is the label selector of every query.
func selector(p Params) string {
	m := []string{labelMesh + "=" + promString(p.Mesh)}
	if p.Zone != "" && p.Zone != ".*" {
		m = append(m, labelZone+"=~"+promString(p.Zone))
	}
	m = append(m, LabelCluster+"!~"+promString(excludedClusters))
	return "{" + strings.Join(m, ",") + "}"
}

// promString quotes s as a PromQL string literal (Go's escapes are PromQL's).
func promString(s string) string { return strconv.Quote(s) }

// promDuration renders d (whole minutes) as a PromQL duration.
func promDuration(d time.Duration) string {
	if d%time.Minute == 0 {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}
