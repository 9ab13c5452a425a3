// Package metricsendpoint serves a dataplane proxy's metrics endpoint: the
// proxy's own statistics (package stats) followed by the metrics of the
// applications listed in the mesh's `aggregate` configuration, in one
// answer that a Prometheus server can scrape.
//
// The proxy core owns the listener (address, port, TLS) and mounts an
// *Endpoint on it; this package owns what is served. Configuration changes
// are applied live with Update: the new config is validated and swapped
// atomically, and scrapes already in flight finish on the config they
// started with.
//
// # Request
//
// GET and HEAD on the configured path (405 for other methods, 404 for other
// paths). As on Envoy's /stats/prometheus, the query parameter filter=REGEX
// keeps only statistics whose Envoy dotted name (cluster.backend.upstream_rq_total)
// the expression matches, and usedonly (present = true) keeps only statistics
// that changed at least once. They combine with the mesh's envoy.filterRegex
// and envoy.usedOnly: a statistic is written when both expressions match it
// and, when either side asks for it, it was used. A query filter that does
// not compile is answered with 400.
//
// The answer is Prometheus text 0.0.4, or OpenMetrics 1.0 when the Accept
// header prefers application/openmetrics-text (as Prometheus' default Accept
// header does); an OpenMetrics answer ends with exactly one # EOF line. It is
// gzip-compressed when Accept-Encoding allows it.
//
// # Streaming and locking
//
// The proxy's statistics are streamed from the store straight into the
// response (through the gzip writer when used). The scrape path takes no
// lock that the data path (recording statistics) or the config path
// (registering statistics, Update) takes: it loads the config and the
// store's view through atomic pointers.
//
// # Application metrics
//
// Each application of Config.Aggregate is scraped in its own goroutine,
// concurrently with the rendering of the proxy's statistics, with
// Accept: text/plain;version=0.0.4 and Accept-Encoding: gzip. All of them
// share one deadline: the scraper's X-Prometheus-Scrape-Timeout-Seconds (or
// Options.DefaultScrapeTimeout) minus a safety margin of 10%, at most 0.5 s,
// so that the whole answer reaches the scraper in time.
//
// An application's answer is parsed with expfmt (text; OpenMetrics when the
// application answers in it anyway) and validated: legacy metric and label
// names, no duplicate label or series, counters not negative or NaN, classic
// histograms with integer, non-decreasing buckets, summaries with quantiles
// in [0, 1]. Any problem rejects the application's whole answer; so do a
// timeout, a failed connection, a status other than 200 and a body over
// Options.MaxApplicationBytes. A rejected application is left out of this
// scrape only: the rest of the answer is written as usual. Outcomes are
// counted in proxy statistics (all labelled app="<name>"):
//
//	kuma_dp_metrics_aggregate_scrapes_total            metrics.aggregate.<app>.scrapes
//	kuma_dp_metrics_aggregate_errors_total{reason}     metrics.aggregate.<app>.errors.<reason>
//	    reason = timeout | connect | status | parse | too_large
//	kuma_dp_metrics_aggregate_collisions_total{action} metrics.aggregate.<app>.collisions.<action>
//	    action = dropped | renamed
//	kuma_dp_metrics_aggregate_scrape_time              metrics.aggregate.<app>.scrape_time (histogram, ms)
//	kuma_dp_metrics_aggregate_up                       metrics.aggregate.<app>.up (1 after a successful scrape)
//
// The first failure of each kind per application is logged at warning
// level, later changes of an application's state at debug level (a recovery
// from a logged failure at info level); a failing application does not log
// on every scrape.
//
// # Collisions
//
// Families are compared by every name they occupy in either output format: a
// counter foo_total also occupies foo (its OpenMetrics family name), a
// histogram foo also foo_bucket, foo_sum and foo_count, a summary foo also
// foo_sum and foo_count. An application family that overlaps a family
// registered in the proxy's statistics store is dropped: the proxy's names
// are authoritative. One that overlaps a family of an application earlier in
// the configured order (sorted by aggregate name) is renamed
// <application name>_<family> (the name with every character outside
// [a-zA-Z0-9_] replaced by '_'), or dropped if that name is taken too. An
// application that fails a scrape keeps the names of its last successful
// answer reserved, so that another application's family does not flip
// between its plain and its renamed name while the first one is down. Every
// drop and rename is counted; each is logged once per family.
//
// # Output order
//
// The proxy's statistics first, then each application in aggregate-name
// order, its families sorted by name and re-encoded with expfmt in the
// negotiated format, so that the whole answer parses as one exposition.
package metricsendpoint
