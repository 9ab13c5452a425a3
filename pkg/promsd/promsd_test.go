package promsd

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for a condition; conditions are polled, so
// passing tests never wait this long.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds or waitTimeout passes, and fails the test
// with what in the latter case.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// poll reports whether cond holds within waitTimeout, checking it every few
// milliseconds.
func poll(cond func() bool) bool {
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// logBuffer is a concurrency-safe io.Writer that keeps every log line and
// echoes it to the test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines that contain every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func newTestLogger(t testing.TB) (*slog.Logger, *logBuffer) {
	buf := &logBuffer{t: t}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

type target struct {
	name, scheme, address, path string
	labels                      map[string]string
}

func assignment(mesh, service string, labels map[string]string, targets ...target) *observabilityv1.MonitoringAssignment {
	a := &observabilityv1.MonitoringAssignment{Mesh: mesh, Service: service, Labels: labels}
	for _, t := range targets {
		a.Targets = append(a.Targets, &observabilityv1.MonitoringAssignment_Target{
			Name: t.name, Scheme: t.scheme, Address: t.address, MetricsPath: t.path, Labels: t.labels,
		})
	}
	return a
}

// dataplane is the assignment the control plane makes for one dataplane.
func dataplane(mesh, name, address, service string) *observabilityv1.MonitoringAssignment {
	return assignment(mesh, service, nil, target{
		name: name, scheme: "http", address: address, path: "/metrics",
		labels: map[string]string{"kuma_io_service": service, "kuma_io_services": "," + service + ","},
	})
}
