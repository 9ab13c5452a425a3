package kumadp

import (
	"io/fs"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParseCgroupLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
		err  string
	}{
		{in: "536870912\n", want: 536870912, ok: true},
		{in: "max\n"},
		{in: "9223372036854771712\n"}, // v1 without a limit
		{in: "lots", err: `memory.max: not a number of bytes or "max": "lots"`},
		{in: "-1", err: "not a number of bytes"},
	} {
		n, ok, err := parseCgroupLimit("memory.max", []byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || n != tc.want || ok != tc.ok {
			t.Errorf("%q: %d %v %v, want %d %v", tc.in, n, ok, err, tc.want, tc.ok)
		}
	}
}

func files(m map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if v, ok := m[name]; ok {
			return []byte(v), nil
		}
		return nil, fs.ErrNotExist
	}
}

func noEnv(string) (string, bool) { return "", false }

// The soft limit is 90% of the container's (v2, else v1), none without a
// container limit, and GOMEMLIMIT wins.
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	log := slog.New(slog.DiscardHandler)

	if got := applyMemoryLimit(log, noEnv, files(map[string]string{"/sys/fs/cgroup/memory.max": "1000000000\n"})); got != 900000000 || debug.SetMemoryLimit(-1) != 900000000 {
		t.Fatalf("v2: limit %d, runtime %d, want 900000000", got, debug.SetMemoryLimit(-1))
	}
	debug.SetMemoryLimit(math.MaxInt64)
	if got := applyMemoryLimit(log, noEnv, files(map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "200000000"})); got != 180000000 || debug.SetMemoryLimit(-1) != 180000000 {
		t.Fatalf("v1: limit %d, runtime %d, want 180000000", got, debug.SetMemoryLimit(-1))
	}
	debug.SetMemoryLimit(math.MaxInt64)
	for name, read := range map[string]func(string) ([]byte, error){
		"no cgroup files": files(nil),
		"v2 max":          files(map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}),
		"v1 unlimited":    files(map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"}),
		"unreadable":      files(map[string]string{"/sys/fs/cgroup/memory.max": "lots"}),
	} {
		if got := applyMemoryLimit(log, noEnv, read); got != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
			t.Errorf("%s: limit %d, runtime %d, want none", name, got, debug.SetMemoryLimit(-1))
		}
	}
	withEnv := func(k string) (string, bool) { return "64MiB", k == "GOMEMLIMIT" }
	if got := applyMemoryLimit(log, withEnv, files(map[string]string{"/sys/fs/cgroup/memory.max": "1000000000"})); got != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT set: limit %d, runtime %d, want the runtime's own", got, debug.SetMemoryLimit(-1))
	}
}

func TestApplyGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	log := slog.New(slog.DiscardHandler)
	if got := applyGCPercent(log, noEnv); got != 50 || debug.SetGCPercent(100) != 50 {
		t.Fatalf("no GOGC: set %d, want 50", got)
	}
	withEnv := func(k string) (string, bool) { return "200", k == "GOGC" }
	if got := applyGCPercent(log, withEnv); got != 0 || debug.SetGCPercent(100) != 100 {
		t.Fatalf("GOGC set: set %d, want the environment's kept", got)
	}
}
