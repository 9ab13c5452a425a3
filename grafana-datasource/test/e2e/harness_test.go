// Package e2e runs the built datasource backend the way Grafana runs it
// (hashicorp/go-plugin, the SDK's handshake, gRPC) against the repository's
// demo: a real control plane, proxies, live traffic and Debian's Prometheus,
// all started by scripts/demo.sh on a loopback network of the test's own.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend/grpcplugin"
	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/grafana/grafana-plugin-sdk-go/genproto/pluginv2"
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/stretchr/testify/require"
)

var (
	// binDir holds the main module's binaries (for the demo) and the
	// plugin's.
	binDir string
	// repoRoot is the main module's folder.
	repoRoot string
)

const pluginBinary = "gpx_kuma"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kuma-plugin-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if repoRoot, err = filepath.Abs("../../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The main module's binaries, built in its own module (one build at a
	// time: the machine is shared).
	for _, b := range []struct {
		dir  string
		args []string
	}{
		{repoRoot, []string{"build", "-o", dir + string(os.PathSeparator), "./cmd/kuma-cp", "./cmd/kumactl", "./cmd/kuma-dp", "./cmd/demo-app"}},
		{filepath.Join(repoRoot, "grafana-datasource"), []string{"build", "-o", filepath.Join(dir, pluginBinary), "./pkg"}},
	} {
		cmd := exec.Command("go", b.args...)
		cmd.Dir = b.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as `make build` ships them
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n", strings.Join(b.args, " "), err)
			return 1
		}
	}
	binDir = dir
	return m.Run()
}

// findBuiltPlugin returns the zip `make plugin` built
// (bin/kumahq-kuma-datasource-<version>.zip of the repository, the version
// of dist/plugin.json; or KUMA_PLUGIN_ZIP), or why it is not there.
func findBuiltPlugin() (string, error) {
	if zip := os.Getenv("KUMA_PLUGIN_ZIP"); zip != "" {
		return zip, nil
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot, "grafana-datasource", "dist", "plugin.json"))
	if err != nil {
		return "", fmt.Errorf("the plugin is not built (make plugin): %w", err)
	}
	var manifest struct{ Info struct{ Version string } }
	if err := json.Unmarshal(raw, &manifest); err != nil {
		return "", fmt.Errorf("dist/plugin.json: %w", err)
	}
	zip := filepath.Join(repoRoot, "bin", "kumahq-kuma-datasource-"+manifest.Info.Version+".zip")
	if _, err := os.Stat(zip); err != nil {
		return "", fmt.Errorf("the plugin is not built (make plugin): %w", err)
	}
	return zip, nil
}

// requireBuilt fails the test under CI=true, and skips it otherwise, when
// err (of findBuiltPlugin) says the plugin is not built.
func requireBuilt(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("the built plugin is required in CI (make test-plugin builds it first): %v", err)
	}
	t.Skip(err)
}

// loopbackNet returns the first three octets of a /24 of loopback addresses
// no other caller of this process got, away from 127.0.x.x (a copy of the
// main module's internal/loopback.Net: this module cannot import it).
func loopbackNet() string {
	netsMu.Lock()
	defer netsMu.Unlock()
	for {
		n := [2]int{16 + rand.IntN(239), rand.IntN(256)}
		if !nets[n] {
			nets[n] = true
			return fmt.Sprintf("127.%d.%d", n[0], n[1])
		}
	}
}

var (
	netsMu sync.Mutex
	nets   = map[[2]int]bool{}
)

// requireProgram returns the path of an external program; missing, the
// test fails under CI=true and is skipped otherwise.
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI and is not installed (make test installs it): %v", name, err)
	}
	t.Skipf("%s is not installed (make test installs it)", name)
	return ""
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// pluginProcess is the backend binary started as Grafana starts it.
type pluginProcess struct {
	client      *goplugin.Client
	diagnostics grpcplugin.DiagnosticsClient
	data        grpcplugin.DataClient
	resource    grpcplugin.ResourceClient
}

// startPlugin launches the built binary with go-plugin's client and the
// SDK's handshake (grafana_plugin_type=datasource, protocol 2) over gRPC,
// and dispenses the SDK's diagnostics, data and resource clients.
func startPlugin(t *testing.T) *pluginProcess {
	t.Helper()
	return startPluginBinary(t, filepath.Join(binDir, pluginBinary))
}

// startPluginBinary starts the backend binary at path as startPlugin does.
func startPluginBinary(t *testing.T, path string) *pluginProcess {
	t.Helper()
	cmd := exec.Command(path)
	// What Grafana hands every backend plugin.
	cmd.Env = append(os.Environ(), "GF_VERSION=11.3.0", "GF_EDITION=oss", "GF_PLUGIN_VERSION=dev")
	logs := &lockedBuffer{}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  grpcplugin.ProtocolVersion,
			MagicCookieKey:   grpcplugin.MagicCookieKey,
			MagicCookieValue: grpcplugin.MagicCookieValue,
		},
		VersionedPlugins: map[int]goplugin.PluginSet{
			grpcplugin.ProtocolVersion: {
				"diagnostics": &grpcplugin.DiagnosticsGRPCPlugin{},
				"data":        &grpcplugin.DataGRPCPlugin{},
				"resource":    &grpcplugin.ResourceGRPCPlugin{},
			},
		},
		Cmd:              cmd,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Output: logs, Level: hclog.Debug}),
		StartTimeout:     time.Minute,
	})
	t.Cleanup(func() {
		client.Kill()
		if t.Failed() {
			t.Logf("plugin log:\n%s", logs.String())
		}
	})
	rpc, err := client.Client()
	require.NoError(t, err, "the handshake with the plugin")
	p := &pluginProcess{client: client}
	for name, out := range map[string]any{"diagnostics": &p.diagnostics, "data": &p.data, "resource": &p.resource} {
		raw, err := rpc.Dispense(name)
		require.NoError(t, err, name)
		switch o := out.(type) {
		case *grpcplugin.DiagnosticsClient:
			*o = raw.(grpcplugin.DiagnosticsClient)
		case *grpcplugin.DataClient:
			*o = raw.(grpcplugin.DataClient)
		case *grpcplugin.ResourceClient:
			*o = raw.(grpcplugin.ResourceClient)
		}
	}
	return p
}

