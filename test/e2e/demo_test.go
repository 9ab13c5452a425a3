package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/syncbuffer"
)

// demo is scripts/demo.sh (what make demo runs) on a loopback network of
// the test's own, as a newcomer runs it.
type demo struct {
	t   *testing.T
	dir string
	net string
	env []string
	cmd *exec.Cmd
	out *syncbuffer.Buffer
	// done delivers the script's exit.
	done chan error
}

func newDemo(t *testing.T) *demo {
	requireProgram(t, "prometheus")
	requireProgram(t, "curl")
	d := &demo{t: t, dir: t.TempDir(), net: loopback.Net()}
	d.env = append(os.Environ(),
		"DEMO_DIR="+d.dir, "DEMO_BIN="+binDir, "DEMO_NET="+d.net,
		"DEMO_ADMIN_HOST="+d.net+".1", "DEMO_PROMETHEUS="+d.net+".1:9090")
	return d
}

// start runs the script and waits until it says the demo runs.
func (d *demo) start() {
	t := d.t
	t.Helper()
	d.out = &syncbuffer.Buffer{}
	d.cmd = exec.Command("bash", "../../scripts/demo.sh")
	d.cmd.Env = d.env
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	// Its own process group: whatever happens, the cleanup ends everything
	// the script started.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, d.cmd.Start())
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait() }()
	pgid := d.cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("demo output:\n%s", d.out.String())
			logs, _ := filepath.Glob(filepath.Join(d.dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
	})
	eventually(t, 3*time.Minute, func() error {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("the demo exited: %v\n%s", err, d.out.String())
		default:
		}
		if !strings.Contains(d.out.String(), "Press Ctrl-C to stop.") {
			return errors.New("the demo is not up yet")
		}
		return nil
	})
}

// interrupt is Ctrl-C: SIGINT to the script, which stops what it started.
func (d *demo) interrupt() {
	t := d.t
	t.Helper()
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGINT))
	select {
	case err := <-d.done:
		require.NoError(t, err, "the demo exits cleanly on Ctrl-C")
	case <-time.After(2 * time.Minute):
		t.Fatal("the demo did not stop within 2 minutes of Ctrl-C")
	}
	require.Contains(t, d.out.String(), "stopping the demo")
	// Nothing it started is left: every process of its group is gone.
	eventually(t, 30*time.Second, func() error {
		if err := syscall.Kill(-d.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("processes of the demo are still running (kill -0: %v)", err)
		}
		return nil
	})
}

// printed returns the value the demo printed after label, e.g. the URL of
// "Prometheus targets".
func (d *demo) printed(label string) string {
	d.t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(label) + `\s+(\S+)`).FindStringSubmatch(d.out.String())
	require.NotNil(d.t, m, "the demo prints %q", label)
	return m[1]
}

// pastedCommand returns the printed command that turns mTLS on, as a user
// pastes it into a shell: from the kumactl line to the end of its here
// document.
func (d *demo) pastedCommand() string {
	d.t.Helper()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(d.out.String()))
	for sc.Scan() {
		l := sc.Text()
		if lines == nil && !strings.Contains(l, "apply -f - <<'EOF'") {
			continue
		}
		lines = append(lines, l)
		if l == "EOF" {
			return strings.Join(lines, "\n") + "\n"
		}
	}
	d.t.Fatalf("no mTLS command (a here document ending at an EOF line) in the demo's output:\n%s", d.out.String())
	return ""
}

func (d *demo) kumactl(args ...string) string {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "kumactl"),
		append([]string{"--config-file", filepath.Join(d.dir, "kumactl.yaml")}, args...)...).CombinedOutput()
	require.NoError(d.t, err, "kumactl %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// TestDemo runs make demo's script as a newcomer does: four proxies come up
// online, Prometheus scrapes every one at the URL the demo prints, the
// printed mTLS command works when pasted, Ctrl-C stops the proxies before
// the control plane (no failed deregistration) and leaves nothing running,
// and a second start keeps what the user applied.
func TestDemo(t *testing.T) {
	d := newDemo(t)
	d.start()

	eventually(t, time.Minute, func() error {
		out := d.kumactl("inspect", "dataplanes")
		for _, dp := range []string{"frontend-1", "backend-1", "backend-2", "traffic"} {
			if !regexp.MustCompile(`(?m)^default\s+` + dp + `\s.*\sOnline\s`).MatchString(out) {
				return fmt.Errorf("%s is not online:\n%s", dp, out)
			}
		}
		return nil
	})

	targetsPage := d.printed("Prometheus targets")
	require.NoError(t, httpOK(targetsPage), "the printed Prometheus URL works")
	prom := &prometheus{url: "http://" + d.net + ".1:9090"}
	eventually(t, 2*time.Minute, func() error {
		pools := prom.targets(t)
		up := map[string]bool{}
		for _, tg := range pools["kuma-dataplanes"] {
			up[tg.Labels["dataplane"]] = tg.Health == "up"
		}
		for _, dp := range []string{"frontend-1", "backend-1", "backend-2", "traffic"} {
			if !up[dp] {
				return fmt.Errorf("Prometheus does not scrape %s yet: %v", dp, up)
			}
		}
		// Prometheus scrapes itself where it listens (not localhost:9090).
		if self := pools["prometheus"]; len(self) != 1 || self[0].Health != "up" {
			return fmt.Errorf("Prometheus does not scrape itself: %+v", self)
		}
		return nil
	})

	// The printed mTLS command, pasted into a shell.
	out, err := exec.Command("bash", "-c", d.pastedCommand()).CombinedOutput()
	require.NoError(t, err, "the printed mTLS command: %s", out)
	eventually(t, time.Minute, func() error {
		body := httpGet(t, "http://"+d.net+".1:9901/stats?filter=ssl.handshake")
		if !regexp.MustCompile(`cluster\.backend\.ssl\.handshake: [1-9]`).MatchString(body) {
			return fmt.Errorf("no mTLS handshake to backend yet:\n%s", body)
		}
		return nil
	})

	d.interrupt()
	logs, err := filepath.Glob(filepath.Join(d.dir, "*.log"))
	require.NoError(t, err)
	for _, l := range logs {
		b, err := os.ReadFile(l)
		require.NoError(t, err)
		require.NotContains(t, string(b), "deregistering failed", "%s: the control plane stops after the proxies", filepath.Base(l))
	}
	for _, port := range []string{"5681", "5682", "5678", "5676", "5680", "9090", "9901"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(d.net+".1", port), time.Second)
		if err == nil {
			c.Close()
		}
		require.Error(t, err, "port %s is still served after Ctrl-C", port)
	}

	// A second start keeps the mTLS the user turned on.
	d.start()
	require.Contains(t, d.out.String(), "keeping it as it is")
	var mesh struct {
		MTLS struct {
			EnabledBackend string `json:"enabledBackend"`
		} `json:"mtls"`
	}
	require.NoError(t, json.Unmarshal([]byte(d.kumactl("get", "mesh", "default", "-o", "json")), &mesh))
	require.Equal(t, "ca-1", mesh.MTLS.EnabledBackend)
	d.interrupt()
}
