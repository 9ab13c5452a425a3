package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	httpsd "github.com/prometheus/prometheus/discovery/http"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/discovery/xds"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/require"
	yamlv2 "go.yaml.in/yaml/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The output of the built `kumactl install metrics`, with the real
// dashboards: the binary is built once (it must not be linked into this
// module, see doc.go) and run for every variant the tests read.
var (
	installOnce sync.Once
	installErr  error
	// manifests are the Kubernetes outputs by variant.
	manifests = map[string][]byte{}
	// universalFiles are the files of `--universal`, by slash path.
	universalFiles map[string][]byte
	universalDir   string
)

// kubernetesVariants are the kumactl arguments of each Kubernetes variant.
var kubernetesVariants = map[string][]string{
	"default": nil,
	"custom": {"--namespace", "observability", "--mesh", "payments",
		"--kuma-cp-address", "https://mads.example.com:5676", "--kuma-cp-api-address", "https://cp.example.com:5681"},
}

func kumactlOutputs(t *testing.T) {
	t.Helper()
	installOnce.Do(func() { installErr = runKumactl() })
	require.NoError(t, installErr)
}

func runKumactl() error {
	dir, err := os.MkdirTemp("", "interop-kumactl-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir, "./cmd/kumactl")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building kumactl: %w\n%s", err, out)
	}
	kumactl := filepath.Join(dir, "kumactl")
	run := func(args ...string) ([]byte, error) {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(kumactl, append([]string{"install", "metrics"}, args...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("kumactl install metrics %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.Bytes(), nil
	}
	for name, args := range kubernetesVariants {
		if manifests[name], err = run(args...); err != nil {
			return err
		}
	}
	plugin, err := pluginFolder(dir)
	if err != nil {
		return err
	}
	universalDir = filepath.Join(dir, "universal")
	if _, err := run("--universal", "--output-dir", universalDir, "--grafana-plugin", plugin); err != nil {
		return err
	}
	universalFiles = map[string][]byte{}
	return filepath.WalkDir(universalDir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(universalDir, p)
		universalFiles[filepath.ToSlash(rel)] = b
		return err
	})
}

// pluginFiles are the files of a built Kuma datasource plugin as --grafana-plugin
// takes it: the repository's plugin.json, a frontend and a backend binary.
var pluginFiles = []string{"plugin.json", "module.js", "gpx_kuma_linux_amd64"}

// pluginFolder lays out a plugin folder under dir and returns it.
func pluginFolder(dir string) (string, error) {
	manifest, err := os.ReadFile("../../grafana-datasource/src/plugin.json")
	if err != nil {
		return "", err
	}
	folder := filepath.Join(dir, "plugin")
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return "", err
	}
	for name, b := range map[string][]byte{pluginFiles[0]: manifest, pluginFiles[1]: []byte("define([], function () { return {}; });\n"), pluginFiles[2]: []byte("\x7fELF")} {
		if err := os.WriteFile(filepath.Join(folder, name), b, 0o644); err != nil {
			return "", err
		}
	}
	return folder, nil
}

// manifest is one decoded document.
type manifest struct {
	Kind, Name, Namespace string
	Object                any
}

// kinds are the kinds kumactl writes, with their apiVersion and Go type.
var kinds = map[string]struct {
	apiVersion string
	new        func() any
}{
	"Namespace":             {"v1", func() any { return &corev1.Namespace{} }},
	"ServiceAccount":        {"v1", func() any { return &corev1.ServiceAccount{} }},
	"ConfigMap":             {"v1", func() any { return &corev1.ConfigMap{} }},
	"Service":               {"v1", func() any { return &corev1.Service{} }},
	"PersistentVolumeClaim": {"v1", func() any { return &corev1.PersistentVolumeClaim{} }},
	"ClusterRole":           {"rbac.authorization.k8s.io/v1", func() any { return &rbacv1.ClusterRole{} }},
	"ClusterRoleBinding":    {"rbac.authorization.k8s.io/v1", func() any { return &rbacv1.ClusterRoleBinding{} }},
	"Deployment":            {"apps/v1", func() any { return &appsv1.Deployment{} }},
}