// datasource is a configured Kuma datasource, as Grafana describes it to the
// plugin in every request.
type datasource struct {
	uid      string
	url      string
	jsonData string
	secure   map[string]string
}

func (d datasource) context() *pluginv2.PluginContext {
	return &pluginv2.PluginContext{
		OrgId:    1,
		PluginId: "kumahq-kuma-datasource",
		DataSourceInstanceSettings: &pluginv2.DataSourceInstanceSettings{
			Id: 1, Uid: d.uid, Name: "Kuma " + d.uid, Url: d.url,
			JsonData: []byte(d.jsonData), DecryptedSecureJsonData: d.secure, LastUpdatedMS: 1,
		},
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (p *pluginProcess) checkHealth(t *testing.T, d datasource) *pluginv2.CheckHealthResponse {
	t.Helper()
	res, err := p.diagnostics.CheckHealth(ctxFor(t), &pluginv2.CheckHealthRequest{PluginContext: d.context()})
	require.NoError(t, err)
	return res
}

// query is a query of a QueryData request.
type query struct {
	refID, json string
	interval    time.Duration
}

// answer is one query's answer: its frames or its error.
type answer struct {
	frames data.Frames
	err    string
	status int32
}

func (p *pluginProcess) queryData(t *testing.T, d datasource, qs ...query) map[string]answer {
	t.Helper()
	now := time.Now()
	req := &pluginv2.QueryDataRequest{PluginContext: d.context()}
	for _, q := range qs {
		interval := q.interval
		if interval == 0 {
			interval = time.Minute
		}
		req.Queries = append(req.Queries, &pluginv2.DataQuery{
			RefId: q.refID, Json: []byte(q.json), IntervalMS: interval.Milliseconds(), MaxDataPoints: 100,
			TimeRange: &pluginv2.TimeRange{FromEpochMS: now.Add(-time.Hour).UnixMilli(), ToEpochMS: now.UnixMilli()},
		})
	}
	res, err := p.data.QueryData(ctxFor(t), req)
	require.NoError(t, err)
	out := map[string]answer{}
	for refID, r := range res.Responses {
		fs, err := data.UnmarshalArrowFrames(r.Frames)
		require.NoError(t, err)
		out[refID] = answer{frames: fs, err: r.Error, status: r.Status}
	}
	return out
}

// callResource calls GET path (with its query) and returns the status and
// the whole body.
func (p *pluginProcess) callResource(t *testing.T, d datasource, path string) (int, string) {
	t.Helper()
	stream, err := p.resource.CallResource(ctxFor(t), &pluginv2.CallResourceRequest{
		PluginContext: d.context(), Path: strings.SplitN(path, "?", 2)[0], Method: "GET", Url: path,
	})
	require.NoError(t, err)
	var status int
	var body strings.Builder
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if msg.Code != 0 {
			status = int(msg.Code)
		}
		body.Write(msg.Body)
	}
	return status, body.String()
}

// demo is scripts/demo.sh on a loopback network of the test's own.
type demo struct {
	dir, net string
	cmd      *exec.Cmd
	out      *lockedBuffer
}

// startDemo runs the demo script and waits until it says it runs; the
// cleanup kills its whole process group. With grafanaPlugin (the zip of
// make plugin), the demo's kumactl install metrics installs it.
func startDemo(t *testing.T, grafanaPlugin string) *demo {
	t.Helper()
	requireProgram(t, "prometheus")
	requireProgram(t, "curl")
	d := &demo{dir: t.TempDir(), net: loopbackNet(), out: &lockedBuffer{}}
	d.cmd = exec.Command("bash", filepath.Join(repoRoot, "scripts", "demo.sh"))
	d.cmd.Env = append(os.Environ(),
		"DEMO_DIR="+d.dir, "DEMO_BIN="+binDir, "DEMO_NET="+d.net,
		"DEMO_ADMIN_HOST="+d.net+".1", "DEMO_PROMETHEUS="+d.net+".1:9090", "DEMO_GRAFANA_PLUGIN="+grafanaPlugin)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, d.cmd.Start())
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	pgid := d.cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("demo output:\n%s", d.out.String())
			logs, _ := filepath.Glob(filepath.Join(d.dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", filepath.Base(l), b)
			}
		}
	})
	eventually(t, 4*time.Minute, func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("the demo exited: %v", err)
		default:
		}
		if !strings.Contains(d.out.String(), "Press Ctrl-C to stop.") {
			return errors.New("the demo is not up yet")
		}
		return nil
	})
	return d
}

// kumactl runs the demo's kumactl.
func (d *demo) kumactl(t *testing.T, args ...string) string {
	t.Helper()
	return d.kumactlStdin(t, "", args...)
}

// kumactlStdin runs the demo's kumactl with stdin.
func (d *demo) kumactlStdin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kumactl"),
		append([]string{"--config-file", filepath.Join(d.dir, "kumactl.yaml")}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kumactl %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// httpGet reads a URL that must answer 200.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	res, err := c.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return string(b)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
