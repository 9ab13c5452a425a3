package install_test

import (
	"archive/zip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/install/installtest"
)

func TestOpenPluginAndWriteTo(t *testing.T) {
	files := installtest.PluginFiles(t)
	for name, src := range map[string]string{
		"folder": installtest.Dir(t, files),
		"zip":    installtest.Zip(t, install.KumaDatasourceType+"/", files),
	} {
		t.Run(name, func(t *testing.T) {
			p, err := install.OpenPlugin(src)
			require.NoError(t, err)
			defer p.Close()
			require.Equal(t, keys(files), p.Files)

			out := t.TempDir()
			written, err := p.WriteTo(out, false)
			require.NoError(t, err)
			var want []string
			for _, f := range keys(files) {
				want = append(want, "grafana/plugins/kumahq-kuma-datasource/"+f)
			}
			require.Equal(t, want, written)
			folder := filepath.Join(out, "grafana", "plugins", "kumahq-kuma-datasource")
			got := readDir(t, folder)
			require.Len(t, got, len(files))
			for f, b := range files {
				require.Equal(t, string(b), got[f], f)
				fi, err := os.Stat(filepath.Join(folder, filepath.FromSlash(f)))
				require.NoError(t, err)
				mode := os.FileMode(0o644)
				if strings.HasPrefix(f, "gpx_kuma_") {
					mode = 0o755 // Grafana executes them
				}
				require.Equal(t, mode, fi.Mode().Perm(), f)
			}

			// A second time: refused without overwrite, the plugin untouched.
			_, err = p.WriteTo(out, false)
			require.EqualError(t, err, "--output-dir: "+out+" already has grafana/plugins/kumahq-kuma-datasource (pass --overwrite to replace it)")
			require.EqualError(t, p.CheckTarget(out, false), err.Error())
			// With overwrite, an old plugin's extra files go.
			require.NoError(t, os.WriteFile(filepath.Join(folder, "gpx_kuma_linux_386"), []byte("old"), 0o755))
			_, err = p.WriteTo(out, true)
			require.NoError(t, err)
			require.Len(t, readDir(t, folder), len(files))
			entries, err := os.ReadDir(filepath.Dir(folder))
			require.NoError(t, err)
			require.Len(t, entries, 1, "nothing left beside the plugin")
		})
	}
}

func TestOpenPluginRefuses(t *testing.T) {
	good := installtest.PluginFiles(t)
	with := func(change func(map[string][]byte)) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range good {
			out[k] = v
		}
		change(out)
		return out
	}
	prefix := install.KumaDatasourceType + "/"
	for _, tc := range []struct {
		name, src, err string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope.zip"), "no such file or directory"},
		{"not a zip", func() string {
			p := filepath.Join(t.TempDir(), "plugin.zip")
			require.NoError(t, os.WriteFile(p, []byte("PK not really"), 0o644))
			return p
		}(), "not a zip file"},
		{"no plugin.json", installtest.Dir(t, with(func(m map[string][]byte) { delete(m, "plugin.json") })), "no plugin.json: not a built Grafana plugin"},
		{"plugin.json broken", installtest.Dir(t, with(func(m map[string][]byte) { m["plugin.json"] = []byte(`{"id":`) })), "plugin.json: unexpected end of JSON input"},
		{"another plugin", installtest.Dir(t, with(func(m map[string][]byte) {
			m["plugin.json"] = []byte(`{"id":"grafana-clock-panel","type":"panel"}`)
		})), `plugin.json: id is "grafana-clock-panel", not the Kuma datasource "kumahq-kuma-datasource"`},
		{"no backend", installtest.Dir(t, with(func(m map[string][]byte) {
			m["plugin.json"] = []byte(`{"id":"kumahq-kuma-datasource","type":"datasource","executable":"../gpx"}`)
		})), `plugin.json: backend must be true and executable a file name, got backend false, executable "../gpx"`},
		{"frontend not built", installtest.Dir(t, with(func(m map[string][]byte) { delete(m, "module.js") })), "no module.js: the plugin's frontend is not built"},
		{"backend not built", installtest.Dir(t, with(func(m map[string][]byte) {
			delete(m, "gpx_kuma_linux_amd64")
			delete(m, "gpx_kuma_linux_arm64")
		})), "no backend binary gpx_kuma_<os>_<arch>"},
		{"zip without the plugin's folder", installtest.Zip(t, "", good), `zip entry "LICENSE": every file must be under the folder kumahq-kuma-datasource/`},
		{"zip of another folder", installtest.Zip(t, "dist/", good), `zip entry "dist/LICENSE": every file must be under the folder kumahq-kuma-datasource/`},
		{"zip leaving its folder", installtest.Zip(t, prefix, with(func(m map[string][]byte) { m["../../etc/cron.d/x"] = []byte("x") })), `zip entry "kumahq-kuma-datasource/../../etc/cron.d/x": not a relative path inside the plugin's folder`},
		{"zip with a link", func() string {
			p := installtest.Zip(t, prefix, good)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			// Rewrite as a zip whose extra entry is a symbolic link.
			zr, err := zip.OpenReader(p)
			require.NoError(t, err)
			defer zr.Close()
			q := filepath.Join(t.TempDir(), "link.zip")
			out, err := os.Create(q)
			require.NoError(t, err)
			defer out.Close()
			zw := zip.NewWriter(out)
			for _, e := range zr.File {
				require.NoError(t, zw.Copy(e))
			}
			h := &zip.FileHeader{Name: prefix + "img/evil"}
			h.SetMode(os.ModeSymlink | 0o777)
			w, err := zw.CreateHeader(h)
			require.NoError(t, err)
			_, err = w.Write([]byte("/etc/passwd"))
			require.NoError(t, err)
			require.NoError(t, zw.Close())
			return q
		}(), `zip entry "kumahq-kuma-datasource/img/evil": only files and folders`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := install.OpenPlugin(tc.src)
			require.Nil(t, p)
			require.ErrorContains(t, err, "--grafana-plugin")
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestGrafanaPluginImageValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts func(*install.Options)
		err  string
	}{
		{"empty", func(o *install.Options) { o.GrafanaPluginImage = "" }, "--grafana-plugin-image must not be empty"},
		{"not an image", func(o *install.Options) { o.GrafanaPluginImage = "a b" }, `--grafana-plugin-image "a b" is not an image reference`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := kubernetesOptions()
			tc.opts(&opts)
			_, err := install.RenderKubernetes(opts)
			require.ErrorContains(t, err, tc.err)
		})
	}
	// Without Grafana no image is needed.
	opts := kubernetesOptions()
	opts.GrafanaPluginImage, opts.WithoutGrafana = "", true
	_, err := install.RenderKubernetes(opts)
	require.NoError(t, err)
	// Universal takes the plugin itself, not an image.
	uni := universalOptions()
	uni.GrafanaPluginImage = "x"
	_, err = install.RenderUniversal(uni)
	require.ErrorContains(t, err, "--grafana-plugin-image applies only to Kubernetes")
}
