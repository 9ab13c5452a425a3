package diagnostics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type pinger struct{}

func (pinger) Ping(context.Context) error { return nil }

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestProfilerOnlyWhenAsked(t *testing.T) {
	off := Handler(pinger{}, prometheus.NewRegistry(), false)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if code, _ := get(t, off, path); code != http.StatusNotFound {
			t.Errorf("debug off: GET %s = %d, want 404", path, code)
		}
	}
	if code, _ := get(t, off, "/healthy"); code != http.StatusOK {
		t.Errorf("GET /healthy = %d", code)
	}

	on := Handler(pinger{}, prometheus.NewRegistry(), true)
	code, body := get(t, on, "/debug/pprof/")
	if code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("debug on: GET /debug/pprof/ = %d %q", code, body)
	}
	code, body = get(t, on, "/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("debug on: GET /debug/pprof/goroutine = %d %.100q", code, body)
	}
	if code, _ := get(t, on, "/ready"); code != http.StatusOK {
		t.Errorf("GET /ready = %d", code)
	}
}
