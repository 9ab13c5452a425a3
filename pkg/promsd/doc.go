// Package promsd keeps a Prometheus file_sd file in step with the control
// plane's monitoring assignments, for a Prometheus without kuma_sd_configs:
// it is the whole of kuma-prometheus-sd (command, MADS gRPC client,
// assignment-to-file_sd conversion and atomic file writer).
package promsd
