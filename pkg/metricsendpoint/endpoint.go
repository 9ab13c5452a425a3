package metricsendpoint

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
)

// Defaults of Options and Config.
const (
	// DefaultScrapeTimeout bounds the application scrapes when the scraper
	// sends no X-Prometheus-Scrape-Timeout-Seconds (Prometheus' default
	// scrape_timeout).
	DefaultScrapeTimeout = 10 * time.Second
	// DefaultMaxApplicationBytes is the largest (decompressed) application
	// answer that is merged.
	DefaultMaxApplicationBytes = 16 << 20
	// DefaultAppAddress is where applications are scraped when neither the
	// aggregate entry nor Config.DefaultAppAddress names an address.
	DefaultAppAddress = "127.0.0.1"
)

// maxFilterLen bounds the filter query parameter.
const maxFilterLen = 4096

// Config is what the endpoint serves. The proxy core derives it from the
// dataplane's effective metrics configuration (see ConfigFromEffective).
type Config struct {
	// Path is the only path served, e.g. /metrics; other paths get 404.
	Path string
	// FilterRegex is the mesh's envoy.filterRegex ("" = none), matched
	// (unanchored) against the Envoy dotted names of the proxy's statistics.
	FilterRegex string
	// UsedOnly is the mesh's envoy.usedOnly.
	UsedOnly bool
	// Aggregate lists the applications whose metrics are merged. An empty
	// Address means DefaultAppAddress; an empty Path means /metrics.
	Aggregate []resource.AggregateEndpoint
	// DefaultAppAddress is where the workload listens ("" = 127.0.0.1).
	DefaultAppAddress string
}

// ConfigFromEffective returns the Config for a dataplane's effective metrics
// configuration; appAddress is where its workload listens ("" = 127.0.0.1).
func ConfigFromEffective(m resource.EffectiveMetrics, appAddress string) Config {
	return Config{
		Path:              m.Path,
		FilterRegex:       m.FilterRegex,
		UsedOnly:          m.UsedOnly,
		Aggregate:         slices.Clone(m.Aggregate),
		DefaultAppAddress: appAddress,
	}
}

// Options are the endpoint's dependencies and limits. The zero value is
// usable.
type Options struct {
	// Log receives the endpoint's log lines; nil discards them.
	Log *slog.Logger
	// Client scrapes the applications. nil means an own client that uses no
	// proxy, keeps a few idle connections per application and follows
	// redirects; Close releases its idle connections. (The endpoint sets
	// Accept-Encoding itself and decompresses what it gets, so the size
	// limit applies to the decompressed answer whatever the client.)
	Client *http.Client
	// Now is the clock for scrape durations; nil means time.Now. Deadlines
	// always use the real clock.
	Now func() time.Time
	// DefaultScrapeTimeout applies when a scrape carries no valid
	// X-Prometheus-Scrape-Timeout-Seconds header; 0 means
	// DefaultScrapeTimeout.
	DefaultScrapeTimeout time.Duration
	// MaxApplicationBytes is the largest decompressed application answer;
	// 0 means DefaultMaxApplicationBytes.
	MaxApplicationBytes int64
}

// Endpoint is the metrics endpoint's http.Handler. Its methods are safe for
// concurrent use.
type Endpoint struct {
	store          *stats.Store
	log            *slog.Logger
	client         *http.Client
	ownTransport   *http.Transport // closed by Close; nil with Options.Client
	now            func() time.Time
	defaultTimeout time.Duration
	maxBody        int64

	cfg atomic.Pointer[config]

	// Caches derived from the store's view, keyed by its generation.
	proxyNames atomic.Pointer[proxyFamilies]
	// Compiled ?filter= expressions.
	queryFilters queryFilters

	mu     sync.Mutex // serializes Update and Close
	states map[string]*appState
	closed bool
}

// config is a validated, compiled Config. It is immutable once published.
type config struct {
	path     string
	filter   *regexp.Regexp
	usedOnly bool
	apps     []*app // sorted by name
}

// app is one application endpoint of a config.
type app struct {
	name   string
	url    string
	prefix string // prefix of renamed families: sanitized name + "_"
	st     *appState
}

