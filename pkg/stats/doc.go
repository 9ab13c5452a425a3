// Package stats is the data plane proxy's statistics store: counters, gauges
// and fixed-bucket latency histograms with Envoy-compatible names, and the
// encoders that expose them (Prometheus text 0.0.4, OpenMetrics 1.0 and
// Envoy's /stats text form).
//
// # Three paths, no shared lock
//
// Data path: the proxy holds pre-bound handles (*Counter, *Gauge,
// *Histogram, usually through the typed bundles ClusterStats,
// HTTPConnManagerStats, RBACStats and ServerStats). Recording is a few atomic
// operations: no map lookup, no lock, no allocation.
//
// Config path: statistics are registered and removed in groups through a
// Scope (one per cluster, listener, ...). Registration takes the store's
// mutex and, on Publish or Release, builds a new immutable sorted view of all
// statistics that is published through an atomic pointer. A handle whose
// scope was released stays safe to use; it simply no longer renders.
// Store.Batch folds the rebuilds of a whole config update into one.
//
// Scrape path: the encoders load the current view and walk it without taking
// any lock that the data or config path takes. Label strings are rendered
// once at registration, values are appended with strconv into a pooled
// buffer, and the result of a filter regular expression is cached per view,
// so a warmed-up scrape allocates nothing.
//
// # Names
//
// Every statistic has two names. The Envoy dotted name
// (cluster.backend.upstream_rq_total) is what a Filter regular expression is
// matched against, as on Envoy's /stats?filter=, and what the Envoy text form
// prints. The Prometheus identity is a family name plus label pairs
// (envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"}). Two
// registrations with the same Prometheus identity share one statistic
// (reference counted), as Envoy shares a statistic between two holders of the
// same name.
package stats
