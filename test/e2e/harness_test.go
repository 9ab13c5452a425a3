// Package e2e runs the built binaries (kuma-cp, kumactl) as a user would,
// against each other on loopback addresses, and in Kubernetes mode against
// a real kube-apiserver (internal/k8stest). Every process a test starts gets
// a loopback address of its own (internal/loopback) and binds its
// well-known ports there: nothing picks "free" ports, and a process the test
// restarts finds its address again.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/internal/testproc"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kuma-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../../cmd/kuma-cp", "../../cmd/kumactl", "../../cmd/kuma-prometheus-sd", "../../cmd/kuma-dp", "../../cmd/demo-app")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build` ships them
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the binaries:", err)
		return 1
	}
	binDir = dir
	// The Kubernetes tests share one API server per test binary
	// (internal/k8stest), started by the first of them and stopped here.
	return k8stest.Run(m)
}

// controlPlane is a kuma-cp process.
type controlPlane struct {
	t       *testing.T
	workDir string
	env     []string
	// host is the loopback address every server of kuma-cp listens on,
	// each on its default port.
	host   string
	apiURL string
	// apiHTTPSURL is the API's HTTPS address (api-server-ca.pem in workDir verifies it).
	apiHTTPSURL string
	diagURL     string
	// madsAddr is the monitoring assignment server's host:port.
	madsAddr string
	dpAddr   string
	cmd      *exec.Cmd
	log      *syncbuffer.Buffer
	done     chan error
	// nofile, when set, is the process's limit of open files (soft and
	// hard), set as soon as it started, as `ulimit -n` would.
	nofile uint64
}

// The control plane's default ports, on which the test's kuma-cp listens on
// its own host (set explicitly, so a KUMA_* variable of the caller's
// environment cannot move them).
const (
	cpAPIPort      = "5681"
	cpAPIHTTPSPort = "5682"
	cpDPPort       = "5678"
	cpMADSPort     = "5676"
	cpDiagPort     = "5680"
)

// newControlPlane prepares a kuma-cp with its data in workDir and every
// server on a loopback address of its own, on the default ports. Settings
// may be added to env before start.
func newControlPlane(t *testing.T, workDir string, extraEnv ...string) *controlPlane {
	host := loopback.Host()
	cp := &controlPlane{
		t: t, workDir: workDir, host: host,
		apiURL:      "http://" + net.JoinHostPort(host, cpAPIPort),
		apiHTTPSURL: "https://" + net.JoinHostPort(host, cpAPIHTTPSPort),
		diagURL:     "http://" + net.JoinHostPort(host, cpDiagPort),
		madsAddr:    net.JoinHostPort(host, cpMADSPort),
		dpAddr:      net.JoinHostPort(host, cpDPPort),
	}
	cp.env = append(os.Environ(),
		"KUMA_GENERAL_WORK_DIR="+workDir,
		"KUMA_API_SERVER_HTTP_INTERFACE="+host, "KUMA_API_SERVER_HTTP_PORT="+cpAPIPort,
		"KUMA_API_SERVER_HTTPS_INTERFACE="+host, "KUMA_API_SERVER_HTTPS_PORT="+cpAPIHTTPSPort,
		"KUMA_DP_SERVER_INTERFACE="+host, "KUMA_DP_SERVER_PORT="+cpDPPort,
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE="+host, "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT="+cpMADSPort,
		"KUMA_DIAGNOSTICS_SERVER_INTERFACE="+host, "KUMA_DIAGNOSTICS_SERVER_PORT="+cpDiagPort,
	)
	cp.env = append(cp.env, extraEnv...)
	return cp
}

// start runs kuma-cp (dying with the test binary, as every process a test
// starts) and waits until it is ready.
func (cp *controlPlane) start() {
	t := cp.t
	t.Helper()
	cp.log = &syncbuffer.Buffer{}
	cp.cmd = exec.Command(filepath.Join(binDir, "kuma-cp"), "run")
	cp.cmd.Env = cp.env
	cp.cmd.Stdout, cp.cmd.Stderr = cp.log, cp.log
	require.NoError(t, testproc.StartCmd(cp.cmd))
	if cp.nofile > 0 {
		lim := unix.Rlimit{Cur: cp.nofile, Max: cp.nofile}
		require.NoError(t, unix.Prlimit(cp.cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil))
	}
	cp.done = make(chan error, 1)
	go func() { cp.done <- cp.cmd.Wait() }()
	t.Cleanup(func() {
		if cp.cmd.ProcessState == nil {
			_ = cp.cmd.Process.Kill()
			<-cp.done
		}
		if t.Failed() {
			t.Logf("kuma-cp log:\n%s", cp.log.String())
		}
	})
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-cp.done:
			cp.done <- err
			return fmt.Errorf("kuma-cp exited: %v\n%s", err, cp.log.String())
		default:
		}
		return httpOK(cp.diagURL + "/ready")
	})
}

// stop sends SIGTERM and expects a clean exit.
func (cp *controlPlane) stop() {
	cp.t.Helper()
	require.NoError(cp.t, cp.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-cp.done:
		require.NoError(cp.t, err, "kuma-cp must exit cleanly on SIGTERM\n%s", cp.log.String())
	case <-time.After(30 * time.Second):
		cp.t.Fatalf("kuma-cp did not stop within 30s of SIGTERM\n%s", cp.log.String())
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (cp *controlPlane) kill() {
	cp.t.Helper()
	require.NoError(cp.t, cp.cmd.Process.Kill())
	<-cp.done
}

func httpOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, res.StatusCode)
	}
	return nil
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return string(b)
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kumactl runs kumactl with its own config file.
type kumactl struct {
	t      *testing.T
	config string
}

func newKumactl(t *testing.T, cp *controlPlane) *kumactl {
	k := &kumactl{t: t, config: filepath.Join(t.TempDir(), "kumactl.yaml")}
	k.must("config", "control-planes", "add", "--name", "e2e", "--address", cp.apiURL)
	return k
}

func (k *kumactl) run(stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kumactl"), append([]string{"--config-file", k.config}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func (k *kumactl) must(args ...string) string {
	k.t.Helper()
	out, errOut, err := k.run("", args...)
	require.NoError(k.t, err, "kumactl %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), out, errOut)
	return out
}

func (k *kumactl) fails(stdin string, args ...string) string {
	k.t.Helper()
	out, errOut, err := k.run(stdin, args...)
	var exit *exec.ExitError
	require.True(k.t, errors.As(err, &exit), "kumactl %s must fail, got %v\nstdout: %s", strings.Join(args, " "), err, out)
	require.NotEqual(k.t, 0, exit.ExitCode())
	return errOut
}
