// Package cpproc runs a kuma-cp process for the whole-process benchmarks
// and talks to it: a loopback address of its own with the default ports,
// REST writes, readiness, MADS long polls as Prometheus makes them, and the
// memory of a process.
package cpproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/internal/loopback"
)

// ControlPlane is a running kuma-cp.
type ControlPlane struct {
	Cmd     *exec.Cmd
	WorkDir string
	// Host is the loopback address every server listens on (a fresh one,
	// see internal/loopback), each on its default port.
	Host     string
	API      string // http://Host:5681
	MADS     string // http://Host:5676
	DPServer string // https://Host:5678
	Diag     string // http://Host:5680

	removeWorkDir bool
}

// Client is the HTTP client of the benchmarks.
var Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// Start runs binary (kuma-cp) with its data in workDir and extra
// environment (e.g. KUMA_STORE_TYPE=memory), every server on a fresh
// loopback address with its default port, and waits until it is ready.
// Stop it with Stop.
func Start(binary, workDir string, env ...string) (*ControlPlane, error) {
	host := loopback.Host()
	cmd := exec.Command(binary, "run", "--log-level=warn")
	cmd.Env = append(append(os.Environ(),
		"KUMA_GENERAL_WORK_DIR="+workDir,
		"KUMA_API_SERVER_HTTP_INTERFACE="+host, "KUMA_API_SERVER_HTTP_PORT=5681",
		"KUMA_DP_SERVER_INTERFACE="+host, "KUMA_DP_SERVER_PORT=5678",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE="+host, "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=5676",
		"KUMA_DIAGNOSTICS_SERVER_INTERFACE="+host, "KUMA_DIAGNOSTICS_SERVER_PORT=5680",
		// The admission webhook's server, started in Kubernetes mode only.
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS="+host, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT=5443",
		"KUMA_API_SERVER_HTTPS_ENABLED=false",
	), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		Cmd: cmd, WorkDir: workDir, Host: host,
		API:      "http://" + net.JoinHostPort(host, "5681"),
		DPServer: "https://" + net.JoinHostPort(host, "5678"),
		MADS:     "http://" + net.JoinHostPort(host, "5676"),
		Diag:     "http://" + net.JoinHostPort(host, "5680"),
	}
	if err := WaitFor(30*time.Second, func() bool { return Get(cp.Diag+"/ready") == nil }); err != nil {
		cp.Stop()
		return nil, fmt.Errorf("kuma-cp not ready: %w", err)
	}
	return cp, nil
}

// StartTemp is Start in a new temporary work directory, which Stop removes.
func StartTemp(binary string, env ...string) (*ControlPlane, error) {
	dir, err := os.MkdirTemp("", "bench-kuma-cp-")
	if err != nil {
		return nil, err
	}
	cp, err := Start(binary, dir, env...)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cp.removeWorkDir = true
	return cp, nil
}

// CAFile is the dataplane server's CA, for kuma-dp's --ca-cert-file.
func (cp *ControlPlane) CAFile() string { return filepath.Join(cp.WorkDir, "dp-server-ca.pem") }

// Stop kills the process (and removes the work directory StartTemp made).
func (cp *ControlPlane) Stop() {
	_ = cp.Cmd.Process.Kill()
	_ = cp.Cmd.Wait()
	if cp.removeWorkDir {
		_ = os.RemoveAll(cp.WorkDir)
	}
}

// Put writes a resource through the REST API.
func Put(url, body string) error {
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := Client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return fmt.Errorf("PUT %s: %d %s", url, res.StatusCode, b)
	}
	return nil
}

// Get fetches url and expects 200.
func Get(url string) error {
	res, err := Client.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", url, res.StatusCode)
	}
	return nil
}

// WaitFor polls ok until it holds or d passes.
func WaitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// RSS is a process's resident set size, as /proc reports it.
func RSS(pid int) string { return Status(pid, "VmRSS:") }