// New returns an endpoint that serves store's statistics on
// resource.DefaultMetricsPath until the first Update.
func New(store *stats.Store, opts Options) (*Endpoint, error) {
	if store == nil {
		return nil, errors.New("metricsendpoint: nil stats store")
	}
	if opts.DefaultScrapeTimeout < 0 {
		return nil, fmt.Errorf("metricsendpoint: negative default scrape timeout %v", opts.DefaultScrapeTimeout)
	}
	if opts.MaxApplicationBytes < 0 {
		return nil, fmt.Errorf("metricsendpoint: negative application size limit %d", opts.MaxApplicationBytes)
	}
	e := &Endpoint{
		store:          store,
		log:            opts.Log,
		client:         opts.Client,
		now:            opts.Now,
		defaultTimeout: opts.DefaultScrapeTimeout,
		maxBody:        opts.MaxApplicationBytes,
		states:         make(map[string]*appState),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.defaultTimeout == 0 {
		e.defaultTimeout = DefaultScrapeTimeout
	}
	if e.maxBody == 0 {
		e.maxBody = DefaultMaxApplicationBytes
	}
	if e.client == nil {
		e.ownTransport = &http.Transport{
			Proxy: nil, // applications are local; never go through HTTP_PROXY
			DialContext: (&net.Dialer{
				Timeout:   5 * time.Second, // the scrape deadline usually comes first
				KeepAlive: 30 * time.Second,
			}).DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // Accept-Encoding is set and handled here
		}
		e.client = &http.Client{Transport: e.ownTransport}
	}
	e.cfg.Store(&config{path: resource.DefaultMetricsPath})
	return e, nil
}

// Update validates cfg and, if it is valid, makes it the served config at
// once; scrapes in flight finish on the previous one. The statistics of
// applications that stay keep counting; those of removed applications are
// removed from the store. On error nothing changes.
func (e *Endpoint) Update(cfg Config) error {
	p, err := Prepare(cfg)
	if err != nil {
		return err
	}
	return e.Commit(p)
}

// Prepared is a validated, compiled Config, ready for Commit.
type Prepared struct{ c *config }

// Prepare validates and compiles cfg (its filter, its applications'
// addresses) without serving it.
func Prepare(cfg Config) (*Prepared, error) {
	c, err := compile(cfg)
	if err != nil {
		return nil, fmt.Errorf("metricsendpoint: %w", err)
	}
	return &Prepared{c: c}, nil
}

// Commit makes a prepared config the served one, as Update does. It fails
// only after Close. A Prepared is committed once.
func (e *Endpoint) Commit(p *Prepared) error {
	c := p.c
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("metricsendpoint: update after Close")
	}
	states := make(map[string]*appState, len(c.apps))
	e.store.Batch(func() {
		for _, a := range c.apps {
			st := e.states[a.name]
			if st == nil {
				st = newAppState(e.store, a.name)
			}
			a.st = st
			states[a.name] = st
		}
		for name, st := range e.states {
			if _, ok := states[name]; !ok {
				st.release()
			}
		}
	})
	e.states = states
	e.cfg.Store(c)
	return nil
}

// Close removes the applications' statistics from the store and releases the
// idle connections of the endpoint's own HTTP client. The endpoint keeps
// serving the proxy's statistics; Update fails after Close.
func (e *Endpoint) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	e.store.Batch(func() {
		for _, st := range e.states {
			st.release()
		}
	})
	e.states = nil
	if e.ownTransport != nil {
		e.ownTransport.CloseIdleConnections()
	}
}

