// Package cpproc runs a kuma-cp process for the whole-process benchmarks
// and talks to it: free ports on 127.0.0.1, REST writes, readiness, and the
// memory of a process.
package cpproc

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ControlPlane is a running kuma-cp.
type ControlPlane struct {
	Cmd      *exec.Cmd
	WorkDir  string
	API      string // http://127.0.0.1:port
	MADS     string // http://127.0.0.1:port
	DPServer string // https://127.0.0.1:port
	Diag     string // http://127.0.0.1:port

	removeWorkDir bool
}

// Client is the HTTP client of the benchmarks.
var Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// FreePorts reserves n free TCP ports on 127.0.0.1 (released on return).
func FreePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Start runs binary (kuma-cp) with its data in workDir and extra
// environment (e.g. KUMA_STORE_TYPE=memory), everything on 127.0.0.1, and
// waits until it is ready. Stop it with Stop.
func Start(binary, workDir string, env ...string) (*ControlPlane, error) {
	p, err := FreePorts(4)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(binary, "run", "--log-level=warn")
	cmd.Env = append(append(os.Environ(),
		"KUMA_GENERAL_WORK_DIR="+workDir,
		fmt.Sprintf("KUMA_API_SERVER_HTTP_PORT=%d", p[0]), fmt.Sprintf("KUMA_DP_SERVER_PORT=%d", p[1]),
		fmt.Sprintf("KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=%d", p[2]), fmt.Sprintf("KUMA_DIAGNOSTICS_SERVER_PORT=%d", p[3]),
		"KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1", "KUMA_DP_SERVER_INTERFACE=127.0.0.1",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1", "KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1",
		"KUMA_API_SERVER_HTTPS_ENABLED=false",
	), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		Cmd: cmd, WorkDir: workDir,
		API:      fmt.Sprintf("http://127.0.0.1:%d", p[0]),
		DPServer: fmt.Sprintf("https://127.0.0.1:%d", p[1]),
		MADS:     fmt.Sprintf("http://127.0.0.1:%d", p[2]),
		Diag:     fmt.Sprintf("http://127.0.0.1:%d", p[3]),
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
func RSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
		}
	}
	return "?"
}
