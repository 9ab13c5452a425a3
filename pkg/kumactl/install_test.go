package kumactl_test

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/install/installtest"
	"github.com/kumametrics/mesh/pkg/k8s/crds"
	"github.com/kumametrics/mesh/pkg/kumactl"
	"github.com/kumametrics/mesh/pkg/version"
)

// testDashboards stand in for the real dashboards, so that the golden files
// do not change with them.
func testDashboards() fstest.MapFS {
	return fstest.MapFS{
		"kuma-mesh.json": {Data: []byte(`{
  "title": "Test Mesh",
  "panels": [{"datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}],
  "templating": {"list": [{"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus"}]}
}
`)},
	}
}

// runInstall runs kumactl with args, with dashboards (the real ones when nil).
func runInstall(dashboards fs.FS, args ...string) result {
	var stdout, stderr bytes.Buffer
	rc := &kumactl.RootContext{Stdout: &stdout, Stderr: &stderr, Dashboards: dashboards}
	code := kumactl.Execute(context.Background(), rc, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func TestInstallMetricsKubernetes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		opts func(*install.Options)
	}{
		{"defaults", nil, func(*install.Options) {}},
		{"namespace", []string{"--namespace", "observability"}, func(o *install.Options) { o.Namespace = "observability" }},
		{"mesh", []string{"-m", "payments"}, func(o *install.Options) { o.Mesh = "payments" }},
		{"kuma-cp-address", []string{"--kuma-cp-address", "https://mads.example.com:5676"}, func(o *install.Options) { o.KumaCPAddress = "https://mads.example.com:5676" }},
		{"kuma-cp-api-address", []string{"--kuma-cp-api-address", "https://cp.example.com"}, func(o *install.Options) { o.KumaCPAPIAddress = "https://cp.example.com" }},
		{"without-prometheus", []string{"--without-prometheus"}, func(o *install.Options) { o.WithoutPrometheus = true }},
		{"without-grafana", []string{"--without-grafana"}, func(o *install.Options) { o.WithoutGrafana = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := install.KubernetesDefaults(testDashboards())
			tc.opts(&opts)
			want, err := install.RenderKubernetes(opts)
			require.NoError(t, err)
			res := runInstall(testDashboards(), append([]string{"install", "metrics"}, tc.args...)...)
			require.Equal(t, result{stdout: string(want)}, res)
		})
	}
}

func TestInstallMetricsGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"only the namespace", []string{"install", "metrics", "--without-prometheus", "--without-grafana", "--namespace", "observability", "--mesh", "payments"}},
		{"invalid namespace", []string{"install", "metrics", "--namespace", "Kuma_Metrics"}},
		{"invalid mesh and address", []string{"install", "metrics", "--mesh", "a.b", "--kuma-cp-address", "grpc://kuma-control-plane.kuma-system:5676"}},
		{"output-dir without universal", []string{"install", "metrics", "--output-dir", "out"}},
		{"overwrite without universal", []string{"install", "metrics", "--overwrite"}},
		{"universal without output-dir", []string{"install", "metrics", "--universal"}},
		{"universal with namespace", []string{"install", "metrics", "--universal", "--output-dir", "out", "--namespace", "x"}},
		{"universal with mesh", []string{"install", "metrics", "--universal", "--output-dir", "out", "-m", "x"}},
		{"universal without anything", []string{"install", "metrics", "--universal", "--output-dir", "out", "--without-prometheus", "--without-grafana"}},
		{"CA file without universal", []string{"install", "metrics", "--kuma-cp-ca-cert-file", "/etc/prometheus/ca.pem"}},
		{"token file without universal", []string{"install", "metrics", "--kuma-cp-token-file", "/etc/prometheus/token"}},
		{"universal token in clear to a remote control plane", []string{"install", "metrics", "--universal", "--output-dir", "out",
			"--kuma-cp-address", "http://cp.internal:5676", "--kuma-cp-token-file", "/etc/prometheus/token"}},
		{"universal CA file for http", []string{"install", "metrics", "--universal", "--output-dir", "out", "--kuma-cp-ca-cert-file", "/etc/prometheus/ca.pem"}},
		{"universal without the plugin", []string{"install", "metrics", "--universal", "--output-dir", "out"}},
		{"universal with a missing plugin", []string{"install", "metrics", "--universal", "--output-dir", "out", "--grafana-plugin", "nope.zip"}},
		{"universal plugin without grafana", []string{"install", "metrics", "--universal", "--output-dir", "out", "--without-grafana", "--grafana-plugin", "nope.zip"}},
		{"universal with the plugin image", []string{"install", "metrics", "--universal", "--output-dir", "out", "--grafana-plugin-image", "x:1"}},
		{"plugin without universal", []string{"install", "metrics", "--grafana-plugin", "nope.zip"}},
		{"empty plugin image", []string{"install", "metrics", "--grafana-plugin-image", ""}},
		{"prometheus address without universal", []string{"install", "metrics", "--prometheus-address", "127.0.0.7:19090"}},
		{"universal bad prometheus address", []string{"install", "metrics", "--universal", "--output-dir", "out", "--without-grafana", "--prometheus-address", "127.0.0.7"}},
		{"an argument", []string{"install", "metrics", "extra"}},
		{"unknown install", []string{"install", "tracing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "install/"+tc.name, runInstall(testDashboards(), tc.args...).String())
		})
	}
	// Nothing was written for the failing Universal runs.
	_, err := os.Stat("out")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

