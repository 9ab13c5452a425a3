package kumadp

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// The Go runtime's memory policy of kuma-dp (docs/2026-12-06-kuma-dp-memory.md,
// docs/2026-12-07-kuma-dp-gogc.md): GOGC 50 unless GOGC is in the
// environment. The HTTP/2 engine allocates a stream and its HEADERS frames
// per request (~0.5 KB): under load the heap then cycles up to its goal,
// live heap × (1 + GOGC/100) with a floor of 4 MB × GOGC/100, and the
// process holds what the goal holds. At 50 a proxy under HTTP/2 load held
// 1.8 MB (11%) less, for 1-4% more CPU per request (bench/proxies.sh, same
// rounds); the TCP and HTTP/1.1 paths allocate nothing per request, and a
// settled proxy's heap is its live config (bench/dprss moved under 3%
// between 50 and 200). The soft memory limit is 90% of the container's
// memory limit, so that near it the collector works harder instead of the
// kernel killing the proxy; GOMEMLIMIT in the environment wins.

// gcPercent is kuma-dp's GOGC when the environment sets none.
const gcPercent = 50

// applyGCPercent sets GOGC to gcPercent unless GOGC is set; it returns the
// value set (0: the environment's kept).
func applyGCPercent(log *slog.Logger, lookupEnv func(string) (string, bool)) int {
	if v, ok := lookupEnv("GOGC"); ok && v != "" {
		log.Debug("GC percent from GOGC", "GOGC", v)
		return 0
	}
	debug.SetGCPercent(gcPercent)
	return gcPercent
}

// cgroupMemoryFiles are where a container's memory limit is read: cgroup
// v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// memoryLimitShare is the part of the container's limit given to the Go
// runtime as its soft limit (the rest: stacks outside the heap's
// accounting, the executable's pages, kernel buffers charged to the cgroup).
const memoryLimitShare = 0.9

// parseCgroupLimit reads a cgroup memory limit file's content: a number of
// bytes, or "max" (v2) / a value near 2^63 (v1) for none.
func parseCgroupLimit(file string, b []byte) (int64, bool, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false, fmt.Errorf("%s: not a number of bytes or \"max\": %q", file, s)
	}
	if n >= math.MaxInt64/2 { // v1's "unlimited": the largest page multiple
		return 0, false, nil
	}
	return n, true, nil
}

// containerMemoryLimit is the first limit found in cgroupMemoryFiles, and
// the file it came from.
func containerMemoryLimit(read func(string) ([]byte, error)) (int64, string, error) {
	for _, file := range cgroupMemoryFiles {
		b, err := read(file)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, file, err
		}
		n, ok, err := parseCgroupLimit(file, b)
		if err != nil || !ok {
			return 0, file, err
		}
		return n, file, nil
	}
	return 0, "", nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit from the
// container's limit unless GOMEMLIMIT is set; it returns the limit set (0:
// none).
func applyMemoryLimit(log *slog.Logger, lookupEnv func(string) (string, bool), read func(string) ([]byte, error)) int64 {
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		log.Debug("memory limit from GOMEMLIMIT", "GOMEMLIMIT", v)
		return 0
	}
	n, file, err := containerMemoryLimit(read)
	if err != nil {
		log.Warn("could not read the container's memory limit; no soft memory limit", "err", err)
		return 0
	}
	if n == 0 {
		return 0
	}
	limit := int64(float64(n) * memoryLimitShare)
	debug.SetMemoryLimit(limit)
	log.Info("soft memory limit set from the container's", "limit_bytes", limit, "container_limit_bytes", n, "from", file)
	return limit
}