// decodeStrict decodes every document into its k8s.io/api type; an unknown
// field fails.
func decodeStrict(t *testing.T, out []byte) []manifest {
	t.Helper()
	var ms []manifest
	for i, doc := range bytes.Split(out, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		require.NoError(t, yaml.Unmarshal(doc, &head), "document %d", i)
		k, ok := kinds[head.Kind]
		require.True(t, ok, "document %d has the unexpected kind %q", i, head.Kind)
		require.Equal(t, k.apiVersion, head.APIVersion, "document %d (%s)", i, head.Kind)
		obj := k.new()
		require.NoError(t, yaml.UnmarshalStrict(doc, obj), "document %d (%s) does not decode strictly:\n%s", i, head.Kind, doc)
		meta := objectMeta(obj)
		require.NotEmpty(t, meta.name, "document %d", i)
		ms = append(ms, manifest{Kind: head.Kind, Name: meta.name, Namespace: meta.namespace, Object: obj})
	}
	return ms
}

type metaNames struct{ name, namespace string }

func objectMeta(obj any) metaNames {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return metaNames{o.Name, o.Namespace}
	case *corev1.ServiceAccount:
		return metaNames{o.Name, o.Namespace}
	case *corev1.ConfigMap:
		return metaNames{o.Name, o.Namespace}
	case *corev1.Service:
		return metaNames{o.Name, o.Namespace}
	case *corev1.PersistentVolumeClaim:
		return metaNames{o.Name, o.Namespace}
	case *rbacv1.ClusterRole:
		return metaNames{o.Name, o.Namespace}
	case *rbacv1.ClusterRoleBinding:
		return metaNames{o.Name, o.Namespace}
	case *appsv1.Deployment:
		return metaNames{o.Name, o.Namespace}
	}
	return metaNames{}
}

func TestStrictDecoding(t *testing.T) {
	require.Error(t, yaml.UnmarshalStrict([]byte("kind: Service\nspec:\n  portz: []\n"), &corev1.Service{}), "strict decoding must catch unknown fields")
}

// byKind indexes the manifests: kind → name → object.
func byKind(ms []manifest) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, m := range ms {
		if out[m.Kind] == nil {
			out[m.Kind] = map[string]any{}
		}
		out[m.Kind][m.Name] = m.Object
	}
	return out
}

