package install_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	yamlv2 "go.yaml.in/yaml/v2"

	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/install/dashboards"
	"github.com/kumametrics/mesh/pkg/install/installtest"
)

// provisionedDatasource is a datasource of Grafana's provisioning file.
type provisionedDatasource struct {
	Name      string         `yaml:"name"`
	UID       string         `yaml:"uid"`
	Type      string         `yaml:"type"`
	Access    string         `yaml:"access"`
	URL       string         `yaml:"url"`
	IsDefault bool           `yaml:"isDefault"`
	JSONData  map[string]any `yaml:"jsonData"`
}

func datasourcesOf(t *testing.T, file string) map[string]provisionedDatasource {
	t.Helper()
	var f struct {
		Datasources []provisionedDatasource `yaml:"datasources"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(file), &f))
	out := map[string]provisionedDatasource{}
	for _, d := range f.Datasources {
		out[d.UID] = d
	}
	return out
}

// TestKumaDatasourceProvisioned: both modes provision the Kuma datasource
// with uid kuma, the plugin's type, the control plane's API as its URL and
// the installed Prometheus as jsonData.prometheusUrl, which its backend
// queries itself (no Grafana datasource id to resolve).
func TestKumaDatasourceProvisioned(t *testing.T) {
	k8s := kubernetesOptions()
	k8s.KumaCPAPIAddress = "https://cp.example:5682"
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	m := objectMap(t, renderKubernetes(t, k8s))
	require.NoError(t, yamlv2.Unmarshal([]byte(m["ConfigMap/grafana-datasources"]), &cm))
	uni := universalOptions()
	elsewhere := universalOptions()
	elsewhere.PrometheusAddress = "127.0.0.7:19090"
	for name, tc := range map[string]struct {
		file, prometheusURL, cpURL string
	}{
		"kubernetes":                      {cm.Data["kuma.yaml"], "http://prometheus-server.kuma-metrics", "https://cp.example:5682"},
		"universal":                       {renderUniversal(t, uni)[install.UniversalDatasourcesFile], install.UniversalPrometheusURL, install.DefaultUniversalCPAPIAddress},
		"universal, Prometheus elsewhere": {renderUniversal(t, elsewhere)[install.UniversalDatasourcesFile], "http://127.0.0.7:19090", install.DefaultUniversalCPAPIAddress},
	} {
		t.Run(name, func(t *testing.T) {
			ds := datasourcesOf(t, tc.file)
			require.Len(t, ds, 2)
			kuma := ds[install.KumaDatasourceUID]
			require.Equal(t, "kuma", kuma.UID)
			require.Equal(t, "kumahq-kuma-datasource", kuma.Type)
			require.Equal(t, "proxy", kuma.Access, "the backend calls the control plane, not the browser")
			require.Equal(t, tc.cpURL, kuma.URL)
			require.Equal(t, map[string]any{"prometheusUrl": tc.prometheusURL}, kuma.JSONData)
			require.False(t, kuma.IsDefault)
			prom := ds[install.PrometheusDatasourceUID]
			require.Equal(t, tc.prometheusURL, prom.URL, "the Kuma datasource queries the same Prometheus")
		})
	}
	// On Kubernetes prometheusUrl is the Prometheus Service on port 80.
	var svc struct {
		Spec struct {
			Ports []struct {
				Port int `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(m["Service/prometheus-server"]), &svc))
	require.Equal(t, 80, svc.Spec.Ports[0].Port)
}

// TestServiceMapUsesTheProvisionedKumaDatasource: the real Kuma Mesh
// dashboard's Service Map (a node graph) runs a mesh-graph query on the
// datasource the installer provisions, uid kuma.
func TestServiceMapUsesTheProvisionedKumaDatasource(t *testing.T) {
	raw, err := dashboards.FS.ReadFile("kuma-mesh.json")
	require.NoError(t, err)
	type dsRef struct{ Type, UID string }
	var d struct {
		Panels []struct {
			Type, Title string
			Datasource  dsRef
			Targets     []struct {
				Datasource dsRef
				QueryType  string
				Mesh       string
			}
		}
		Templating struct {
			List []struct {
				Name    string
				Current struct{ Value string }
			}
		}
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars["${"+v.Name+"}"] = v.Current.Value
	}
	resolve := func(uid string) string {
		if v, ok := vars[uid]; ok {
			return v
		}
		return uid
	}
	provisioned := datasourcesOf(t, renderUniversal(t, install.UniversalDefaults("/opt/kuma-metrics", dashboards.FS))[install.UniversalDatasourcesFile])
	var found bool
	for _, p := range d.Panels {
		if p.Title != "Service Map" {
			continue
		}
		found = true
		require.Equal(t, "nodeGraph", p.Type)
		require.Equal(t, install.KumaDatasourceType, p.Datasource.Type)
		require.Equal(t, install.KumaDatasourceUID, resolve(p.Datasource.UID))
		require.Contains(t, provisioned, resolve(p.Datasource.UID))
		require.Len(t, p.Targets, 1)
		require.Equal(t, "mesh-graph", p.Targets[0].QueryType)
		require.Equal(t, install.KumaDatasourceUID, resolve(p.Targets[0].Datasource.UID))
	}
	require.True(t, found, "the Kuma Mesh dashboard has a Service Map")
}