// PeakRSS is the largest resident set size the process had, as /proc reports it.
func PeakRSS(pid int) string { return Status(pid, "VmHWM:") }

// Status is the value of one line of /proc/PID/status (key with its colon,
// e.g. "RssAnon:"), "?" when it cannot be read.
func Status(pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// FetchMADS long-polls the monitoring assignment server as Prometheus'
// kuma_sd does: a POST naming the version it has (none on the first
// request) with a fetch-timeout. It returns the answer's version and its
// number of assignments (-1 when unchanged within the timeout: 304).
func (cp *ControlPlane) FetchMADS(version string, timeout time.Duration) (string, int, error) {
	a, err := cp.fetchMADS(version, timeout)
	return a.Version, a.Count, err
}

// madsAnswer is one long poll's answer and when it arrived.
type madsAnswer struct {
	Version string
	Count   int
	// Headers is when the response's headers arrived, Read when its whole
	// body had (before it is decoded).
	Headers, Read time.Time
}

func (cp *ControlPlane) fetchMADS(version string, timeout time.Duration) (madsAnswer, error) {
	body := `{"node":{"id":"bench"},"type_url":"type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}`
	if version != "" {
		body = fmt.Sprintf(`{"version_info":%q,"node":{"id":"bench"},"type_url":"type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}`, version)
	}
	res, err := Client.Post(fmt.Sprintf("%s/v3/discovery:monitoringassignments?fetch-timeout=%s", cp.MADS, timeout), "application/json", strings.NewReader(body))
	if err != nil {
		return madsAnswer{}, err
	}
	defer res.Body.Close()
	a := madsAnswer{Version: version, Count: -1, Headers: time.Now()}
	if res.StatusCode == http.StatusNotModified {
		a.Read = a.Headers
		return a, nil
	}
	// Read into a buffer of the announced size: the time is the transfer's,
	// not that of growing a buffer by steps.
	var buf bytes.Buffer
	if res.ContentLength > 0 {
		buf.Grow(int(res.ContentLength))
	}
	_, err = buf.ReadFrom(res.Body)
	b := buf.Bytes()
	a.Read = time.Now()
	if err != nil {
		return madsAnswer{}, fmt.Errorf("MADS answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return madsAnswer{}, fmt.Errorf("MADS: %d %s", res.StatusCode, b)
	}
	var out struct {
		Version   string            `json:"version_info"`
		Resources []json.RawMessage `json:"resources"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return madsAnswer{}, fmt.Errorf("MADS answer: %w", err)
	}
	a.Version, a.Count = out.Version, len(out.Resources)
	return a, nil
}

// HeldLongPolls is mads_server_long_polls_held of the control plane's
// metrics: how many long polls it holds now (0 when unknown).
func (cp *ControlPlane) HeldLongPolls() int {
	res, err := Client.Get(cp.Diag + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "mads_server_long_polls_held") {
			var v float64
			fields := strings.Fields(line)
			_, _ = fmt.Sscanf(fields[len(fields)-1], "%g", &v)
			return int(v)
		}
	}
	return 0
}

// Parallel runs job(0) … job(n-1) on workers goroutines and returns the
// first error (the others' workers stop taking jobs after their own error).
func Parallel(n, workers int, job func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := job(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// Latencies of the rounds of ChangeToLongPoll, each sorted: from a
// change's start to the answer's headers, and to its whole body (received,
// not yet decoded); and to Rounds.Applied's return, when given.
type Latencies struct {
	Headers, Answer, Applied []time.Duration
}

// ChangeToLongPoll measures, round by round, how long a change takes to
// reach a MADS long poll held on the current version, as Prometheus holds
// it: a long poll on version, held (mads_server_long_polls_held ≥ 1), then
// change(r); the time from the change's start to the answer. It returns the
// latencies and the last version.
func (cp *ControlPlane) ChangeToLongPoll(ctx context.Context, version string, rounds int, change func(r int) error) (Latencies, string, error) {
	return cp.TimeRounds(ctx, version, rounds, Rounds{Change: change})
}

// Rounds says what a round of TimeRounds does and waits for.
type Rounds struct {
	// Change makes round r's write (through any control plane).
	Change func(r int) error
	// Count, when set, is how many assignments the answer of round r has:
	// an answer with a new version but another count (a change that is not
	// the round's own) is followed by a long poll on that version, still
	// timed from the change's start.
	Count func(r int) int
	// Applied, when set, waits until round r's change took effect
	// elsewhere (e.g. in a proxy's config); it is timed from the change's
	// start, while the long poll's answer is awaited concurrently.
	Applied func(r int) error
}

// TimeRounds is ChangeToLongPoll with what a round waits for given by rr:
// the long poll is held on this control plane, the change may be written
// through another one.
func (cp *ControlPlane) TimeRounds(ctx context.Context, version string, rounds int, rr Rounds) (Latencies, string, error) {
	type answer struct {
		madsAnswer
		err error
	}
	var lat Latencies
	for r := range rounds {
		got := make(chan answer, 1)
		go func() {
			v := version
			for {
				a, err := cp.fetchMADS(v, time.Minute)
				if err != nil || a.Version == v || rr.Count == nil || a.Count == rr.Count(r) {
					got <- answer{a, err}
					return
				}
				v = a.Version
			}
		}()
		if err := WaitFor(30*time.Second, func() bool { return cp.HeldLongPolls() >= 1 }); err != nil {
			return Latencies{}, "", fmt.Errorf("round %d: long poll not held: %w", r, err)
		}
		start := time.Now()
		if err := rr.Change(r); err != nil {
			return Latencies{}, "", fmt.Errorf("round %d: %w", r, err)
		}
		if rr.Applied != nil {
			if err := rr.Applied(r); err != nil {
				return Latencies{}, "", fmt.Errorf("round %d: %w", r, err)
			}
			lat.Applied = append(lat.Applied, time.Since(start))
		}
		var a answer
		select {
		case a = <-got:
		case <-ctx.Done():
			return Latencies{}, "", ctx.Err()
		}
		if a.err != nil {
			return Latencies{}, "", fmt.Errorf("round %d: %w", r, a.err)
		}
		if a.Version == version {
			return Latencies{}, "", fmt.Errorf("round %d: answered without a new version", r)
		}
		version = a.Version
		lat.Headers = append(lat.Headers, a.Headers.Sub(start))
		lat.Answer = append(lat.Answer, a.Read.Sub(start))
	}
	slices.Sort(lat.Headers)
	slices.Sort(lat.Answer)
	slices.Sort(lat.Applied)
	return lat, version, nil
}

// MeshWithServices enables a Prometheus backend (no mTLS) on mesh default
// and stores n services, svc-0000…, one dataplane each (no proxy runs for
// them: only their endpoints matter). It returns the outbound entries (YAML,
// indented for a Dataplane's networking.outbound list) of a proxy that
// calls every one of them, on ports 20000 and up.
func (cp *ControlPlane) MeshWithServices(n int) ([]string, error) {
	if err := Put(cp.API+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus","conf":{"skipMTLS":true}}]}}`); err != nil {
		return nil, err
	}
	outbounds := make([]string, 0, n)
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"127.0.%d.%d","inbound":[{"port":8080,"tags":{"kuma.io/service":%q,"kuma.io/protocol":"http"}}]}}`,
			name, 10+i/250, 1+i%250, name)
		if err := Put(cp.API+"/meshes/default/dataplanes/"+name, body); err != nil {
			return nil, err
		}
		outbounds = append(outbounds, fmt.Sprintf("  - port: %d\n    tags:\n      kuma.io/service: %s\n", 20000+i, name))
	}
	return outbounds, nil
}
