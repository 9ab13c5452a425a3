package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// scrapeResult reports a scraper run: what Prometheus would have seen.
type scrapeResult struct {
	URL      string  `json:"url"`
	Scrapes  int     `json:"scrapes"`
	Failures int     `json:"failures"`
	Error    string  `json:"error,omitempty"`
	Bytes    int64   `json:"bytes_last"`
	P50      float64 `json:"p50_ms"`
	Max      float64 `json:"max_ms"`
}

func (r *scrapeResult) failed() bool { return r.Failures > 0 || r.Scrapes == 0 }

func (r *scrapeResult) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scrape %s: %d scrapes, %d failures, last body %d bytes, p50 %.2f ms, max %.2f ms\n",
		r.URL, r.Scrapes, r.Failures, r.Bytes, r.P50, r.Max)
	if r.Error != "" {
		fmt.Fprintf(&b, "  first failure: %s\n", r.Error)
	}
	return b.String()
}

// runScrape GETs url every interval, as a Prometheus scraper would, until
// duration has passed (0: no limit) or SIGTERM/SIGINT arrives. It never
// stops on a failed scrape: failures are counted and reported.
func runScrape(url string, every, duration, timeout time.Duration) *scrapeResult {
	r := &scrapeResult{URL: url}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	var end <-chan time.Time
	if duration > 0 {
		end = time.After(duration)
	}
	client := &http.Client{Timeout: min(timeout, every*10)}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var took []time.Duration
	for {
		start := time.Now()
		n, err := scrapeOnce(client, url)
		took = append(took, time.Since(start))
		r.Scrapes++
		if err != nil {
			r.Failures++
			if r.Error == "" {
				r.Error = err.Error()
			}
		} else {
			r.Bytes = n
		}
		select {
		case <-tick.C:
		case <-sig:
			return r.finish(took)
		case <-end:
			return r.finish(took)
		}
	}
}

func (r *scrapeResult) finish(took []time.Duration) *scrapeResult {
	slices.Sort(took)
	if len(took) > 0 {
		r.P50 = float64(took[(len(took)-1)/2].Microseconds()) / 1000
		r.Max = float64(took[len(took)-1].Microseconds()) / 1000
	}
	return r
}

func scrapeOnce(client *http.Client, url string) (int64, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil {
		return n, err
	}
	if res.StatusCode != http.StatusOK {
		return n, fmt.Errorf("status %d", res.StatusCode)
	}
	return n, nil
}
