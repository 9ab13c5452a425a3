package metricsendpoint_test

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/metricsendpoint"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Scrapes run concurrently with recording, with registration changes in
// the store and with Update; run with -race. Every answer must be complete
// and parse.
func TestConcurrentScrapesRecordingAndUpdates(t *testing.T) {
	t.Parallel()
	s := smallStore(t)
	backend := stats.NewClusterStats(s, "busy")
	a := textApp(t, goodAppBody)
	b := textApp(t, "# TYPE app_queue_length gauge\napp_queue_length 9\n")
	configs := []metricsendpoint.Config{
		appsConfig(map[string]app{"a": a}),
		{Path: "/metrics", FilterRegex: `^cluster\.`, UsedOnly: true},
		appsConfig(map[string]app{"a": a, "b": b}),
		func() metricsendpoint.Config {
			c := appsConfig(map[string]app{"b": b})
			c.FilterRegex = `busy|rbac`
			return c
		}(),
	}
	e := newEndpoint(t, s, configs[0], metricsendpoint.Options{})
	base := serve(t, e)

	const (
		scrapers = 4
		scrapes  = 15
		updates  = 30
	)
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() { // data path, in bursts (the machine may have 2 cores)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for k := range 16 {
				backend.RequestDone(200+(i+k)%400, time.Duration(k)*time.Millisecond, k%2 == 0)
			}
			runtime.Gosched()
		}
	})
	bg.Go(func() { // config path: Update and registration churn
		for i := range updates {
			select {
			case <-stop:
				return
			default:
			}
			if err := e.Update(configs[i%len(configs)]); err != nil {
				t.Error(err)
				return
			}
			churn := stats.NewClusterStats(s, "churn")
			churn.RequestDone(200, time.Millisecond, true)
			churn.Release()
		}
	})

	// Parallel subtests, so that a failing scrape may stop its goroutine.
	t.Run("scrapers", func(t *testing.T) {
		for i := range scrapers {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				c := scraper(t)
				for j := range scrapes {
					accept, query := "text/plain", ""
					if (i+j)%2 == 0 {
						accept = prometheusAccept
					}
					if j%3 == 0 {
						query = "?filter=cluster&usedonly"
					}
					resp := scrape(t, c, http.MethodGet, base+"/metrics"+query, "Accept", accept, "Accept-Encoding", "gzip")
					require.Equal(t, http.StatusOK, resp.status)
					if accept == prometheusAccept {
						// The OpenMetrics answers are checked with the grammar's
						// parser by the format tests; its parser (an ABNF
						// interpreter) takes seconds per answer under -race, so
						// here only their frame is.
						requireUniqueFamilies(t, resp.body)
						require.True(t, strings.HasSuffix(string(resp.body), "\n# EOF\n"))
						require.Equal(t, 1, strings.Count(string(resp.body), "# EOF"))
					} else {
						parseText(t, resp.body)
					}
				}
			})
		}
	})
	close(stop)
	bg.Wait()
}
