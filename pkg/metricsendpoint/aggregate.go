package metricsendpoint

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/kumametrics/mesh/pkg/stats"
)

// reason is why an application was left out of a scrape.
type reason uint8

const (
	reasonTimeout reason = iota
	reasonConnect
	reasonStatus
	reasonParse
	reasonTooLarge
	numReasons

	// reasonCanceled: the scraper went away; not counted, not logged.
	reasonCanceled = numReasons
)

var reasonNames = [numReasons]string{"timeout", "connect", "status", "parse", "too_large"}

func (r reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "canceled"
}

// appAccept is what the applications are asked for.
const appAccept = "text/plain;version=0.0.4"

// appState is what outlives one config for an application of the same
// name: its statistics, its last outcome and the family names it claims.
type appState struct {
	name     string
	scope    *stats.Scope
	scrapes  *stats.Counter
	errs     [numReasons]*stats.Counter
	dropped  *stats.Counter
	renamed  *stats.Counter
	duration *stats.Histogram
	up       *stats.Gauge

	// outcome is the last recorded outcome (outcome* constants, or
	// outcomeFailed+reason, with outcomeWarned set when that transition was
	// logged at warning level).
	outcome atomic.Int32
	// warned has bit r set once a failure of reason r was logged at warning
	// level.
	warned atomic.Uint32
	// claims are the names (all names occupied, see reservedNames) of the
	// families of the application's last successful answer, as emitted.
	claims atomic.Pointer[nameSet]

	logMu          sync.Mutex
	loggedFamilies map[string]struct{} // "action family" logged once
}

const (
	outcomeNone   = 0
	outcomeOK     = 1
	outcomeFailed = 2 // + reason
	outcomeWarned = 0x100
	// maxLoggedFamilies bounds the memory kept to log each collision once.
	maxLoggedFamilies = 1000
)

func newAppState(s *stats.Store, name string) *appState {
	sc := s.NewScope()
	app := stats.Label{Name: "app", Value: name}
	prefix := "metrics.aggregate." + name + "."
	st := &appState{name: name, scope: sc, loggedFamilies: make(map[string]struct{})}
	st.scrapes = sc.Counter(stats.Opts{
		Name:   prefix + "scrapes",
		Family: "kuma_dp_metrics_aggregate_scrapes_total",
		Help:   "Successful scrapes of an application whose metrics are merged into the proxy's endpoint.",
		Labels: []stats.Label{app},
	})
	for r := range numReasons {
		st.errs[r] = sc.Counter(stats.Opts{
			Name:   prefix + "errors." + r.String(),
			Family: "kuma_dp_metrics_aggregate_errors_total",
			Help:   "Scrapes in which an application's metrics were left out, by reason.",
			Labels: []stats.Label{app, {Name: "reason", Value: r.String()}},
		})
	}
	collision := func(action string) *stats.Counter {
		return sc.Counter(stats.Opts{
			Name:   prefix + "collisions." + action,
			Family: "kuma_dp_metrics_aggregate_collisions_total",
			Help:   "Application metric families whose name collided with a proxy family (dropped) or another application's (renamed, or dropped if the new name collided too), counted per scrape.",
			Labels: []stats.Label{app, {Name: "action", Value: action}},
		})
	}
	st.dropped = collision("dropped")
	st.renamed = collision("renamed")
	st.duration = sc.Histogram(stats.Opts{
		Name:   prefix + "scrape_time",
		Family: "kuma_dp_metrics_aggregate_scrape_time",
		Help:   "Duration of the scrapes of an application's metrics endpoint in milliseconds.",
		Labels: []stats.Label{app},
	})
	st.up = sc.Gauge(stats.Opts{
		Name:   prefix + "up",
		Family: "kuma_dp_metrics_aggregate_up",
		Help:   "1 if the last scrape of the application's metrics succeeded, 0 otherwise.",
		Labels: []stats.Label{app},
	})
	sc.Publish()
	return st
}

func (st *appState) release() { st.scope.Release() }

