// Package residency keeps a long-running process's resident set to what it
// uses: once started, it unmaps the pages of the process's own executable
// that starting touched (package initialisers, flag and config parsing),
// leaving the kernel to map back, on first use, the code the process runs
// from then on.
//
// Why: a Go binary's initialisers are scattered over its whole text, and the
// kernel maps file pages around every fault (fault-around, 64 KiB), so a
// started kuma-dp has ~16 MB of its 27 MB binary mapped although it runs a
// few MB of it. Those pages are clean, shared with every other process
// running the binary and reclaimable; only the process's count (VmRSS,
// RssFile) includes them. Dropping the mappings changes no memory the
// process owns: the page cache keeps the pages, and a fault maps one back.
package residency

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Segment is a read-only mapping of the executable.
type Segment struct {
	Start, End uintptr
	Perms      string
}

// ExecutableSegments parses /proc/self/maps-formatted text and returns the
// mappings of file exe that are never written: read-only and private
// (r--p, r-xp). Writable mappings are left out: dropping them would lose
// the process's data.
func ExecutableSegments(maps io.Reader, exe string) ([]Segment, error) {
	var segs []Segment
	sc := bufio.NewScanner(maps)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != exe {
			continue
		}
		if f[1] != "r--p" && f[1] != "r-xp" {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps line %d: address range %q", line, f[0])
		}
		start, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("maps line %d: start %q: %w", line, lo, err)
		}
		end, err := strconv.ParseUint(hi, 16, 64)
		if err != nil || end <= start {
			return nil, fmt.Errorf("maps line %d: end %q", line, hi)
		}
		segs = append(segs, Segment{Start: uintptr(start), End: uintptr(end), Perms: f[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("maps: %w", err)
	}
	return segs, nil
}

// executable is the path the kernel shows in /proc/self/maps for the
// running binary.
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(exe)
}