func compile(cfg Config) (*config, error) {
	if !strings.HasPrefix(cfg.Path, "/") {
		return nil, fmt.Errorf("path %q: must start with /", cfg.Path)
	}
	c := &config{path: cfg.Path, usedOnly: cfg.UsedOnly}
	if cfg.FilterRegex != "" {
		re, err := regexp.Compile(cfg.FilterRegex)
		if err != nil {
			return nil, fmt.Errorf("filterRegex: %w", err)
		}
		c.filter = re
	}
	defAddr := cfg.DefaultAppAddress
	if defAddr == "" {
		defAddr = DefaultAppAddress
	}
	seen := make(map[string]bool, len(cfg.Aggregate))
	for i, a := range cfg.Aggregate {
		if a.Name == "" {
			return nil, fmt.Errorf("aggregate[%d]: empty name", i)
		}
		if seen[a.Name] {
			return nil, fmt.Errorf("aggregate[%d]: duplicate name %q", i, a.Name)
		}
		seen[a.Name] = true
		if a.Port == 0 || a.Port > 65535 {
			return nil, fmt.Errorf("aggregate %q: port %d must be in the range 1-65535", a.Name, a.Port)
		}
		addr := a.Address
		if addr == "" {
			addr = defAddr
		}
		path := a.Path
		if path == "" {
			path = resource.DefaultAggregatePath
		}
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("aggregate %q: path %q must start with /", a.Name, path)
		}
		raw := "http://" + net.JoinHostPort(addr, strconv.FormatUint(uint64(a.Port), 10)) + path
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("aggregate %q: %w", a.Name, err)
		}
		c.apps = append(c.apps, &app{name: a.Name, url: u.String(), prefix: sanitizeName(a.Name) + "_"})
	}
	slices.SortFunc(c.apps, func(a, b *app) int { return strings.Compare(a.name, b.name) })
	return c, nil
}

// sanitizeName makes s usable as a metric name prefix: every character
// outside [a-zA-Z0-9_] becomes '_', and a leading digit gets a '_' before it.
func sanitizeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		return "_" + string(b)
	}
	return string(b)
}

// ServeHTTP answers a scrape.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := e.cfg.Load()
	if r.URL.Path != cfg.path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	query := r.URL.Query()
	var queryFilter *regexp.Regexp
	if f := query.Get("filter"); f != "" {
		if len(f) > maxFilterLen {
			http.Error(w, fmt.Sprintf("invalid filter parameter: longer than %d bytes", maxFilterLen), http.StatusBadRequest)
			return
		}
		re, err := e.queryFilters.compile(f)
		if err != nil {
			http.Error(w, "invalid filter parameter: "+err.Error(), http.StatusBadRequest)
			return
		}
		queryFilter = re
	}
	_, usedOnly := query["usedonly"]

	format, contentType := negotiate(r.Header.Get("Accept"))
	compress := acceptsGzip(r.Header.Values("Accept-Encoding"))
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Vary", "Accept, Accept-Encoding")
	if compress {
		h.Set("Content-Encoding", "gzip")
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}

	// Start the applications first: they are scraped while the proxy's
	// statistics are rendered.
	var agg *aggregation
	if len(cfg.apps) > 0 {
		agg = e.startAggregation(r, cfg.apps)
		defer agg.cancel()
	}

	var out io.Writer = w
	if compress {
		zw := gzipWriters.Get().(*gzip.Writer)
		zw.Reset(w)
		defer func() {
			_ = zw.Close() // flushes; an error means the scraper is gone
			zw.Reset(nil)
			gzipWriters.Put(zw)
		}()
		out = zw
	}
	om := format == stats.FormatOpenMetrics
	var body io.Writer = out
	var strip *eofStripper
	if om {
		// The store ends its OpenMetrics output with # EOF; the
		// applications come after it, so the line is held back and written
		// once at the very end.
		strip = &eofStripper{w: out}
		body = strip
	}

	ro := stats.RenderOptions{UsedOnly: cfg.usedOnly || usedOnly}
	ro.Filter = cfg.filter
	if queryFilter != nil {
		// The scrape's filter narrows the configured one: both must match.
		ro.Filter, ro.AlsoFilter = queryFilter, cfg.filter
	}
	err := e.store.Write(body, format, ro)
	if err == nil && strip != nil {
		err = strip.Finish()
	}
	if err != nil {
		return // the scraper is gone
	}
	if agg != nil {
		results, ok := agg.wait()
		if !ok {
			return // the scraper gave up
		}
		if err := e.writeApplications(out, om, cfg.apps, results, queryFilter); err != nil {
			return
		}
	}
	if om {
		_, _ = io.WriteString(out, "# EOF\n")
	}
}

var gzipWriters = sync.Pool{New: func() any {
	zw, err := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	if err != nil {
		panic(err) // BestSpeed is a valid level
	}
	return zw
}}