// guideRelabel is the user guide's kuma-dataplanes relabel_configs.
const guideRelabel = `
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

// relabelRule is the part of a relabel.Config to compare.
type relabelRule struct {
	SourceLabels, Separator, Regex, TargetLabel, Replacement, Action string
}

func relabelRules(cfgs []*relabel.Config) []relabelRule {
	var out []relabelRule
	for _, c := range cfgs {
		out = append(out, relabelRule{
			SourceLabels: fmt.Sprint(c.SourceLabels), Separator: c.Separator, Regex: c.Regex.String(),
			TargetLabel: c.TargetLabel, Replacement: c.Replacement, Action: string(c.Action),
		})
	}
	return out
}

func guideRules(t *testing.T) []relabelRule {
	t.Helper()
	var cfgs []*relabel.Config
	require.NoError(t, yamlv2.UnmarshalStrict([]byte(guideRelabel), &cfgs))
	return relabelRules(cfgs)
}

// loadPrometheusConfig loads a prometheus.yml with Prometheus' own config
// package and returns its scrape configs by job.
func loadPrometheusConfig(t *testing.T, promYML string) map[string]*config.ScrapeConfig {
	t.Helper()
	cfg, err := config.Load(promYML, slog.New(slog.DiscardHandler))
	require.NoError(t, err, "prometheus.yml:\n%s", promYML)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	jobs := map[string]*config.ScrapeConfig{}
	for _, sc := range scs {
		jobs[sc.JobName] = sc
	}
	return jobs
}

func sdConfig[T discovery.Config](t *testing.T, sc *config.ScrapeConfig) T {
	t.Helper()
	require.Len(t, sc.ServiceDiscoveryConfigs, 1, "job %s", sc.JobName)
	c, ok := sc.ServiceDiscoveryConfigs[0].(T)
	require.True(t, ok, "job %s discovers with %T", sc.JobName, sc.ServiceDiscoveryConfigs[0])
	return c
}

func staticTargets(t *testing.T, sc *config.ScrapeConfig) []string {
	t.Helper()
	static := sdConfig[discovery.StaticConfig](t, sc)
	var out []string
	for _, g := range static {
		for _, tg := range g.Targets {
			out = append(out, string(tg["__address__"]))
		}
	}
	return out
}

func TestInstallMetricsKubernetesManifests(t *testing.T) {
	kumactlOutputs(t)
	for _, tc := range []struct {
		variant, namespace, mesh, mads, api, cpTarget string
	}{
		{"default", "kuma-metrics", "default", "http://kuma-control-plane.kuma-system:5676", "http://kuma-control-plane.kuma-system:5681", "kuma-control-plane.kuma-system:5680"},
		{"custom", "observability", "payments", "https://mads.example.com:5676", "https://cp.example.com:5681", "cp.example.com:5680"},
	} {
		t.Run(tc.variant, func(t *testing.T) {
			ms := decodeStrict(t, manifests[tc.variant])
			var got []string
			for _, m := range ms {
				got = append(got, m.Kind+"/"+m.Name)
				if m.Kind != "Namespace" && m.Kind != "ClusterRole" && m.Kind != "ClusterRoleBinding" {
					require.Equal(t, tc.namespace, m.Namespace, "%s/%s", m.Kind, m.Name)
				}
			}
			for _, want := range []string{
				"Namespace/" + tc.namespace,
				"ServiceAccount/prometheus-server", "ClusterRole/" + tc.namespace + "-prometheus-server",
				"ClusterRoleBinding/" + tc.namespace + "-prometheus-server", "ConfigMap/prometheus-server",
				"Deployment/prometheus-server", "Service/prometheus-server", "PersistentVolumeClaim/prometheus-server",
				"ServiceAccount/prometheus-kube-state-metrics", "Deployment/prometheus-kube-state-metrics", "Service/prometheus-kube-state-metrics",
				"ConfigMap/grafana-datasources", "ConfigMap/grafana-dashboard-providers", "Deployment/grafana", "Service/grafana",
			} {
				require.Contains(t, got, want)
			}
			objs := byKind(ms)

			ns := objs["Namespace"][tc.namespace].(*corev1.Namespace)
			require.Equal(t, "enabled", ns.Labels["kuma.io/sidecar-injection"])
			require.Equal(t, tc.mesh, ns.Annotations["kuma.io/mesh"])

			// The services as the guide's TrafficPermissions name them: <name>_<namespace>_svc_<port>.
			var meshServices []string
			for name, o := range objs["Service"] {
				for _, p := range o.(*corev1.Service).Spec.Ports {
					meshServices = append(meshServices, fmt.Sprintf("%s_%s_svc_%d", name, tc.namespace, p.Port))
				}
			}
			require.ElementsMatch(t, []string{
				"prometheus-server_" + tc.namespace + "_svc_80",
				"grafana_" + tc.namespace + "_svc_80",
				"prometheus-kube-state-metrics_" + tc.namespace + "_svc_80",
				"prometheus-kube-state-metrics_" + tc.namespace + "_svc_81",
			}, meshServices)
			svc := objs["Service"]["prometheus-server"].(*corev1.Service)
			require.Equal(t, "http", svc.Spec.Ports[0].TargetPort.String())
			require.Equal(t, int32(9090), containerPort(t, objs["Deployment"]["prometheus-server"].(*appsv1.Deployment), "http"))
			require.Equal(t, int32(3000), containerPort(t, objs["Deployment"]["grafana"].(*appsv1.Deployment), "http"))

			pvc := objs["PersistentVolumeClaim"]["prometheus-server"].(*corev1.PersistentVolumeClaim)
			require.Equal(t, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, pvc.Spec.AccessModes)
			require.Equal(t, "10Gi", pvc.Spec.Resources.Requests.Storage().String())

			// prometheus.yml loads with Prometheus' own configuration package.
			cm := objs["ConfigMap"]["prometheus-server"].(*corev1.ConfigMap)
			jobs := loadPrometheusConfig(t, cm.Data["prometheus.yml"])
			require.ElementsMatch(t, []string{"kuma-dataplanes", "kuma-cp", "prometheus", "kube-state-metrics", "kubernetes-pods", "kubernetes-service-endpoints"}, keys(jobs))

			dp := jobs["kuma-dataplanes"]
			require.Equal(t, "5s", dp.ScrapeInterval.String())
			// The guide's rules, then plain text: Prometheus is in the mesh
			// and its proxy brings mTLS where the endpoint serves it.
			rules := relabelRules(dp.RelabelConfigs)
			require.Equal(t, guideRules(t), rules[:len(rules)-1])
			last := rules[len(rules)-1]
			require.Equal(t, []string{"__scheme__", "http", "replace"}, []string{last.TargetLabel, last.Replacement, last.Action})
			require.Equal(t, tc.mads, sdConfig[*xds.KumaSDConfig](t, dp).Server)

			require.Equal(t, []string{tc.cpTarget}, staticTargets(t, jobs["kuma-cp"]))
			require.Equal(t, "/metrics", jobs["kuma-cp"].MetricsPath)

			require.Equal(t, kubernetes.RolePod, sdConfig[*kubernetes.SDConfig](t, jobs["kubernetes-pods"]).Role)
			require.Equal(t, kubernetes.RoleEndpointSlice, sdConfig[*kubernetes.SDConfig](t, jobs["kubernetes-service-endpoints"]).Role)
			var keep []string
			for _, r := range jobs["kubernetes-pods"].RelabelConfigs {
				if r.Action == relabel.Keep {
					keep = append(keep, fmt.Sprint(r.SourceLabels))
				}
			}
			require.Equal(t, []string{"__meta_kubernetes_pod_annotation_prometheus_io_scrape"}, keep)

			require.Equal(t, []string{
				"prometheus-kube-state-metrics." + tc.namespace + ":80",
				"prometheus-kube-state-metrics." + tc.namespace + ":81",
			}, staticTargets(t, jobs["kube-state-metrics"]))

			// The Grafana datasources.
			checkDatasources(t, objs["ConfigMap"]["grafana-datasources"].(*corev1.ConfigMap).Data["kuma.yaml"],
				"http://prometheus-server."+tc.namespace, tc.api)
		})
	}
}

func containerPort(t *testing.T, d *appsv1.Deployment, name string) int32 {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
	}
	t.Fatalf("deployment %s has no port %s", d.Name, name)
	return 0
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// grafanaDatasources is Grafana's datasource provisioning file.
type grafanaDatasources struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string         `yaml:"name"`
		UID       string         `yaml:"uid"`
		Type      string         `yaml:"type"`
		Access    string         `yaml:"access"`
		URL       string         `yaml:"url"`
		IsDefault bool           `yaml:"isDefault"`
		Editable  bool           `yaml:"editable"`
		JSONData  map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

func checkDatasources(t *testing.T, file, prometheusURL, apiURL string) {
	t.Helper()
	var ds grafanaDatasources
	require.NoError(t, yamlv2.UnmarshalStrict([]byte(file), &ds))
	require.Equal(t, 1, ds.APIVersion)
	require.Len(t, ds.Datasources, 2)
	prom, kuma := ds.Datasources[0], ds.Datasources[1]
	require.Equal(t, "prometheus", prom.Type)
	require.Equal(t, "prometheus", prom.UID)
	require.Equal(t, prometheusURL, prom.URL)
	require.True(t, prom.IsDefault)
	require.Equal(t, "kumahq-kuma-datasource", kuma.Type)
	require.Equal(t, "kuma", kuma.UID)
	require.Equal(t, apiURL, kuma.URL)
	require.Equal(t, map[string]any{"prometheusUrl": prometheusURL}, kuma.JSONData)
}

// dsVariable matches the uid references of datasource variables.
var dsVariable = regexp.MustCompile(`\$\{(DS_[A-Z0-9_]+)\}`)

// checkDashboard checks that a dashboard is JSON whose datasource variables
// default to the provisioned datasources.
func checkDashboard(t *testing.T, name string, b []byte) {
	t.Helper()
	var d struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name    string `json:"name"`
				Type    string `json:"type"`
				Query   any    `json:"query"`
				Current struct {
					Value any `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
	}
	require.NoError(t, json.Unmarshal(b, &d), name)
	require.NotEmpty(t, d.Title, name)
	uids := map[string]string{"prometheus": "prometheus", "kumahq-kuma-datasource": "kuma"}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		if v.Type != "datasource" {
			continue
		}
		vars[v.Name] = true
		uid, ok := uids[fmt.Sprint(v.Query)]
		require.True(t, ok, "%s: datasource variable %s of an unprovisioned type %v", name, v.Name, v.Query)
		if v.Current.Value != nil && v.Current.Value != "" {
			require.Equal(t, uid, v.Current.Value, "%s: variable %s", name, v.Name)
		}
	}
	for _, m := range dsVariable.FindAllSubmatch(b, -1) {
		require.True(t, vars[string(m[1])], "%s refers to ${%s} without such a datasource variable", name, m[1])
	}
}

