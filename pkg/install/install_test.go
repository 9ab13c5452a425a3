package install_test

import (
	"bytes"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
	yamlv2 "go.yaml.in/yaml/v2"

	"github.com/kumametrics/mesh/pkg/install"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testDashboards stand in for the real dashboards (package dashboards), so
// that these tests do not change with them. One is in a subdirectory.
func testDashboards() fstest.MapFS {
	return fstest.MapFS{
		"kuma-mesh.json": {Data: []byte(`{
  "title": "Test Mesh",
  "uid": "test-mesh",
  "panels": [
    {"type": "nodeGraph", "datasource": {"type": "kumahq-kuma-datasource", "uid": "${DS_KUMA}"}},
    {"type": "timeseries", "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
     "targets": [{"expr": "sum(rate(envoy_cluster_upstream_rq_total{mesh=\"$mesh\"}[1m]))"}]}
  ],
  "templating": {"list": [
    {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus"},
    {"name": "DS_KUMA", "type": "datasource", "query": "kumahq-kuma-datasource"},
    {"name": "mesh", "type": "query", "query": "label_values(envoy_server_live, mesh)"}
  ]}
}
`)},
		"more/Kuma_CP.json": {Data: []byte(`{"title": "Test CP", "uid": "test-cp", "panels": []}`)},
		"README.md":         {Data: []byte("not a dashboard\n")},
	}
}

func kubernetesOptions() install.Options { return install.KubernetesDefaults(testDashboards()) }

func universalOptions() install.Options {
	return install.UniversalDefaults("/opt/kuma-metrics", testDashboards())
}

func renderKubernetes(t *testing.T, opts install.Options) string {
	t.Helper()
	out, err := install.RenderKubernetes(opts)
	require.NoError(t, err)
	return string(out)
}

func renderUniversal(t *testing.T, opts install.Options) map[string]string {
	t.Helper()
	files, err := install.RenderUniversal(opts)
	require.NoError(t, err)
	out := map[string]string{}
	for k, v := range files {
		out[k] = string(v)
	}
	return out
}

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", filepath.FromSlash(name))
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file; run go test with -update")
	require.Equal(t, string(want), got, "golden file %s (run go test with -update after checking the change)", path)
}

func TestRenderKubernetesGolden(t *testing.T) {
	golden(t, "kubernetes-default.golden.yaml", renderKubernetes(t, kubernetesOptions()))
}

func TestRenderUniversalGolden(t *testing.T) {
	files := renderUniversal(t, universalOptions())
	dir := filepath.Join("testdata", "universal")
	if *update {
		require.NoError(t, os.RemoveAll(dir))
	}
	for name, content := range files {
		golden(t, "universal/"+name, content)
	}
	// No golden file is left over.
	var onDisk []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			onDisk = append(onDisk, filepath.ToSlash(rel))
		}
		return err
	}))
	require.ElementsMatch(t, onDisk, keys(files))
	require.ElementsMatch(t, []string{
		"prometheus.yml",
		"grafana/grafana.ini",
		"grafana/provisioning/datasources/kuma.yaml",
		"grafana/provisioning/dashboards/kuma.yaml",
		"grafana/dashboards/kuma-mesh.json",
		"grafana/dashboards/Kuma_CP.json",
	}, keys(files))
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// object is one document of the Kubernetes output.
type object struct {
	key  string // Kind/name
	yaml string
}

func objects(t *testing.T, out string) []object {
	t.Helper()
	var objs []object
	for _, doc := range strings.Split(strings.TrimSuffix(out, "\n"), "\n---\n") {
		doc += "\n"
		var head struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		}
		require.NoError(t, yamlv2.Unmarshal([]byte(doc), &head))
		require.NotEmpty(t, head.Kind, "document without a kind:\n%s", doc)
		objs = append(objs, object{key: head.Kind + "/" + head.Metadata.Name, yaml: doc})
	}
	return objs
}

func objectMap(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, o := range objects(t, out) {
		require.NotContains(t, m, o.key, "duplicate object")
		m[o.key] = o.yaml
	}
	return m
}

var checksumRe = regexp.MustCompile(`checksum/config: "?([0-9a-f]{64})"?`)

// checksums are the config checksums of the Deployments, by Deployment.
func checksums(t *testing.T, objs map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, y := range objs {
		if m := checksumRe.FindStringSubmatch(y); m != nil {
			out[k] = m[1]
		}
	}
	return out
}

