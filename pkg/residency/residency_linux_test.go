package residency

import (
	_ "embed"
	"encoding/binary"
	"os"
	"testing"
	"unsafe"
)

// cold is 1 MiB of the executable's read-only data that nothing but this
// test reads.
//
//go:embed testdata/cold.bin
var cold string

// residentPages counts the pages of [start, end) mapped in this process,
// from /proc/self/pagemap (bit 63: present), without touching them.
func residentPages(t *testing.T, start, end uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	first, last := start/page, (end-1)/page
	buf := make([]byte, 8*(last-first+1))
	if _, err := f.ReadAt(buf, int64(first*8)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; i < len(buf); i += 8 {
		if binary.LittleEndian.Uint64(buf[i:])>>63 == 1 {
			n++
		}
	}
	return n
}

// Pages of the executable that start-up read are unmapped, and the process
// goes on reading its executable (this test's own code and data).
func TestDropStartupPagesUnmapsTheExecutable(t *testing.T) {
	start := uintptr(unsafe.Pointer(unsafe.StringData(cold)))
	end := start + uintptr(len(cold))
	exe, err := executable()
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	segs, err := ExecutableSegments(maps, exe)
	maps.Close()
	if err != nil {
		t.Fatal(err)
	}
	inside := false
	for _, s := range segs {
		inside = inside || s.Start <= start && end <= s.End
	}
	if !inside {
		t.Fatalf("the embedded data %x-%x is in none of the read-only segments %+v", start, end, segs)
	}
	sum := 0
	for i := 0; i < len(cold); i += 512 {
		sum += int(cold[i]) // start-up, reading it all
	}
	pages := residentPages(t, start, end)
	if total := len(cold) / os.Getpagesize(); pages < total*9/10 {
		t.Fatalf("%d of %d pages resident after reading them all", pages, total)
	}
	n, err := DropStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	if n < len(cold) {
		t.Fatalf("advised %d bytes, fewer than the embedded data", n)
	}
	// Fault-around may map back the 64 KiB windows at its two ends.
	if after := residentPages(t, start, end); after > pages/4 {
		t.Fatalf("%d of the embedded data's %d pages still resident after the drop", after, pages)
	}
	if sum == 0 {
		t.Fatal("the embedded data is all zeros")
	}
}
