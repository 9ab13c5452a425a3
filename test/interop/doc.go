// Package interop runs Prometheus' own Kuma service discovery
// (github.com/prometheus/prometheus/discovery/xds) against a running
// kuma-cp. It is a separate module: Prometheus registers its own copy of the
// MonitoringAssignment proto type, which would clash with ours in one binary,
// and its dependencies stay out of the main module.
package interop