func TestInstallMetricsKubernetesSemantics(t *testing.T) {
	kumactlOutputs(t)
	ms := decodeStrict(t, manifests["default"])
	objs := byKind(ms)

	// Every Deployment: pinned images, probes, resources, in the mesh; what it
	// mounts and runs as exists.
	require.Len(t, objs["Deployment"], 3)
	for name, o := range objs["Deployment"] {
		d := o.(*appsv1.Deployment)
		pod := d.Spec.Template
		require.Equal(t, "default", pod.Annotations["kuma.io/mesh"], name)
		require.NotNil(t, d.Spec.Selector, name)
		sel, err := metaSelector(d)
		require.NoError(t, err)
		require.True(t, sel.Matches(labels.Set(pod.Labels)), "%s: the selector does not match the pod's labels", name)
		require.NotEmpty(t, pod.Spec.Containers, name)
		for _, c := range pod.Spec.Containers {
			repo, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
			require.True(t, ok && tag != "" && tag != "latest", "%s: image %q is not pinned to a tag", name, c.Image)
			require.NotEmpty(t, repo)
			require.NotNil(t, c.ReadinessProbe, "%s/%s: readiness probe", name, c.Name)
			require.NotNil(t, c.LivenessProbe, "%s/%s: liveness probe", name, c.Name)
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
				require.NotNil(t, p.HTTPGet, "%s/%s", name, c.Name)
				require.NotZero(t, containerPortOf(c, p.HTTPGet.Port.String()), "%s/%s: probe port %s", name, c.Name, p.HTTPGet.Port.String())
			}
			require.False(t, c.Resources.Requests.Memory().IsZero(), "%s/%s: memory request", name, c.Name)
			require.False(t, c.Resources.Limits.Memory().IsZero(), "%s/%s: memory limit", name, c.Name)
			require.NotNil(t, c.SecurityContext, "%s/%s", name, c.Name)
			require.Equal(t, ptrFalse, c.SecurityContext.AllowPrivilegeEscalation, "%s/%s", name, c.Name)
			mounted := map[string]bool{}
			for _, m := range c.VolumeMounts {
				mounted[m.Name] = true
			}
			for _, v := range pod.Spec.Volumes {
				require.True(t, mounted[v.Name], "%s: volume %s is not mounted", name, v.Name)
			}
		}
		require.Contains(t, objs["ServiceAccount"], pod.Spec.ServiceAccountName, name)
		for _, v := range pod.Spec.Volumes {
			switch {
			case v.ConfigMap != nil:
				require.Contains(t, objs["ConfigMap"], v.ConfigMap.Name, "%s mounts a missing ConfigMap", name)
			case v.Projected != nil:
				require.NotEmpty(t, v.Projected.Sources)
				for _, s := range v.Projected.Sources {
					require.NotNil(t, s.ConfigMap)
					require.Contains(t, objs["ConfigMap"], s.ConfigMap.Name, "%s mounts a missing ConfigMap", name)
				}
			case v.PersistentVolumeClaim != nil:
				require.Contains(t, objs["PersistentVolumeClaim"], v.PersistentVolumeClaim.ClaimName, name)
			case v.EmptyDir != nil:
			default:
				t.Fatalf("%s: unexpected volume %s", name, v.Name)
			}
		}
	}

	// Every Service selects the pods of exactly one Deployment, on ports it has.
	for name, o := range objs["Service"] {
		svc := o.(*corev1.Service)
		var selected []string
		for dname, d := range objs["Deployment"] {
			pod := d.(*appsv1.Deployment).Spec.Template
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(pod.Labels)) {
				selected = append(selected, dname)
				for _, p := range svc.Spec.Ports {
					require.NotZero(t, containerPortOf(pod.Spec.Containers[0], p.TargetPort.String()), "service %s: target port %s", name, p.TargetPort.String())
				}
			}
		}
		require.Equal(t, []string{name}, selected, "service %s", name)
	}

	// Every binding grants an existing role to an existing account.
	for name, o := range objs["ClusterRoleBinding"] {
		b := o.(*rbacv1.ClusterRoleBinding)
		require.Equal(t, "ClusterRole", b.RoleRef.Kind)
		require.Contains(t, objs["ClusterRole"], b.RoleRef.Name, name)
		for _, s := range b.Subjects {
			require.Equal(t, "ServiceAccount", s.Kind)
			require.Equal(t, "kuma-metrics", s.Namespace)
			require.Contains(t, objs["ServiceAccount"], s.Name, name)
		}
	}
	// Prometheus may discover pods, services and endpoints, and read /metrics.
	role := objs["ClusterRole"]["kuma-metrics-prometheus-server"].(*rbacv1.ClusterRole)
	for _, res := range []string{"pods", "services", "endpoints", "nodes", "nodes/metrics"} {
		require.True(t, allows(role, "", res, "list") && allows(role, "", res, "watch") && allows(role, "", res, "get"), res)
	}
	require.True(t, allows(role, "discovery.k8s.io", "endpointslices", "watch"))
	// kube-state-metrics may not read Secrets.
	ksm := objs["ClusterRole"]["kuma-metrics-prometheus-kube-state-metrics"].(*rbacv1.ClusterRole)
	require.True(t, allows(ksm, "apps", "deployments", "list"))
	require.False(t, allows(ksm, "", "secrets", "list"))

	// Grafana: the provisioning files parse; the dashboard provider reads the
	// directory the dashboards are mounted at; every dashboard is there.
	cms := objs["ConfigMap"]
	checkDatasources(t, cms["grafana-datasources"].(*corev1.ConfigMap).Data["kuma.yaml"], "http://prometheus-server.kuma-metrics", "http://kuma-control-plane.kuma-system:5681")
	providerPath := dashboardProviderPath(t, cms["grafana-dashboard-providers"].(*corev1.ConfigMap).Data["kuma.yaml"])
	grafana := objs["Deployment"]["grafana"].(*appsv1.Deployment).Spec.Template.Spec
	mounts := map[string]string{}
	for _, m := range grafana.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	require.Equal(t, "/etc/grafana/provisioning/datasources", mounts["datasources"])
	require.Equal(t, "/etc/grafana/provisioning/dashboards", mounts["dashboard-providers"])
	require.Equal(t, providerPath, mounts["dashboards"])
	var env []string
	for _, e := range grafana.Containers[0].Env {
		env = append(env, e.Name+"="+e.Value)
	}
	require.Equal(t, []string{"GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS=kumahq-kuma-datasource"}, env)
	// The plugin comes from an init container of its image, into Grafana's
	// plugins folder on the storage volume: nothing is downloaded.
	require.Len(t, grafana.InitContainers, 1)
	require.True(t, strings.HasPrefix(grafana.InitContainers[0].Image, "docker.io/kumametrics/kuma-grafana-datasource:"), grafana.InitContainers[0].Image)
	require.Contains(t, strings.Join(grafana.InitContainers[0].Command, " "), "/var/lib/grafana/plugins")
	require.Equal(t, "/var/lib/grafana", grafana.InitContainers[0].VolumeMounts[0].MountPath)

	var dashboards []string
	for _, v := range grafana.Volumes {
		if v.Name != "dashboards" {
			continue
		}
		for _, s := range v.Projected.Sources {
			cm := cms[s.ConfigMap.Name].(*corev1.ConfigMap)
			require.Len(t, cm.Data, 1, s.ConfigMap.Name)
			for file, content := range cm.Data {
				dashboards = append(dashboards, file)
				checkDashboard(t, file, []byte(content))
			}
			// `kubectl apply` records the object in an annotation of at most 256 KiB.
			js, err := json.Marshal(cm)
			require.NoError(t, err)
			require.Less(t, len(js), 256*1024-1024, "ConfigMap %s is too large for kubectl apply", cm.Name)
		}
	}
	require.Contains(t, dashboards, "kuma-mesh.json")
	require.Contains(t, dashboards, "kuma-cp.json")
}