func maskChecksums(objs map[string]string) map[string]string {
	out := map[string]string{}
	for k, y := range objs {
		out[k] = checksumRe.ReplaceAllString(y, "checksum/config: MASKED")
	}
	return out
}

var (
	prometheusObjects = []string{
		"ServiceAccount/prometheus-server",
		"ClusterRole/kuma-metrics-prometheus-server",
		"ClusterRoleBinding/kuma-metrics-prometheus-server",
		"ConfigMap/prometheus-server",
		"PersistentVolumeClaim/prometheus-server",
		"Service/prometheus-server",
		"Deployment/prometheus-server",
		"ServiceAccount/prometheus-kube-state-metrics",
		"ClusterRole/kuma-metrics-prometheus-kube-state-metrics",
		"ClusterRoleBinding/kuma-metrics-prometheus-kube-state-metrics",
		"Service/prometheus-kube-state-metrics",
		"Deployment/prometheus-kube-state-metrics",
	}
	grafanaObjects = []string{
		"ServiceAccount/grafana",
		"ConfigMap/grafana-datasources",
		"ConfigMap/grafana-dashboard-providers",
		"ConfigMap/grafana-dashboards-kuma-mesh",
		"ConfigMap/grafana-dashboards-kuma-cp",
		"Service/grafana",
		"Deployment/grafana",
	}
)

func TestKubernetesObjects(t *testing.T) {
	out := renderKubernetes(t, kubernetesOptions())
	objs := objects(t, out)
	var got []string
	for _, o := range objs {
		got = append(got, o.key)
	}
	// Sorted by kind, in the order they apply, then by name.
	require.Equal(t, []string{
		"Namespace/kuma-metrics",
		"ServiceAccount/grafana",
		"ServiceAccount/prometheus-kube-state-metrics",
		"ServiceAccount/prometheus-server",
		"ClusterRole/kuma-metrics-prometheus-kube-state-metrics",
		"ClusterRole/kuma-metrics-prometheus-server",
		"ClusterRoleBinding/kuma-metrics-prometheus-kube-state-metrics",
		"ClusterRoleBinding/kuma-metrics-prometheus-server",
		"ConfigMap/grafana-dashboard-providers",
		"ConfigMap/grafana-dashboards-kuma-cp",
		"ConfigMap/grafana-dashboards-kuma-mesh",
		"ConfigMap/grafana-datasources",
		"ConfigMap/prometheus-server",
		"PersistentVolumeClaim/prometheus-server",
		"Service/grafana",
		"Service/prometheus-kube-state-metrics",
		"Service/prometheus-server",
		"Deployment/grafana",
		"Deployment/prometheus-kube-state-metrics",
		"Deployment/prometheus-server",
	}, got)
	require.ElementsMatch(t, got, append(append([]string{"Namespace/kuma-metrics"}, prometheusObjects...), grafanaObjects...))
	require.False(t, strings.HasPrefix(out, "---"))
	require.True(t, strings.HasSuffix(out, "\n"))

	m := objectMap(t, out)
	// The namespace puts its pods in the mesh.
	var ns struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(m["Namespace/kuma-metrics"]), &ns))
	require.Equal(t, "enabled", ns.Metadata.Labels["kuma.io/sidecar-injection"])
	require.Equal(t, "default", ns.Metadata.Annotations["kuma.io/mesh"])

	// The dashboards are provisioned byte for byte.
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(m["ConfigMap/grafana-dashboards-kuma-mesh"]), &cm))
	require.Equal(t, map[string]string{"kuma-mesh.json": string(testDashboards()["kuma-mesh.json"].Data)}, cm.Data)
	cm.Data = nil
	require.NoError(t, yamlv2.Unmarshal([]byte(m["ConfigMap/grafana-dashboards-kuma-cp"]), &cm))
	require.Equal(t, map[string]string{"Kuma_CP.json": string(testDashboards()["more/Kuma_CP.json"].Data)}, cm.Data)
}

// guideJob is the user guide's kuma-dataplanes job, without its discovery.
const guideJob = `
job_name: 'kuma-dataplanes'
scrape_interval: "5s"
relabel_configs:
- source_labels:
  - __meta_kuma_mesh
  regex: "(.*)"
  target_label: mesh
- source_labels:
  - __meta_kuma_dataplane
  regex: "(.*)"
  target_label: dataplane
- source_labels:
  - __meta_kuma_service
  regex: "(.*)"
  target_label: service
- action: labelmap
  regex: __meta_kuma_label_(.+)
`