// readTree reads every file under dir, keyed by slash-separated path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return err
	}))
	return files
}

func TestInstallMetricsUniversal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kuma metrics") // a path the printed command must quote
	run := func(args ...string) result {
		return runInstall(testDashboards(), append([]string{"install", "metrics", "--universal", "--output-dir", dir}, args...)...)
	}
	placeholders := []string{dir, "{{DIR}}"}

	plugin := installtest.PluginFiles(t)
	res := run("--grafana-plugin", installtest.Zip(t, install.KumaDatasourceType+"/", plugin))
	golden(t, "install/universal", res.String(), placeholders...)
	want, err := install.RenderUniversal(install.UniversalDefaults(dir, testDashboards()))
	require.NoError(t, err)
	for name, b := range plugin {
		want[install.PluginFolder+"/"+name] = b
	}
	require.Equal(t, want, readTree(t, dir))
	fi, err := os.Stat(filepath.Join(dir, install.PluginFolder, "gpx_kuma_linux_arm64"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o755), fi.Mode().Perm())

	// The plugin is there: a second run with Grafana refuses to replace it.
	res = run("--without-prometheus", "--grafana-plugin", installtest.Dir(t, plugin))
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "already has grafana/")
	fi, err = os.Stat(filepath.Join(dir, "prometheus.yml"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())

	// A second run refuses to replace a file it would write, and writes nothing.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte("mine\n"), 0o644))
	res = run("--without-grafana")
	golden(t, "install/universal again", res.String(), placeholders...)
	require.Equal(t, "mine\n", string(readTree(t, dir)["prometheus.yml"]))

	// --overwrite replaces them, with the flags' addresses.
	res = run("--overwrite", "--without-grafana", "--kuma-cp-address", "https://cp.internal:5676", "--kuma-cp-api-address", "https://cp.internal:5681")
	golden(t, "install/universal overwrite", res.String(), placeholders...)
	opts := install.UniversalDefaults(dir, testDashboards())
	opts.KumaCPAddress, opts.KumaCPAPIAddress, opts.WithoutGrafana = "https://cp.internal:5676", "https://cp.internal:5681", true
	want, err = install.RenderUniversal(opts)
	require.NoError(t, err)
	got := readTree(t, dir)
	require.Equal(t, want["prometheus.yml"], got["prometheus.yml"])
	require.Contains(t, string(got["prometheus.yml"]), "https://cp.internal:5676/v3/discovery:monitoringassignments/http_sd")

	// A relative --output-dir is made absolute.
	base := t.TempDir()
	t.Chdir(base)
	res = runInstall(testDashboards(), "install", "metrics", "--universal", "--output-dir", "rel", "--without-prometheus", "--grafana-plugin", installtest.Dir(t, plugin))
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, string(readTree(t, filepath.Join(base, "rel"))["grafana/provisioning/dashboards/kuma.yaml"]),
		`path: "`+filepath.Join(base, "rel", "grafana", "dashboards")+`"`)

	// Secured discovery: the CA and token files, made absolute, in the job.
	res = runInstall(testDashboards(), "install", "metrics", "--universal", "--output-dir", "secured", "--without-grafana",
		"--kuma-cp-address", "https://cp.internal:5676", "--kuma-cp-ca-cert-file", "ca.pem", "--kuma-cp-token-file", "prometheus.token")
	require.Equal(t, 0, res.code, res.stderr)
	opts = install.UniversalDefaults(filepath.Join(base, "secured"), testDashboards())
	opts.KumaCPAddress, opts.WithoutGrafana = "https://cp.internal:5676", true
	opts.KumaCPCACertFile, opts.KumaCPTokenFile = filepath.Join(base, "ca.pem"), filepath.Join(base, "prometheus.token")
	want, err = install.RenderUniversal(opts)
	require.NoError(t, err)
	require.Equal(t, string(want["prometheus.yml"]), string(readTree(t, filepath.Join(base, "secured"))["prometheus.yml"]))
	require.Contains(t, string(want["prometheus.yml"]), `credentials_file: "`+filepath.Join(base, "prometheus.token")+`"`)
}

