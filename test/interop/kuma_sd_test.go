package interop

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/discovery/xds"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

const waitTimeout = 30 * time.Second

var (
	kumaCP string
	// apiServer runs the main module's Kubernetes test harness (see
	// kubernetes_test.go).
	apiServer string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "interop-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir, "./cmd/kuma-cp", "./internal/k8stest/cmd/apiserver")
	build.Dir = "../.."
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building kuma-cp and the API server harness:", err)
		os.Exit(1)
	}
	kumaCP = filepath.Join(dir, "kuma-cp")
	apiServer = filepath.Join(dir, "apiserver")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// controlPlane runs kuma-cp on the memory store, with extra environment,
// every server on host (a loopback address of the test's own, see
// loopbackHost) on its default port, and returns its API URL and MADS
// address (host:port).
func controlPlane(t *testing.T, host string, env ...string) (api, madsAddr string) {
	t.Helper()
	cmd := exec.Command(kumaCP, "run")
	cmd.Env = append(os.Environ(),
		"KUMA_STORE_TYPE=memory",
		"KUMA_GENERAL_WORK_DIR="+t.TempDir(),
		"KUMA_API_SERVER_HTTP_INTERFACE="+host, "KUMA_API_SERVER_HTTP_PORT=5681",
		"KUMA_API_SERVER_HTTPS_INTERFACE="+host, "KUMA_API_SERVER_HTTPS_PORT=5682",
		"KUMA_DP_SERVER_INTERFACE="+host, "KUMA_DP_SERVER_PORT=5678",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE="+host, "KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=5676",
		"KUMA_DIAGNOSTICS_SERVER_INTERFACE="+host, "KUMA_DIAGNOSTICS_SERVER_PORT=5680",
	)
	cmd.Env = append(cmd.Env, env...)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("kuma-cp log:\n%s", log.String())
		}
	})
	ready := "http://" + net.JoinHostPort(host, "5680") + "/ready"
	require.Eventually(t, func() bool {
		res, err := http.Get(ready)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, waitTimeout, 20*time.Millisecond, "kuma-cp did not become ready:\n%s", log)
	return "http://" + net.JoinHostPort(host, "5681"), net.JoinHostPort(host, "5676")
}

// put writes a resource through the REST API.
func put(t *testing.T, url, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	require.Less(t, res.StatusCode, 300, "PUT %s: %s", url, b)
}

func del(t *testing.T, url string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, url, nil)
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
}

func dataplane(t *testing.T, api, mesh, name, body string) {
	t.Helper()
	put(t, api+"/meshes/"+mesh+"/dataplanes/"+name, `{"type":"Dataplane","mesh":"`+mesh+`","name":"`+name+`",`+body+`}`)
}

// discoverer runs Prometheus' kuma_sd_configs discovery against mads (a
// URL), with extra settings of the job (YAML lines), and returns the
// registry of its metrics too.
func discoverer(t *testing.T, mads string, extra ...string) (<-chan []*targetgroup.Group, *prometheus.Registry) {
	t.Helper()
	var cfg xds.SDConfig
	conf := "server: " + mads + "\nrefresh_interval: 100ms\nfetch_timeout: 30s\nclient_id: interop-test\n" + strings.Join(extra, "\n")
	require.NoError(t, yaml.UnmarshalStrict([]byte(conf), &cfg))
	reg := prometheus.NewRegistry()
	metrics := cfg.NewDiscovererMetrics(reg, discovery.NewRefreshMetrics(reg))
	require.NoError(t, metrics.Register())
	d, err := cfg.NewDiscoverer(discovery.DiscovererOptions{Logger: slog.New(slog.DiscardHandler), Metrics: metrics})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []*targetgroup.Group, 16)
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx, ch) }()
	t.Cleanup(func() { cancel(); <-done; metrics.Unregister() })
	return ch, reg
}

