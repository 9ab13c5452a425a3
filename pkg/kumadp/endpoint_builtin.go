package kumadp

import (
	"log/slog"
	"net/http"
	"regexp"
	"sync/atomic"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/stats"
)

// endpoint serves the proxy's statistics on the metrics path.
type endpoint struct {
	st  *stats.Store
	cfg atomic.Pointer[endpointCfg]
}

type endpointCfg struct {
	path string
	opts stats.RenderOptions
}

func newEndpoint(st *stats.Store, _ *slog.Logger) (*endpoint, error) { return &endpoint{st: st}, nil }

func (e *endpoint) update(cfg *meshv1.Metrics, _ string) error {
	c := &endpointCfg{path: cfg.GetPath(), opts: stats.RenderOptions{UsedOnly: cfg.GetUsedOnly()}}
	if cfg.GetFilterRegex() != "" {
		re, err := regexp.Compile(cfg.GetFilterRegex())
		if err != nil {
			return err
		}
		c.opts.Filter = re
	}
	e.cfg.Store(c)
	return nil
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := e.cfg.Load()
	if c == nil || r.URL.Path != c.path {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", stats.FormatPrometheus.ContentType())
	_ = e.st.Write(w, stats.FormatPrometheus, c.opts)
}
