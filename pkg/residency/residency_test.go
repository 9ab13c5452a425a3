package residency

import (
	"strings"
	"testing"
)

const sampleMaps = `00400000-00bcf000 r-xp 00000000 fd:01 123 /opt/kuma/kuma-dp
00bcf000-01555000 r--p 007cf000 fd:01 123 /opt/kuma/kuma-dp
01555000-015d7000 rw-p 01155000 fd:01 123 /opt/kuma/kuma-dp
015d7000-0361e000 rw-p 00000000 00:00 0
7f3d1d112000-7f3d1d268000 r-xp 00026000 fd:01 9 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd3a1e0000-7ffd3a201000 rw-p 00000000 00:00 0                          [stack]
`

// Only the executable's read-only private mappings are picked: dropping a
// written mapping (rw-p) would lose the process's data, and other files
// are not ours to judge.
func TestExecutableSegmentsPicksTheReadOnlyMappingsOfTheExecutable(t *testing.T) {
	segs, err := ExecutableSegments(strings.NewReader(sampleMaps), "/opt/kuma/kuma-dp")
	if err != nil {
		t.Fatal(err)
	}
	want := []Segment{{0x400000, 0xbcf000, "r-xp"}, {0xbcf000, 0x1555000, "r--p"}}
	if len(segs) != len(want) {
		t.Fatalf("segments %+v, want %+v", segs, want)
	}
	for i := range want {
		if segs[i] != want[i] {
			t.Fatalf("segment %d: %+v, want %+v", i, segs[i], want[i])
		}
	}
	if segs, _ := ExecutableSegments(strings.NewReader(sampleMaps), "/other"); len(segs) != 0 {
		t.Fatalf("segments of another file: %+v", segs)
	}
}

func TestExecutableSegmentsNamesTheBadLine(t *testing.T) {
	for _, tc := range []struct{ maps, want string }{
		{"00400000-00bcf000 r-xp 0 fd:01 1 /x\nzz-00bcf000 r--p 0 fd:01 1 /x\n", "maps line 2: start"},
		{"00400000 r-xp 0 fd:01 1 /x\n", "maps line 1: address range"},
		{"00bcf000-00400000 r-xp 0 fd:01 1 /x\n", "maps line 1: end"},
	} {
		_, err := ExecutableSegments(strings.NewReader(tc.maps), "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one with %q", tc.maps, err, tc.want)
		}
	}
}
