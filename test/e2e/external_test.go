package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/internal/testproc"
)

// requireProgram returns the path of an external program the test needs. It
// fails the test when CI=true and the program is missing (make test installs
// it), and skips it elsewhere.
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		testproc.SkipOrFail(t, "%s is not installed (make test installs it): %v", name, err)
	}
	return path
}

// process is a program the test started; it is killed at cleanup, and
// dies with the test binary (testproc.StartCmd) should that end first.
type process struct {
	cmd  *exec.Cmd
	log  *syncbuffer.Buffer
	done chan error
}

func startProcess(t *testing.T, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), log: &syncbuffer.Buffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	require.NoError(t, testproc.StartCmd(p.cmd))
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(name), p.log.String())
		}
	})
	return p
}

// prometheus is Debian's Prometheus started with a config, on its default
// port on a loopback host of its own.
type prometheus struct {
	url string
	*process
}

// prometheusPort is Prometheus' default port.
const prometheusPort = 9090

func startPrometheus(t *testing.T, config string) *prometheus {
	t.Helper()
	bin := requireProgram(t, "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(config), 0o600))
	listen := hostPort(loopback.Host(), prometheusPort)
	p := &prometheus{url: "http://" + listen}
	p.process = startProcess(t, bin, nil,
		"--config.file="+cfg,
		"--web.listen-address="+listen,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--log.level=warn",
	)
	eventually(t, 60*time.Second, func() error { return httpOK(p.url + "/-/ready") })
	return p
}

// target is one entry of Prometheus' /api/v1/targets.
type target struct {
	ScrapePool       string            `json:"scrapePool"`
	Labels           map[string]string `json:"labels"`
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Health           string            `json:"health"`
	ScrapeURL        string            `json:"scrapeUrl"`
}

// targets returns the active targets by scrape pool.
func (p *prometheus) targets(t *testing.T) map[string][]target {
	t.Helper()
	var body struct {
		Data struct {
			ActiveTargets []target `json:"activeTargets"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, p.url+"/api/v1/targets?state=active")), &body))
	out := map[string][]target{}
	for _, tg := range body.Data.ActiveTargets {
		out[tg.ScrapePool] = append(out[tg.ScrapePool], tg)
	}
	return out
}

// query runs an instant PromQL query and returns its vector samples.
func (p *prometheus) query(t *testing.T, q string) []sample {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, p.url+"/api/v1/query?query="+url.QueryEscape(q))), &body))
	var out []sample
	for _, r := range body.Data.Result {
		v := 0.0
		if s, ok := r.Value[1].(string); ok {
			_, _ = fmt.Sscanf(s, "%g", &v)
		}
		out = append(out, sample{Labels: r.Metric, Value: v})
	}
	return out
}

type sample struct {
	Labels map[string]string
	Value  float64
}