// targets waits for the next update whose target label sets satisfy ok,
// keyed by instance.
func waitTargets(t *testing.T, ch <-chan []*targetgroup.Group, ok func(map[string]model.LabelSet) bool) map[string]model.LabelSet {
	t.Helper()
	deadline := time.After(waitTimeout)
	var last map[string]model.LabelSet
	for {
		select {
		case groups := <-ch:
			last = map[string]model.LabelSet{}
			for _, g := range groups {
				for _, tg := range g.Targets {
					last[string(tg[model.InstanceLabel])] = tg.Merge(g.Labels)
				}
			}
			if ok(last) {
				return last
			}
		case <-deadline:
			t.Fatalf("targets did not reach the expected state; last update: %v", last)
		}
	}
}

const metricsMesh = `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"prometheus-1",` +
	`"backends":[{"name":"prometheus-1","type":"prometheus","conf":{"skipMTLS":true}}]}}`

func TestPrometheusKumaSDAgainstOurMADS(t *testing.T) {
	api, mads := controlPlane(t, loopbackHost())
	put(t, api+"/meshes/default", metricsMesh)
	put(t, api+"/meshes/quiet", `{"type":"Mesh","name":"quiet"}`)
	dataplane(t, api, "default", "web-1", `"networking":{"address":"10.0.0.1","advertisedAddress":"192.0.2.10","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"web","version":"v2","team":"shop"}},`+
		`{"port":9090,"tags":{"kuma.io/service":"web-admin","version":"v1","team":"shop"}}]}`)
	dataplane(t, api, "default", "example", `"networking":{"address":"10.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]},`+
		`"metrics":{"type":"prometheus","conf":{"skipMTLS":true,"port":1234,"path":"/non-standard-path"}}`)
	dataplane(t, api, "quiet", "silent", `"networking":{"address":"10.0.0.3","inbound":[{"port":8080,"tags":{"kuma.io/service":"hidden"}}]}`)

	ch, _ := discoverer(t, "http://"+mads)
	got := waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 2 })
	require.Equal(t, map[string]model.LabelSet{
		"web-1": {
			"__address__":                        "192.0.2.10:5670",
			"instance":                           "web-1",
			"__scheme__":                         "http",
			"__metrics_path__":                   "/metrics",
			"__meta_kuma_mesh":                   "default",
			"__meta_kuma_service":                "web",
			"__meta_kuma_dataplane":              "web-1",
			"__meta_kuma_label_kuma_io_service":  "web",
			"__meta_kuma_label_kuma_io_services": ",web,web-admin,",
			"__meta_kuma_label_version":          "v1",
			"__meta_kuma_label_versions":         ",v1,v2,",
			"__meta_kuma_label_team":             "shop",
			"__meta_kuma_label_teams":            ",shop,",
		},
		"example": {
			"__address__":                        "10.0.0.2:1234",
			"instance":                           "example",
			"__scheme__":                         "http",
			"__metrics_path__":                   "/non-standard-path",
			"__meta_kuma_mesh":                   "default",
			"__meta_kuma_service":                "backend",
			"__meta_kuma_dataplane":              "example",
			"__meta_kuma_label_kuma_io_service":  "backend",
			"__meta_kuma_label_kuma_io_services": ",backend,",
		},
	}, got, "the mesh without metrics has no targets")

	// Adding, changing and deleting a dataplane reach the client.
	began := time.Now()
	dataplane(t, api, "default", "web-2", `"networking":{"address":"10.0.0.4","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}`)
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return m["web-2"]["__address__"] == "10.0.0.4:5670" })
	t.Logf("add reached Prometheus' kuma_sd in %s", time.Since(began))

	began = time.Now()
	dataplane(t, api, "default", "web-2", `"networking":{"address":"10.0.0.5","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}`)
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return m["web-2"]["__address__"] == "10.0.0.5:5670" })
	t.Logf("change reached Prometheus' kuma_sd in %s", time.Since(began))

	began = time.Now()
	del(t, api+"/meshes/default/dataplanes/web-2")
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { _, ok := m["web-2"]; return !ok && len(m) == 2 })
	t.Logf("delete reached Prometheus' kuma_sd in %s", time.Since(began))

	// Disabling metrics on the mesh removes every target.
	put(t, api+"/meshes/default", `{"type":"Mesh","name":"default"}`)
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 0 })
}
