package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/kumametrics/mesh/internal/testproc"
)

// h2specPasses lists the h2spec cases the HTTP/2 engine passes; any engine
// must pass at least these.
const h2specPasses = "testdata/h2spec-passes.txt"

var (
	updateH2Spec  = flag.Bool("h2spec.update", false, "rewrite "+h2specPasses+" with the h2spec cases that pass now")
	verboseH2Spec = flag.Bool("h2spec.verbose", false, "log h2spec's output with every frame it sent and received")
)

// h2specReport is the part of h2spec's JUnit report the test reads: one
// suite per section (package is the section's id, "http2/6.5.3"), its cases
// in the order h2spec numbers them (from 1).
type h2specReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Desc    string      `xml:"classname,attr"`
			Failure *h2specText `xml:"failure"`
			Error   *h2specText `xml:"error"`
			Skipped *h2specText `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// h2specText is what h2spec says of a case that did not pass.
type h2specText struct {
	Text string `xml:",chardata"`
}

// h2specCase is one case's outcome: id as h2spec names it on its command
// line ("http2/6.5.3/1").
type h2specCase struct {
	id, desc string
	passed   bool
	why      string // what h2spec expected and got, when it did not pass
}

// TestH2SpecConformance runs h2spec (KUMA_TEST_H2SPEC, built by
// `make h2spec-bin`) against an http2 outbound whose backend answers every
// request 200 with a small body: every case in testdata/h2spec-passes.txt
// must pass; the failing ones are printed.
func TestH2SpecConformance(t *testing.T) {
	bin := os.Getenv("KUMA_TEST_H2SPEC")
	if bin == "" {
		testproc.SkipOrFail(t, "KUMA_TEST_H2SPEC is not set: make h2spec-bin builds h2spec, export its path")
	}
	if _, err := os.Stat(bin); err != nil {
		testproc.SkipOrFail(t, "KUMA_TEST_H2SPEC: %v", err)
	}
	leaveNoGoroutines(t)
	backend := h2cBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello from the backend\n")
	}))
	_, _, proxy := protocolOutbound(t, "http2", backend)
	host, port := hostPort(t, proxy)

	cases := runH2Spec(t, bin, host, port)
	require.NotEmpty(t, cases, "h2spec reported no case")

	var passed, failed []string
	for _, c := range cases {
		if c.passed {
			passed = append(passed, c.id)
		} else {
			failed = append(failed, c.id)
			t.Logf("h2spec fails %s: %s\n%s", c.id, c.desc, c.why)
		}
	}
	t.Logf("h2spec: %d cases, %d pass, %d fail", len(cases), len(passed), len(failed))

	if *updateH2Spec {
		writeH2SpecPasses(t, cases)
		return
	}
	want := readH2SpecPasses(t)
	var regressed []string
	for _, id := range want {
		if !slices.Contains(passed, id) {
			regressed = append(regressed, id)
		}
	}
	require.Empty(t, regressed, "cases of %s that no longer pass (see the log for what each checks)", h2specPasses)
	for _, id := range passed {
		if !slices.Contains(want, id) {
			t.Logf("h2spec passes %s, not yet in %s (go test -run TestH2SpecConformance -h2spec.update)", id, h2specPasses)
		}
	}
}

// runH2Spec runs every h2spec case (h2c: no -t) against host:port and
// returns the outcomes from its JUnit report.
func runH2Spec(t *testing.T, bin, host string, port uint32) []h2specCase {
	t.Helper()
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	// Each case waits at most 3 s for what it expects (a failing case
	// waits that long). Not less: net/http's server closes a connection 1 s
	// after its GOAWAY for a connection error, and the cases that expect the
	// close must see it under -race on loaded cores. The run takes ~15 s.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-h", host, "-p", fmt.Sprint(port), "-o", "3", "-j", report)
	if *verboseH2Spec {
		cmd.Args = append(cmd.Args, "-v")
	}
	var out bytes.Buffer
	defer func() {
		if *verboseH2Spec {
			t.Logf("h2spec's output:\n%s", out.String())
		}
	}()
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, testproc.StartCmd(cmd), "start h2spec")
	t.Cleanup(testproc.StopSpawner) // its thread, once h2spec is gone
	// h2spec exits 1 when a case fails; its report tells which.
	runErr := cmd.Wait()
	data, err := os.ReadFile(report)
	require.NoError(t, err, "h2spec wrote no report (%v); its output:\n%s", runErr, out.String())

	var r h2specReport
	require.NoError(t, xml.Unmarshal(data, &r), "h2spec's report")
	var cases []h2specCase
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			hc := h2specCase{id: fmt.Sprintf("%s/%d", s.Package, i+1), desc: c.Desc, passed: true}
			for _, bad := range []*h2specText{c.Failure, c.Error, c.Skipped} {
				if bad != nil {
					hc.passed, hc.why = false, strings.TrimSpace(bad.Text)
				}
			}
			cases = append(cases, hc)
		}
	}
	return cases
}

// leaveNoGoroutines makes t wait, when it ends, until the goroutines it
// started are gone: an HTTP/2 server that sent GOAWAY for a protocol error
// keeps its connection's goroutine for up to a second after the connection
// closed, and the package's leak check (TestMain) runs right after the
// last test. Call it before anything the test starts.
func leaveNoGoroutines(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitTimeout)
		for {
			err := goleak.Find(before)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("goroutines left behind: %v", err)
			}
			time.Sleep(10 * time.Millisecond) // polling: nothing to wait on
		}
	})
}

func readH2SpecPasses(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(h2specPasses)
	require.NoError(t, err)
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ids = append(ids, line)
	}
	require.NoError(t, sc.Err(), h2specPasses)
	return ids
}

// writeH2SpecPasses writes the list of passing cases, with the failing
// ones as comments for the reader.
func writeH2SpecPasses(t *testing.T, cases []h2specCase) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`# The h2spec (v2.2.1) cases the proxy's http2 outbound passes: each must
# keep passing (TestH2SpecConformance). Written by
#   KUMA_TEST_H2SPEC=$(./scripts/h2spec-tool.sh | tail -n 1) \
#     go test -run TestH2SpecConformance ./pkg/proxy/ -h2spec.update
# against the engine of the time (pkg/proxy/h2: every case; net/http's
# HTTP/2 server and Transport before it passed 141 of the 145);
# a case an engine newly passes is added the same way. One case id a line,
# as h2spec takes them on its command line.
`)
	header := "#\n# Not passing then:\n"
	for _, c := range cases {
		if !c.passed {
			fmt.Fprintf(&b, "%s#   %s %s\n", header, c.id, c.desc)
			header = ""
		}
	}
	for _, c := range cases {
		if c.passed {
			b.WriteString(c.id + "\n")
		}
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(h2specPasses), 0o755))
	require.NoError(t, os.WriteFile(h2specPasses, []byte(b.String()), 0o644))
}