// scrapeJobs parses a prometheus.yml into its jobs by name.
func scrapeJobs(t *testing.T, promYML string) map[string]map[string]any {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []map[string]any `yaml:"scrape_configs"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(promYML), &cfg))
	jobs := map[string]map[string]any{}
	for _, j := range cfg.ScrapeConfigs {
		jobs[j["job_name"].(string)] = j
	}
	return jobs
}

func prometheusYML(t *testing.T, out string) string {
	t.Helper()
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(objectMap(t, out)["ConfigMap/prometheus-server"]), &cm))
	return cm.Data["prometheus.yml"]
}

func TestGuideJob(t *testing.T) {
	var want map[string]any
	require.NoError(t, yamlv2.Unmarshal([]byte(guideJob), &want))
	without := func(job map[string]any, keys ...string) map[string]any {
		out := map[string]any{}
		for k, v := range job {
			out[k] = v
		}
		for _, k := range keys {
			delete(out, k)
		}
		return out
	}

	t.Run("kubernetes: kuma_sd_configs", func(t *testing.T) {
		job := scrapeJobs(t, prometheusYML(t, renderKubernetes(t, kubernetesOptions())))["kuma-dataplanes"]
		// The guide's rules, then plain text: Prometheus is in the mesh
		// and its proxy brings mTLS where the endpoint serves it.
		rules := job["relabel_configs"].([]any)
		require.Equal(t, map[any]any{"target_label": "__scheme__", "replacement": "http"}, rules[len(rules)-1])
		job = without(job)
		job["relabel_configs"] = rules[:len(rules)-1]
		require.Equal(t, want, without(job, "kuma_sd_configs"))
		require.Equal(t, []any{map[any]any{"server": "http://kuma-control-plane.kuma-system:5676"}}, job["kuma_sd_configs"])
	})
	t.Run("universal: http_sd_configs and a commented kuma_sd_configs", func(t *testing.T) {
		promYML := renderUniversal(t, universalOptions())["prometheus.yml"]
		job := scrapeJobs(t, promYML)["kuma-dataplanes"]
		require.Equal(t, want, without(job, "http_sd_configs"))
		require.Equal(t, []any{map[any]any{
			"url":              "http://127.0.0.1:5676/v3/discovery:monitoringassignments/http_sd",
			"refresh_interval": "15s",
		}}, job["http_sd_configs"])

		// Uncommenting the alternative (in place of http_sd_configs) gives the guide's job.
		var alt []string
		for _, line := range strings.Split(promYML, "\n") {
			switch {
			case strings.HasPrefix(line, "  # kuma_sd_configs:"), strings.HasPrefix(line, "  # - server:"):
				alt = append(alt, strings.Replace(line, "# ", "", 1))
			case strings.HasPrefix(line, "  http_sd_configs:"), strings.HasPrefix(line, "  - url:"), strings.HasPrefix(line, "    refresh_interval:"):
			default:
				alt = append(alt, line)
			}
		}
		job = scrapeJobs(t, strings.Join(alt, "\n"))["kuma-dataplanes"]
		require.Equal(t, want, without(job, "kuma_sd_configs"))
		require.Equal(t, []any{map[any]any{"server": "http://127.0.0.1:5676"}}, job["kuma_sd_configs"])
	})
}

func TestPrometheusJobs(t *testing.T) {
	k8s := scrapeJobs(t, prometheusYML(t, renderKubernetes(t, kubernetesOptions())))
	require.ElementsMatch(t, []string{"kuma-dataplanes", "kuma-cp", "prometheus", "kube-state-metrics", "kubernetes-pods", "kubernetes-service-endpoints"}, keys(k8s))
	require.Equal(t, []any{map[any]any{"targets": []any{"kuma-control-plane.kuma-system:5680"}}}, k8s["kuma-cp"]["static_configs"])
	require.Equal(t, "/metrics", k8s["kuma-cp"]["metrics_path"])
	require.Equal(t, []any{map[any]any{"targets": []any{"prometheus-kube-state-metrics.kuma-metrics:80", "prometheus-kube-state-metrics.kuma-metrics:81"}}}, k8s["kube-state-metrics"]["static_configs"])
	require.Equal(t, []any{map[any]any{"role": "pod"}}, k8s["kubernetes-pods"]["kubernetes_sd_configs"])

	universal := scrapeJobs(t, renderUniversal(t, universalOptions())["prometheus.yml"])
	require.ElementsMatch(t, []string{"kuma-dataplanes", "kuma-cp", "prometheus"}, keys(universal))
	require.Equal(t, []any{map[any]any{"targets": []any{"127.0.0.1:5680"}}}, universal["kuma-cp"]["static_configs"])

	// The control plane's metrics come from the API's host, also for IPv6.
	opts := universalOptions()
	opts.KumaCPAPIAddress = "http://[fd00::1]:5681"
	universal = scrapeJobs(t, renderUniversal(t, opts)["prometheus.yml"])
	require.Equal(t, []any{map[any]any{"targets": []any{"[fd00::1]:5680"}}}, universal["kuma-cp"]["static_configs"])
}

func TestKubernetesFlags(t *testing.T) {
	def := objectMap(t, renderKubernetes(t, kubernetesOptions()))
	defSums := checksums(t, def)
	all := keys(def)
	for _, tc := range []struct {
		name string
		opts func(*install.Options)
		// back maps the output back to the default one (pairs for a strings.Replacer).
		back []string
		// in are the objects where marker (the new value) shows.
		marker string
		in     []string
		// rolled are the Deployments whose config checksum changes.
		rolled []string
		// removed are the objects left out.
		removed []string
	}{
		{
			name:   "namespace",
			opts:   func(o *install.Options) { o.Namespace = "observability" },
			back:   []string{"observability", "kuma-metrics"},
			marker: "observability",
			// The Namespace and every object: in it, or named after it (cluster-scoped).
			in:     all,
			rolled: []string{"Deployment/prometheus-server", "Deployment/grafana"},
		},
		{
			name:   "mesh",
			opts:   func(o *install.Options) { o.Mesh = "payments" },
			back:   []string{"kuma.io/mesh: payments", "kuma.io/mesh: default"},
			marker: "payments",
			in:     []string{"Namespace/kuma-metrics", "Deployment/prometheus-server", "Deployment/prometheus-kube-state-metrics", "Deployment/grafana"},
			rolled: nil,
		},
		{
			name:   "kuma-cp-address",
			opts:   func(o *install.Options) { o.KumaCPAddress = "https://mads.example.com:15676" },
			back:   []string{"https://mads.example.com:15676", "http://kuma-control-plane.kuma-system:5676"},
			marker: "mads.example.com",
			in:     []string{"ConfigMap/prometheus-server"},
			rolled: []string{"Deployment/prometheus-server"},
		},
		{
			name: "kuma-cp-api-address",
			opts: func(o *install.Options) { o.KumaCPAPIAddress = "https://cp.example.com:15681" },
			back: []string{
				"https://cp.example.com:15681", "http://kuma-control-plane.kuma-system:5681",
				"cp.example.com:5680", "kuma-control-plane.kuma-system:5680",
			},
			marker: "cp.example.com",
			in:     []string{"ConfigMap/prometheus-server", "ConfigMap/grafana-datasources"},
			rolled: []string{"Deployment/prometheus-server", "Deployment/grafana"},
		},
		{
			name:    "without-prometheus",
			opts:    func(o *install.Options) { o.WithoutPrometheus = true },
			removed: prometheusObjects,
		},
		{
			name:    "without-grafana",
			opts:    func(o *install.Options) { o.WithoutGrafana = true },
			removed: grafanaObjects,
		},
		{
			name:    "without-prometheus and without-grafana: only the namespace",
			opts:    func(o *install.Options) { o.WithoutPrometheus, o.WithoutGrafana = true, true },
			removed: append(append([]string{}, prometheusObjects...), grafanaObjects...),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := kubernetesOptions()
			tc.opts(&opts)
			got := objectMap(t, renderKubernetes(t, opts))

			if len(tc.back) > 0 {
				back := strings.NewReplacer(tc.back...)
				var in []string
				for k, y := range got {
					if strings.Contains(y, tc.marker) {
						in = append(in, back.Replace(k))
					}
				}
				require.ElementsMatch(t, tc.in, in, "where %q shows", tc.marker)
				mapped := map[string]string{}
				for k, y := range got {
					mapped[back.Replace(k)] = back.Replace(y)
				}
				got = mapped
			}

			want := map[string]string{}
			for k, y := range def {
				want[k] = y
			}
			for _, k := range tc.removed {
				require.Contains(t, want, k)
				delete(want, k)
			}
			require.Equal(t, maskChecksums(want), maskChecksums(got), "nothing else changes")

			var rolled []string
			for k, sum := range checksums(t, got) {
				if sum != defSums[k] {
					rolled = append(rolled, k)
				}
			}
			require.ElementsMatch(t, tc.rolled, rolled, "Deployments whose config changed")
		})
	}
}

func TestWithoutPrometheusKeepsTheDatasource(t *testing.T) {
	opts := kubernetesOptions()
	opts.WithoutPrometheus = true
	m := objectMap(t, renderKubernetes(t, opts))
	require.Contains(t, m["ConfigMap/grafana-datasources"], `url: "http://prometheus-server.kuma-metrics"`)
}

func TestUniversalFlags(t *testing.T) {
	def := renderUniversal(t, universalOptions())
	grafanaFiles := []string{
		"grafana/grafana.ini",
		"grafana/provisioning/datasources/kuma.yaml",
		"grafana/provisioning/dashboards/kuma.yaml",
		"grafana/dashboards/kuma-mesh.json",
		"grafana/dashboards/Kuma_CP.json",
	}
	for _, tc := range []struct {
		name string
		opts func(*install.Options)
		// back maps the output back to the default one (pairs for a strings.Replacer).
		back []string
		// in are the files where marker (the new value) shows.
		marker string
		in     []string
		// removed are the files left out.
		removed []string
	}{
		{
			name:   "kuma-cp-address",
			opts:   func(o *install.Options) { o.KumaCPAddress = "https://cp.internal:15676" },
			back:   []string{"https://cp.internal:15676", "http://127.0.0.1:5676"},
			marker: "cp.internal",
			in:     []string{"prometheus.yml"},
		},
		{
			name:   "kuma-cp-api-address",
			opts:   func(o *install.Options) { o.KumaCPAPIAddress = "https://cp.internal:15681" },
			back:   []string{"https://cp.internal:15681", "http://127.0.0.1:5681", "cp.internal:5680", "127.0.0.1:5680"},
			marker: "cp.internal",
			in:     []string{"prometheus.yml", "grafana/provisioning/datasources/kuma.yaml"},
		},
		{
			name:   "output-dir",
			opts:   func(o *install.Options) { o.OutputDir = "/srv/metrics" },
			back:   []string{"/srv/metrics", "/opt/kuma-metrics"},
			marker: "/srv/metrics",
			in:     []string{"grafana/grafana.ini", "grafana/provisioning/dashboards/kuma.yaml"},
		},
		{
			name:    "without-prometheus",
			opts:    func(o *install.Options) { o.WithoutPrometheus = true },
			removed: []string{"prometheus.yml"},
		},
		{
			name:    "without-grafana",
			opts:    func(o *install.Options) { o.WithoutGrafana = true },
			removed: grafanaFiles,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := universalOptions()
			tc.opts(&opts)
			got := renderUniversal(t, opts)
			if len(tc.back) > 0 {
				var in []string
				for k, content := range got {
					if strings.Contains(content, tc.marker) {
						in = append(in, k)
					}
				}
				require.ElementsMatch(t, tc.in, in, "where %q shows", tc.marker)
				back := strings.NewReplacer(tc.back...)
				for k, content := range got {
					got[k] = back.Replace(content)
				}
			}
			want := map[string]string{}
			for k, v := range def {
				want[k] = v
			}
			for _, k := range tc.removed {
				require.Contains(t, want, k)
				delete(want, k)
			}
			require.Equal(t, want, got, "nothing else changes")
		})
	}
}

func TestTrailingSlashOfTheCPAddress(t *testing.T) {
	opts := universalOptions()
	opts.KumaCPAddress = "http://127.0.0.1:5676/"
	job := scrapeJobs(t, renderUniversal(t, opts)["prometheus.yml"])["kuma-dataplanes"]
	require.Equal(t, "http://127.0.0.1:5676/v3/discovery:monitoringassignments/http_sd", job["http_sd_configs"].([]any)[0].(map[any]any)["url"])
}

func TestValidation(t *testing.T) {
	dash := func(files map[string]string) fs.FS {
		m := fstest.MapFS{}
		for k, v := range files {
			m[k] = &fstest.MapFile{Data: []byte(v)}
		}
		return m
	}
	for _, tc := range []struct {
		name      string
		universal bool
		opts      func(*install.Options)
		want      string
	}{
		{"empty namespace", false, func(o *install.Options) { o.Namespace = "" }, "--namespace must not be empty"},
		{"namespace with upper case", false, func(o *install.Options) { o.Namespace = "Kuma-Metrics" }, `--namespace "Kuma-Metrics" is not a valid namespace name`},
		{"namespace with a dot", false, func(o *install.Options) { o.Namespace = "kuma.metrics" }, `--namespace "kuma.metrics" is not a valid namespace name`},
		{"namespace too long", false, func(o *install.Options) { o.Namespace = strings.Repeat("a", 64) }, "--namespace"},
		{"empty mesh", false, func(o *install.Options) { o.Mesh = "" }, "--mesh must not be empty"},
		{"mesh with an underscore", false, func(o *install.Options) { o.Mesh = "my_mesh" }, `--mesh "my_mesh" is not a valid mesh name`},
		{"empty cp address", false, func(o *install.Options) { o.KumaCPAddress = "" }, "--kuma-cp-address must not be empty"},
		{"grpc cp address", false, func(o *install.Options) { o.KumaCPAddress = "grpc://kuma-control-plane.kuma-system:5676" }, "--kuma-cp-address \"grpc://kuma-control-plane.kuma-system:5676\": Prometheus and Grafana speak HTTP"},
		{"cp address without scheme", false, func(o *install.Options) { o.KumaCPAddress = "kuma-control-plane:5676" }, "--kuma-cp-address \"kuma-control-plane:5676\" must be an http:// or https:// URL"},
		{"cp address without host", false, func(o *install.Options) { o.KumaCPAddress = "http:///v3" }, "has no host"},
		{"cp address with a query", false, func(o *install.Options) { o.KumaCPAddress = "http://cp:5676?x=1" }, "must not have a query or a fragment"},
		{"cp address with credentials", false, func(o *install.Options) { o.KumaCPAddress = "http://u:p@cp:5676" }, "must not carry credentials"},
		{"cp address with port 0", false, func(o *install.Options) { o.KumaCPAddress = "http://cp:0" }, "has an invalid port"},
		{"cp address with port 70000", false, func(o *install.Options) { o.KumaCPAddress = "http://cp:70000" }, "has an invalid port"},
		{"empty cp api address", false, func(o *install.Options) { o.KumaCPAPIAddress = "" }, "--kuma-cp-api-address must not be empty"},
		{"ftp cp api address", false, func(o *install.Options) { o.KumaCPAPIAddress = "ftp://cp:5681" }, "--kuma-cp-api-address \"ftp://cp:5681\" must be an http:// or https:// URL"},
		{"unparsable cp api address", false, func(o *install.Options) { o.KumaCPAPIAddress = "http://cp:port" }, "--kuma-cp-api-address \"http://cp:port\" is not a URL"},
		{"every error at once", false, func(o *install.Options) { o.Namespace, o.Mesh = "", "" }, "--namespace must not be empty\n--mesh must not be empty"},
		{"no dashboards", false, func(o *install.Options) { o.Dashboards = nil }, "no dashboards given"},
		{"no dashboards without grafana is fine", false, func(o *install.Options) { o.Dashboards, o.WithoutGrafana = nil, true }, ""},
		{"no json in the dashboards", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a.txt": "{}"}) }, "no dashboards (*.json) given"},
		{"dashboard is not JSON", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a.json": "{"}) }, "dashboard a.json: not a JSON object"},
		{"dashboard is a JSON array", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a.json": "[]"}) }, "dashboard a.json: not a JSON object"},
		{
			"dashboard relies on __inputs", false,
			func(o *install.Options) {
				o.Dashboards = dash(map[string]string{"a.json": `{"__inputs": [{"name": "DS_PROMETHEUS"}], "panels": [{"datasource": "${DS_PROMETHEUS}"}]}`})
			},
			"dashboard a.json: it refers to ${DS_PROMETHEUS} but has no datasource variable DS_PROMETHEUS",
		},
		{"dashboards with one file name", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a/x.json": "{}", "b/x.json": "{}"}) }, "dashboards a/x.json and b/x.json have the same file name"},
		{"dashboards with one ConfigMap", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a_b.json": "{}", "a-b.json": "{}"}) }, "would share the ConfigMap grafana-dashboards-a-b"},
		{"dashboard with a space", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"a b.json": "{}"}) }, "dashboard a b.json: the file name may hold only"},
		{"dashboard without a name", false, func(o *install.Options) { o.Dashboards = dash(map[string]string{"_.json": "{}"}) }, "the file name needs a letter or digit"},

		{"universal: namespace and mesh do not matter", true, func(o *install.Options) { o.Namespace, o.Mesh = "", "" }, ""},
		{"universal: no output dir", true, func(o *install.Options) { o.OutputDir = "" }, "--output-dir is required with --universal"},
		{"universal: relative output dir", true, func(o *install.Options) { o.OutputDir = "metrics" }, `--output-dir "metrics" must be an absolute, clean path`},
		{"universal: unclean output dir", true, func(o *install.Options) { o.OutputDir = "/opt/x/../metrics/" }, "must be an absolute, clean path"},
		{"universal: nothing to write", true, func(o *install.Options) { o.WithoutPrometheus, o.WithoutGrafana = true, true }, "--without-prometheus and --without-grafana together leave nothing to write"},
		{"universal: grpc cp address", true, func(o *install.Options) { o.KumaCPAddress = "grpcs://cp:5676" }, "--kuma-cp-address \"grpcs://cp:5676\": Prometheus and Grafana speak HTTP"},
		{"CA file on Kubernetes", false, func(o *install.Options) { o.KumaCPCACertFile = "/ca.pem" }, "--kuma-cp-ca-cert-file applies only with --universal"},
		{"token file on Kubernetes", false, func(o *install.Options) { o.KumaCPTokenFile = "/t" }, "--kuma-cp-token-file applies only with --universal"},
		{"universal: relative CA file", true, func(o *install.Options) { o.KumaCPAddress, o.KumaCPCACertFile = "https://cp:5676", "ca.pem" }, `--kuma-cp-ca-cert-file "ca.pem" must be an absolute path`},
		{"universal: CA file for http", true, func(o *install.Options) { o.KumaCPCACertFile = "/ca.pem" }, `--kuma-cp-ca-cert-file applies only to an https:// --kuma-cp-address, got "http://127.0.0.1:5676"`},
		{"universal: token in clear to a remote host", true, func(o *install.Options) { o.KumaCPAddress, o.KumaCPTokenFile = "http://cp.internal:5676", "/t" },
			`--kuma-cp-token-file: the token would cross the network in clear to "http://cp.internal:5676"; use an https:// --kuma-cp-address`},
		{"universal: token over http to loopback", true, func(o *install.Options) { o.KumaCPTokenFile = "/t" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.universal {
				opts := universalOptions()
				tc.opts(&opts)
				_, err = install.RenderUniversal(opts)
			} else {
				opts := kubernetesOptions()
				tc.opts(&opts)
				_, err = install.RenderKubernetes(opts)
			}
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*install.Options)
	}{
		{"defaults", func(*install.Options) {}},
		{"without prometheus", func(o *install.Options) { o.WithoutPrometheus = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kubernetesOptions()
			tc.opts(&k)
			first, err := install.RenderKubernetes(k)
			require.NoError(t, err)
			u := universalOptions()
			tc.opts(&u)
			firstFiles, err := install.RenderUniversal(u)
			require.NoError(t, err)
			for range 5 {
				again, err := install.RenderKubernetes(k)
				require.NoError(t, err)
				require.True(t, bytes.Equal(first, again))
				againFiles, err := install.RenderUniversal(u)
				require.NoError(t, err)
				require.Equal(t, firstFiles, againFiles)
			}
		})
	}
}

