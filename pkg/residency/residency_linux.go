package residency

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DropStartupPages unmaps the read-only pages of the running executable
// (madvise MADV_DONTNEED: for a private file mapping never written, the
// next access maps the page cache's page again). It returns the bytes of
// the segments it advised.
func DropStartupPages() (int, error) {
	exe, err := executable()
	if err != nil {
		return 0, fmt.Errorf("residency: executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("residency: %w", err)
	}
	defer f.Close()
	segs, err := ExecutableSegments(f, exe)
	if err != nil {
		return 0, fmt.Errorf("residency: %w", err)
	}
	total := 0
	for _, s := range segs {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.Start, s.End-s.Start, unix.MADV_DONTNEED); errno != 0 {
			return total, fmt.Errorf("residency: madvise %x-%x %s: %w", s.Start, s.End, s.Perms, errno)
		}
		total += int(s.End - s.Start)
	}
	return total, nil
}