func TestInstallMetricsUniversalRefusesADirectoryInTheWay(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "prometheus.yml"), 0o755))
	res := runInstall(testDashboards(), "install", "metrics", "--universal", "--output-dir", dir, "--overwrite", "--without-grafana")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "prometheus.yml exists and is not a regular file")
}

func TestInstallMetricsShipsTheDashboards(t *testing.T) {
	// Without injected dashboards the command provisions the real ones.
	res := runInstall(nil, "install", "metrics")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "name: grafana-dashboards-kuma-mesh\n")
	require.True(t, strings.HasPrefix(res.stdout, "apiVersion: v1\nkind: Namespace\n"))
}

// testdataTLS are the flags of the install package's test certificate (for
// kuma-control-plane in kuma-system).
var testdataTLS = []string{
	"--tls-cert", "../install/testdata/control-plane-tls/tls.crt",
	"--tls-key", "../install/testdata/control-plane-tls/tls.key",
	"--ca-cert", "../install/testdata/control-plane-tls/ca.crt",
}

func TestInstallControlPlane(t *testing.T) {
	// With the flags' TLS: exactly the install package's rendering of them.
	res := runInstall(nil, append([]string{"install", "control-plane", "--image-tag", "1.2.3"}, testdataTLS...)...)
	require.Equal(t, 0, res.code, res.stderr)
	read := func(name string) []byte {
		b, err := os.ReadFile("../install/testdata/control-plane-tls/" + name)
		require.NoError(t, err)
		return b
	}
	want, err := install.RenderControlPlane(install.ControlPlaneOptions{
		Namespace: "kuma-system", Image: install.DefaultControlPlaneImage, ImageTag: "1.2.3",
		TLS: install.ControlPlaneTLS{Cert: read("tls.crt"), Key: read("tls.key"), CA: read("ca.crt")},
	})
	require.NoError(t, err)
	require.Equal(t, result{stdout: string(want)}, res)

	// Without: generated for the namespace, anew every time; the image's
	// tag is kumactl's version.
	res = runInstall(nil, "install", "control-plane", "--namespace", "mesh-system", "--image", "registry.example.com/kuma-cp")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, "\n  name: kuma-control-plane\n  namespace: mesh-system\n")
	require.Contains(t, res.stdout, "image: registry.example.com/kuma-cp:"+version.Version+"\n")
	again := runInstall(nil, "install", "control-plane", "--namespace", "mesh-system", "--image", "registry.example.com/kuma-cp")
	require.NotEqual(t, res.stdout, again.stdout)
	secretData := regexp.MustCompile(`(?m)^ +(tls\.crt|tls\.key|ca\.crt|checksum/tls|caBundle): .*$`)
	mask := func(s string) string { return secretData.ReplaceAllString(s, "MASKED") }
	require.Equal(t, 7, len(secretData.FindAllString(res.stdout, -1)), "the Secret, the checksum, and the caBundle of three webhooks")
	require.Equal(t, mask(res.stdout), mask(again.stdout), "only the TLS material differs")
}