func TestDashboardsRoundTrip(t *testing.T) {
	// Whatever a dashboard holds, its ConfigMap and its file hold the same bytes.
	for name, content := range map[string]string{
		"no final newline":   `{"title": "a"}`,
		"blank lines at end": "{\"title\": \"a\"}\n\n\n",
		"html and unicode":   "{\n  \"title\": \"<b>R&D</b> \u00e9\u2028\",\n  \"x\": \"---\"\n}\n",
		"tabs and trailing":  "{\n\t\"title\": \"a\",   \n\t\"y\": \"#not a comment\"\n}\n",
		"leading spaces":     "   {\"title\": \"a\"}\n",
	} {
		t.Run(name, func(t *testing.T) {
			opts := kubernetesOptions()
			opts.Dashboards = fstest.MapFS{"d.json": {Data: []byte(content)}}
			m := objectMap(t, renderKubernetes(t, opts))
			var cm struct {
				Data map[string]string `yaml:"data"`
			}
			require.NoError(t, yamlv2.Unmarshal([]byte(m["ConfigMap/grafana-dashboards-d"]), &cm))
			require.Equal(t, content, cm.Data["d.json"])

			u := universalOptions()
			u.Dashboards = opts.Dashboards
			require.Equal(t, content, renderUniversal(t, u)["grafana/dashboards/d.json"])
		})
	}
}

