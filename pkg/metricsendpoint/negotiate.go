package metricsendpoint

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/kumametrics/mesh/pkg/stats"
)

// contentTypeOpenMetrics001 answers a scraper that accepts only OpenMetrics
// 0.0.1; the body is the 1.0 body, as Prometheus' client libraries do.
const contentTypeOpenMetrics001 = "application/openmetrics-text; version=0.0.1; charset=utf-8"

// negotiate picks the answer's format from an Accept header: OpenMetrics
// when the most preferred clause that names a format this endpoint can
// write is application/openmetrics-text (version 1.0.0, 0.0.1 or none),
// else Prometheus text 0.0.4 (also for */* and text/*, the endpoint's
// default). Among clauses of equal q the first one wins.
func negotiate(accept string) (stats.Format, string) {
	bestQ, bestOM, omVersion := 0.0, false, ""
	for clause := range strings.SplitSeq(accept, ",") {
		mediaType, params, _ := strings.Cut(clause, ";")
		mediaType = strings.ToLower(strings.TrimSpace(mediaType))
		q, version := 1.0, ""
		for p := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(p, "=")
			k = strings.ToLower(strings.TrimSpace(k))
			v = strings.Trim(strings.TrimSpace(v), `"`)
			switch k {
			case "q":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil || !(f >= 0 && f <= 1) {
					f = 0
				}
				q = f
			case "version":
				version = v
			}
		}
		om := false
		switch mediaType {
		case "application/openmetrics-text":
			if version != "" && version != "1.0.0" && version != "0.0.1" {
				continue
			}
			om = true
		case "text/plain":
			if version != "" && version != "0.0.4" {
				continue
			}
		case "text/*", "*/*":
		default:
			continue
		}
		if q > bestQ {
			bestQ, bestOM, omVersion = q, om, version
		}
	}
	switch {
	case !bestOM:
		return stats.FormatPrometheus, stats.ContentTypePrometheus
	case omVersion == "0.0.1":
		return stats.FormatOpenMetrics, contentTypeOpenMetrics001
	default:
		return stats.FormatOpenMetrics, stats.ContentTypeOpenMetrics
	}
}

// acceptsGzip reports whether Accept-Encoding values allow gzip: a gzip (or
// x-gzip) coding with q > 0, or * with q > 0 when gzip is not listed.
func acceptsGzip(values []string) bool {
	gzipQ, starQ := -1.0, -1.0
	for _, v := range values {
		for coding := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(coding, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.TrimSpace(k), "q") {
					f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					if err != nil || !(f >= 0 && f <= 1) {
						f = 0
					}
					q = f
				}
			}
			switch name {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "*":
				starQ = max(starQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0
}

// maxScrapeTimeout caps an absurd X-Prometheus-Scrape-Timeout-Seconds.
const maxScrapeTimeout = 24 * time.Hour

// scrapeBudget returns how long the applications may take: the scraper's
// timeout (the X-Prometheus-Scrape-Timeout-Seconds value, a positive number
// of seconds; def when it is absent or invalid) minus a safety margin for
// merging and sending the answer, 10% of it but at most 0.5 s.
func scrapeBudget(header string, def time.Duration) time.Duration {
	timeout := def
	if header != "" {
		s, err := strconv.ParseFloat(strings.TrimSpace(header), 64)
		if err == nil && s > 0 && !math.IsInf(s, 0) {
			timeout = time.Duration(math.Min(s, maxScrapeTimeout.Seconds()) * float64(time.Second))
		}
	}
	return timeout - min(timeout/10, 500*time.Millisecond)
}