var ptrFalse = func() *bool { f := false; return &f }()

func metaSelector(d *appsv1.Deployment) (labels.Selector, error) {
	if len(d.Spec.Selector.MatchExpressions) > 0 {
		return nil, fmt.Errorf("deployment %s: match expressions are not expected", d.Name)
	}
	return labels.SelectorFromSet(d.Spec.Selector.MatchLabels), nil
}

func containerPortOf(c corev1.Container, port string) int32 {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return p.ContainerPort
		}
	}
	return 0
}

func allows(role *rbacv1.ClusterRole, group, resource, verb string) bool {
	for _, r := range role.Rules {
		if contains(r.APIGroups, group) && contains(r.Resources, resource) && contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s || v == "*" {
			return true
		}
	}
	return false
}

func dashboardProviderPath(t *testing.T, file string) string {
	t.Helper()
	var p struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(file), &p))
	require.Equal(t, 1, p.APIVersion)
	require.Len(t, p.Providers, 1)
	require.Equal(t, "file", p.Providers[0].Type)
	return p.Providers[0].Options.Path
}

func TestInstallMetricsUniversal(t *testing.T) {
	kumactlOutputs(t)
	promYML := string(universalFiles["prometheus.yml"])
	jobs := loadPrometheusConfig(t, promYML)
	require.ElementsMatch(t, []string{"kuma-dataplanes", "kuma-cp", "prometheus"}, keys(jobs))
	dp := jobs["kuma-dataplanes"]
	require.Equal(t, guideRules(t), relabelRules(dp.RelabelConfigs))
	httpSD := sdConfig[*httpsd.SDConfig](t, dp)
	require.Equal(t, "http://127.0.0.1:5676/v3/discovery:monitoringassignments/http_sd", httpSD.URL)
	require.Equal(t, "15s", httpSD.RefreshInterval.String())
	require.Equal(t, []string{"127.0.0.1:5680"}, staticTargets(t, jobs["kuma-cp"]))

	// The commented kuma_sd_configs alternative loads too, in place of http_sd_configs.
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
	altJobs := loadPrometheusConfig(t, strings.Join(alt, "\n"))
	require.Equal(t, "http://127.0.0.1:5676", sdConfig[*xds.KumaSDConfig](t, altJobs["kuma-dataplanes"]).Server)
	require.Equal(t, guideRules(t), relabelRules(altJobs["kuma-dataplanes"].RelabelConfigs))

	// Grafana's provisioning points into the output directory, which holds the dashboards.
	checkDatasources(t, string(universalFiles["grafana/provisioning/datasources/kuma.yaml"]), "http://127.0.0.1:9090", "http://127.0.0.1:5681")
	require.Equal(t, filepath.Join(universalDir, "grafana", "dashboards"),
		dashboardProviderPath(t, string(universalFiles["grafana/provisioning/dashboards/kuma.yaml"])))
	var dashboards []string
	for name, b := range universalFiles {
		if dir, file := filepath.Split(name); dir == "grafana/dashboards/" {
			dashboards = append(dashboards, file)
			checkDashboard(t, file, b)
		}
	}
	require.Contains(t, dashboards, "kuma-mesh.json")
	// Grafana's settings and the plugin.
	require.Contains(t, string(universalFiles["grafana/grafana.ini"]), "plugins = "+filepath.Join(universalDir, "grafana", "plugins")+"\n")
	for _, f := range pluginFiles {
		require.Contains(t, universalFiles, "grafana/plugins/kumahq-kuma-datasource/"+f)
	}
	require.Len(t, universalFiles, 4+len(dashboards)+len(pluginFiles))
}