func TestUniversalSecuredDiscovery(t *testing.T) {
	opts := universalOptions()
	opts.KumaCPAddress = "https://cp.internal:5676"
	opts.KumaCPCACertFile = "/etc/prometheus/kuma-cp-ca.pem"
	opts.KumaCPTokenFile = "/etc/prometheus/kuma-cp.token"
	promYML := renderUniversal(t, opts)["prometheus.yml"]
	golden(t, "universal-secured-prometheus.yml", promYML)
	job := scrapeJobs(t, promYML)["kuma-dataplanes"]
	require.Equal(t, []any{map[any]any{
		"url":              "https://cp.internal:5676/v3/discovery:monitoringassignments/http_sd",
		"refresh_interval": "15s",
		"tls_config":       map[any]any{"ca_file": "/etc/prometheus/kuma-cp-ca.pem"},
		"authorization":    map[any]any{"type": "Bearer", "credentials_file": "/etc/prometheus/kuma-cp.token"},
	}}, job["http_sd_configs"])

	// The commented kuma_sd_configs alternative carries the same settings.
	var alt []string
	for _, line := range strings.Split(promYML, "\n") {
		if strings.HasPrefix(line, "  # kuma_sd_configs:") || strings.HasPrefix(line, "  # - server:") || strings.HasPrefix(line, "  #   ") {
			alt = append(alt, strings.Replace(line, "# ", "", 1))
		}
	}
	var kumaSD struct {
		KumaSDConfigs []map[string]any `yaml:"kuma_sd_configs"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(strings.Join(alt, "\n")), &kumaSD))
	require.Equal(t, []map[string]any{{
		"server":        "https://cp.internal:5676",
		"tls_config":    map[any]any{"ca_file": "/etc/prometheus/kuma-cp-ca.pem"},
		"authorization": map[any]any{"type": "Bearer", "credentials_file": "/etc/prometheus/kuma-cp.token"},
	}}, kumaSD.KumaSDConfigs)

	// Nothing else changes.
	plain := universalOptions()
	plain.KumaCPAddress = opts.KumaCPAddress
	var stripped []string
	for _, line := range strings.Split(promYML, "\n") {
		if !strings.Contains(line, "tls_config:") && !strings.Contains(line, "ca_file:") && !strings.Contains(line, "authorization:") &&
			!strings.Contains(line, "type: Bearer") && !strings.Contains(line, "credentials_file:") {
			stripped = append(stripped, line)
		}
	}
	require.Equal(t, renderUniversal(t, plain)["prometheus.yml"], strings.Join(stripped, "\n"))

	// A token over plain HTTP to the machine itself is fine.
	local := universalOptions()
	local.KumaCPTokenFile = "/etc/prometheus/kuma-cp.token"
	require.Contains(t, renderUniversal(t, local)["prometheus.yml"], "credentials_file:")
}

// TestUniversalPrometheusAddress: --prometheus-address is Prometheus' own
// scrape target and the Grafana datasources' Prometheus URL; a bad one is
// refused naming the flag, and Kubernetes refuses it.
func TestUniversalPrometheusAddress(t *testing.T) {
	opts := install.Options{
		KumaCPAddress: install.DefaultUniversalCPAddress, KumaCPAPIAddress: install.DefaultUniversalCPAPIAddress,
		WithoutGrafana: true, OutputDir: "/etc/kuma-metrics", PrometheusAddress: "127.0.0.7:19090",
	}
	files, err := install.RenderUniversal(opts)
	require.NoError(t, err)
	require.Contains(t, string(files[install.UniversalPrometheusFile]), "- job_name: prometheus\n  static_configs:\n  - targets:\n    - \"127.0.0.7:19090\"\n")

	for _, bad := range []string{"127.0.0.7", ":9090", "127.0.0.7:0", "127.0.0.7:http", "a b:9090"} {
		opts.PrometheusAddress = bad
		_, err := install.RenderUniversal(opts)
		require.ErrorContains(t, err, "--prometheus-address", bad)
	}
	k := opts
	k.PrometheusAddress, k.Namespace, k.Mesh, k.OutputDir = "127.0.0.7:19090", "kuma-metrics", "default", ""
	_, err = install.RenderKubernetes(k)
	require.ErrorContains(t, err, "--prometheus-address applies only with --universal")
}