// TestKubernetesGrafanaGetsThePluginWithoutDownloading: Grafana's pod
// downloads nothing at start-up: an init container of the plugin's image
// copies its folder into Grafana's plugins folder on the shared volume, and
// Grafana loads it unsigned by name. The init container's command, run here
// against a copy of the image's folder, installs the plugin (also on a
// restart, over an older copy).
func TestKubernetesGrafanaGetsThePluginWithoutDownloading(t *testing.T) {
	opts := kubernetesOptions()
	opts.GrafanaPluginImage = "registry.internal:5000/kuma-grafana-datasource:1.2.3"
	out := renderKubernetes(t, opts)
	require.NotContains(t, out, "GF_INSTALL_PLUGINS")
	require.NotContains(t, out, "https://github.com")
	type mount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	}
	type container struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Env     []struct {
			Name  string `yaml:"name"`
			Value string `yaml:"value"`
		} `yaml:"env"`
		VolumeMounts []mount `yaml:"volumeMounts"`
	}
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					InitContainers []container `yaml:"initContainers"`
					Containers     []container `yaml:"containers"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	require.NoError(t, yamlv2.Unmarshal([]byte(objectMap(t, out)["Deployment/grafana"]), &dep))
	pod := dep.Spec.Template.Spec
	require.Len(t, pod.InitContainers, 1)
	init, grafana := pod.InitContainers[0], pod.Containers[0]
	require.Equal(t, opts.GrafanaPluginImage, init.Image)
	env := map[string]string{}
	for _, e := range grafana.Env {
		env[e.Name] = e.Value
	}
	require.Equal(t, map[string]string{"GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS": "kumahq-kuma-datasource"}, env)
	// Both see the storage volume at Grafana's data path, whose plugins
	// folder (GF_PATHS_PLUGINS' default) Grafana scans.
	require.Contains(t, init.VolumeMounts, mount{Name: "storage", MountPath: "/var/lib/grafana"})
	require.Contains(t, grafana.VolumeMounts, mount{Name: "storage", MountPath: "/var/lib/grafana"})

	// Run the command on this machine: the image's folder and Grafana's
	// data path become folders of a temporary directory.
	require.Equal(t, []string{"sh", "-c"}, init.Command[:2])
	root := t.TempDir()
	image := filepath.Join(root, "image")
	data := filepath.Join(root, "grafana")
	files := installtest.PluginFiles(t)
	src := installtest.Dir(t, files)
	require.NoError(t, os.MkdirAll(image, 0o755))
	require.NoError(t, os.Rename(src, filepath.Join(image, install.KumaDatasourceType)))
	require.NoError(t, os.Chmod(filepath.Join(image, install.KumaDatasourceType, "gpx_kuma_linux_amd64"), 0o755))
	script := strings.ReplaceAll(init.Command[2], "/var/lib/grafana", data)
	script = regexp.MustCompile(`(^|\s)/`+install.KumaDatasourceType).ReplaceAllString(script, "${1}"+filepath.Join(image, install.KumaDatasourceType))
	require.NotEqual(t, init.Command[2], script)
	// An older plugin from a previous start is replaced, not merged.
	stale := filepath.Join(data, "plugins", install.KumaDatasourceType, "gpx_kuma_linux_386")
	require.NoError(t, os.MkdirAll(filepath.Dir(stale), 0o755))
	require.NoError(t, os.WriteFile(stale, []byte("old"), 0o755))
	for range 2 {
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		require.NoError(t, err, "%s: %s", script, out)
		got := readDir(t, filepath.Join(data, "plugins", install.KumaDatasourceType))
		require.Equal(t, len(files), len(got))
		for name, b := range files {
			require.Equal(t, string(b), got[name], name)
		}
		fi, err := os.Stat(filepath.Join(data, "plugins", install.KumaDatasourceType, "gpx_kuma_linux_amd64"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "the backend stays executable")
	}
}

func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	}))
	return out
}

// TestUniversalGrafanaSettings: grafana.ini points Grafana at the setup's
// provisioning and plugins folders and allows the Kuma datasource unsigned.
func TestUniversalGrafanaSettings(t *testing.T) {
	ini := renderUniversal(t, universalOptions())[install.UniversalGrafanaConfigFile]
	sections := map[string]map[string]string{}
	var section string
	for _, l := range strings.Split(ini, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "["):
			section = strings.Trim(l, "[]")
			sections[section] = map[string]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			require.True(t, ok, "line %q", l)
			sections[section][strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	require.Equal(t, map[string]map[string]string{
		"paths": {
			"provisioning": "/opt/kuma-metrics/grafana/provisioning",
			"plugins":      "/opt/kuma-metrics/grafana/plugins",
		},
		"plugins": {"allow_loading_unsigned_plugins": "kumahq-kuma-datasource"},
	}, sections)
}