// appResult is the outcome of scraping one application.
type appResult struct {
	idx    int
	fams   []*dto.MetricFamily // validated, sorted by name; nil on failure
	reason reason
	err    error
	dur    time.Duration
}

// aggregation is the application side of one scrape.
type aggregation struct {
	parent  context.Context // the scrape request's
	ctx     context.Context // parent with the scrape budget
	cancel  context.CancelFunc
	budget  time.Duration
	start   time.Time
	now     func() time.Time
	results chan appResult // buffered: late results never block
	n       int
}

// startAggregation scrapes every application in its own goroutine.
func (e *Endpoint) startAggregation(r *http.Request, apps []*app) *aggregation {
	budget := scrapeBudget(r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"), e.defaultTimeout)
	ctx, cancel := context.WithTimeout(r.Context(), budget)
	a := &aggregation{
		parent:  r.Context(),
		ctx:     ctx,
		cancel:  cancel,
		budget:  budget,
		start:   e.now(),
		now:     e.now,
		results: make(chan appResult, len(apps)),
		n:       len(apps),
	}
	for i, ap := range apps {
		go func() { a.results <- e.scrapeApp(ctx, i, ap) }()
	}
	return a
}

// wait collects the results that arrive within the budget. Applications
// that did not answer in time get a timeout result; their goroutines end
// shortly after (the context is canceled) and their late results are
// discarded. It reports false when the scraper went away.
func (a *aggregation) wait() ([]appResult, bool) {
	results := make([]appResult, a.n)
	got := make([]bool, a.n)
	take := func(r appResult) {
		results[r.idx], got[r.idx] = r, true
	}
	for pending := a.n; pending > 0; pending-- {
		select {
		case r := <-a.results:
			take(r)
			continue
		case <-a.ctx.Done():
		}
		// Deadline (or the scraper left): keep what arrived in time.
		for drained := false; !drained; {
			select {
			case r := <-a.results:
				take(r)
			default:
				drained = true
			}
		}
		break
	}
	a.cancel()
	if a.parent.Err() != nil {
		return nil, false
	}
	for i := range results {
		if !got[i] {
			results[i] = appResult{
				idx:    i,
				reason: reasonTimeout,
				err:    fmt.Errorf("no complete answer within the scrape budget of %v", a.budget),
				dur:    a.now().Sub(a.start),
			}
		}
		if results[i].reason == reasonCanceled {
			return nil, false
		}
	}
	return results, true
}

// scrapeApp fetches, parses and validates one application's metrics. It
// never panics: a panic while parsing untrusted input is turned into a
// parse failure.
func (e *Endpoint) scrapeApp(ctx context.Context, idx int, a *app) (res appResult) {
	start := e.now()
	defer func() {
		if p := recover(); p != nil {
			res = appResult{reason: reasonParse, err: fmt.Errorf("panic while reading the answer: %v", p)}
		}
		res.idx = idx
		res.dur = e.now().Sub(start)
		if res.err != nil {
			res.fams = nil
		}
	}()
	fail := func(r reason, err error) appResult {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// Whatever failed, the cause is that time ran out (or the
			// scraper left).
			if errors.Is(ctxErr, context.DeadlineExceeded) {
				return appResult{reason: reasonTimeout, err: err}
			}
			return appResult{reason: reasonCanceled, err: err}
		}
		return appResult{reason: r, err: err}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url, nil)
	if err != nil {
		return fail(reasonConnect, err)
	}
	req.Header.Set("Accept", appAccept)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", "kuma-dp")
	if dl, ok := ctx.Deadline(); ok {
		// Let the application bound its own work, as Prometheus does.
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(time.Until(dl).Seconds(), 'f', 3, 64))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return fail(reasonConnect, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(reasonStatus, fmt.Errorf("HTTP status %s", resp.Status))
	}
	if resp.ContentLength > e.maxBody {
		return fail(reasonTooLarge, fmt.Errorf("answer of %d bytes exceeds the limit of %d", resp.ContentLength, e.maxBody))
	}

	var body io.Reader = resp.Body
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip", "x-gzip":
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		defer gzipReaders.Put(zr)
		if err := zr.Reset(resp.Body); err != nil {
			r := gzipReason(err)
			if errors.Is(err, io.EOF) {
				r = reasonParse // an empty gzip answer
			}
			return fail(r, fmt.Errorf("gzip: %w", err))
		}
		body = zr
	default:
		return fail(reasonParse, fmt.Errorf("unsupported Content-Encoding %q", enc))
	}

	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(body, e.maxBody+1))
	if err != nil {
		return fail(gzipReason(err), fmt.Errorf("reading the answer: %w", err))
	}
	if n > e.maxBody {
		return fail(reasonTooLarge, fmt.Errorf("answer exceeds the limit of %d bytes", e.maxBody))
	}
	fams, err := parseApplication(buf.Bytes(), expfmt.ResponseFormat(resp.Header))
	if err != nil {
		return appResult{reason: reasonParse, err: err}
	}
	return appResult{fams: fams}
}