func TestInstallCRDs(t *testing.T) {
	res := runInstall(nil, "install", "crds")
	want, err := install.RenderCRDs()
	require.NoError(t, err)
	require.Equal(t, result{stdout: string(want)}, res)
	require.Equal(t, strings.Count(string(want), "kind: CustomResourceDefinition\n"), len(crds.Manifests()))
}

// TestInstallWebhooks: the registration by URL of a control plane outside
// the cluster is the install package's, at the admission server's paths,
// with the CA file as caBundle and the user's own writes exempted when
// named: the validating webhook and the sidecar injector by default, either
// one alone with --webhooks.
func TestInstallWebhooks(t *testing.T) {
	ca, err := os.ReadFile(testdataTLS[5])
	require.NoError(t, err)
	injector, err := install.RenderInjectorConfiguration(install.WebhookOptions{URL: "https://192.0.2.10:5443" + install.InjectorPath, CABundle: ca})
	require.NoError(t, err)
	for _, user := range []string{"", "kuma-cp"} {
		args := []string{"install", "webhooks", "--url", "https://192.0.2.10:5443/", "--ca-cert-file", testdataTLS[5]}
		if user != "" {
			args = append(args, "--control-plane-user", user)
		}
		validating, err := install.RenderWebhookConfiguration(install.WebhookOptions{URL: "https://192.0.2.10:5443" + install.WebhookPath, CABundle: ca, ControlPlaneUser: user})
		require.NoError(t, err)
		res := runInstall(nil, args...)
		require.Equal(t, result{stdout: string(validating) + "---\n" + string(injector)}, res)
		require.Equal(t, user != "", strings.Contains(res.stdout, "request.userInfo.username != 'kuma-cp'"))
		require.Equal(t, result{stdout: string(validating)}, runInstall(nil, append(args, "--webhooks", "validating")...))
		require.Equal(t, result{stdout: string(injector)}, runInstall(nil, append(args, "--webhooks", "injector")...))
	}
}

func TestInstallControlPlaneGolden(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"control-plane", append([]string{"install", "control-plane", "--image-tag", "1.2.3"}, testdataTLS...)},
		{"control-plane bad flags", []string{"install", "control-plane", "--namespace", "Kuma", "--image", "kuma-cp:1.0", "--image-tag", "-x"}},
		{"control-plane without the CA", []string{"install", "control-plane", "--tls-cert", testdataTLS[1], "--tls-key", testdataTLS[3]}},
		{"control-plane missing file", []string{"install", "control-plane", "--tls-cert", filepath.Join(dir, "nope.pem"), "--tls-key", testdataTLS[3], "--ca-cert", testdataTLS[5]}},
		{"control-plane empty certificate", []string{"install", "control-plane", "--tls-cert", empty, "--tls-key", testdataTLS[3], "--ca-cert", testdataTLS[5]}},
		{"control-plane certificate of another namespace", append([]string{"install", "control-plane", "--namespace", "payments"}, testdataTLS...)},
		{"control-plane an argument", []string{"install", "control-plane", "extra"}},
		{"crds", []string{"install", "crds"}},
		{"webhooks", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443", "--ca-cert-file", testdataTLS[5]}},
		{"webhooks without the URL", []string{"install", "webhooks", "--ca-cert-file", testdataTLS[5]}},
		{"webhooks without the CA", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443"}},
		{"webhooks over http", []string{"install", "webhooks", "--url", "http://192.0.2.10:5443", "--ca-cert-file", testdataTLS[5]}},
		{"webhooks URL with a path", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443/validate", "--ca-cert-file", testdataTLS[5]}},
		{"webhooks CA not PEM", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443", "--ca-cert-file", empty}},
		{"webhooks unknown webhook", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443", "--ca-cert-file", testdataTLS[5], "--webhooks", "validating,mutating"}},
		{"webhooks none", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443", "--ca-cert-file", testdataTLS[5], "--webhooks", ""}},
		{"webhooks bad user", []string{"install", "webhooks", "--url", "https://192.0.2.10:5443", "--ca-cert-file", testdataTLS[5], "--control-plane-user", "it's me"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			golden(t, "install/"+tc.name, runInstall(nil, tc.args...).String(), dir, "{{DIR}}")
		})
	}
}
