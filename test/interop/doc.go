// Package interop checks this project against the ecosystem's own code:
// Prometheus' Kuma service discovery (github.com/prometheus/prometheus/discovery/xds)
// against a running kuma-cp, Prometheus' configuration loader and PromQL
// parser on what `kumactl install metrics` writes and on the dashboards, and
// k8s.io/api types (strict decoding) on the Kubernetes manifests. It is a
// separate module: Prometheus registers its own copy of the
// MonitoringAssignment proto type, which would clash with ours in one binary,
// and these dependencies stay out of the main module.
package interop