// gzipReason classifies a read error: corrupt compressed data is the
// application's garbage, anything else (including a truncated answer) a
// broken connection.
func gzipReason(err error) reason {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum) || errors.As(err, &corrupt) {
		return reasonParse
	}
	return reasonConnect
}

var gzipReaders sync.Pool

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBodyBuffer pools buffers up to 1 MiB; a rare huge answer is not kept.
func putBodyBuffer(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 {
		bodyBuffers.Put(b)
	}
}

// recordFailure counts and, on a state change, logs a failed application.
func (e *Endpoint) recordFailure(a *app, res appResult) {
	st := a.st
	st.errs[res.reason].Inc()
	st.up.Set(0)
	st.duration.Observe(res.dur)
	next := int32(outcomeFailed + int(res.reason))
	for {
		prev := st.outcome.Load()
		if prev&^outcomeWarned == next {
			return // same failure as last time: already logged
		}
		bit := uint32(1) << res.reason
		warn := st.warned.Load()&bit == 0
		val := next
		if warn {
			val |= outcomeWarned
		}
		if !st.outcome.CompareAndSwap(prev, val) {
			continue
		}
		if warn {
			st.warned.Or(bit)
			e.log.Warn("application metrics left out of the scrape",
				"app", a.name, "url", a.url, "reason", res.reason.String(), "err", res.err)
		} else {
			e.log.Debug("application metrics left out of the scrape",
				"app", a.name, "url", a.url, "reason", res.reason.String(), "err", res.err)
		}
		return
	}
}

// recordSuccess counts and, on a state change, logs a merged application.
func (e *Endpoint) recordSuccess(a *app, res appResult, dropped, renamed int) {
	st := a.st
	st.scrapes.Inc()
	st.up.Set(1)
	st.duration.Observe(res.dur)
	st.dropped.Add(uint64(dropped))
	st.renamed.Add(uint64(renamed))
	prev := st.outcome.Swap(outcomeOK)
	switch {
	case prev == outcomeOK:
	case prev&outcomeWarned != 0:
		e.log.Info("application metrics merged again", "app", a.name, "url", a.url)
	default:
		e.log.Debug("application metrics merged", "app", a.name, "url", a.url)
	}
}

// logCollisionOnce logs a dropped or renamed family the first time it
// happens for the application.
func (e *Endpoint) logCollisionOnce(a *app, action, family string, attrs ...any) {
	st := a.st
	key := action + " " + family
	st.logMu.Lock()
	_, done := st.loggedFamilies[key]
	full := len(st.loggedFamilies) >= maxLoggedFamilies
	if !done && !full {
		st.loggedFamilies[key] = struct{}{}
	}
	st.logMu.Unlock()
	if done || full {
		return
	}
	args := append([]any{"app", a.name, "family", family}, attrs...)
	if action == "dropped" {
		e.log.Warn("application metric family dropped: its name collides", args...)
	} else {
		e.log.Info("application metric family renamed: its name collides with another application's", args...)
	}
}
