// Package installtest builds Kuma datasource plugin folders and zips for the
// tests of `kumactl install metrics --universal --grafana-plugin`: the
// repository's real plugin.json, a frontend module and backend files, laid
// out as `make plugin` lays out grafana-datasource/dist.
package installtest

import (
	"archive/zip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// PluginJSON returns grafana-datasource/src/plugin.json of this repository.
func PluginJSON(t testing.TB) []byte {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	require.True(t, ok)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "..", "grafana-datasource", "src", "plugin.json"))
	require.NoError(t, err)
	return b
}

// PluginFiles are the files of a built plugin, by slash-separated path;
// the backend binaries are plugin.json's executable gpx_kuma for linux
// amd64 and arm64.
func PluginFiles(t testing.TB) map[string][]byte {
	t.Helper()
	return map[string][]byte{
		"plugin.json":          PluginJSON(t),
		"module.js":            []byte("define([], function () { return {}; });\n"),
		"img/logo.svg":         []byte("<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n"),
		"README.md":            []byte("# Kuma\n"),
		"LICENSE":              []byte("Apache-2.0\n"),
		"gpx_kuma_linux_amd64": []byte("\x7fELF amd64"),
		"gpx_kuma_linux_arm64": []byte("\x7fELF arm64"),
	}
}

// Dir writes files as a plugin folder under a new temporary directory and
// returns the folder.
func Dir(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dist")
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
	return dir
}

// Zip writes files into a new zip, each entry's name prefixed with prefix
// (the plugin's id and a slash, for the zip Grafana installs), and returns
// its path.
func Zip(t testing.TB, prefix string, files map[string][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kumahq-kuma-datasource-0.1.0.zip")
	f, err := os.Create(p)
	require.NoError(t, err)
	defer f.Close()
	zw := zip.NewWriter(f)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		w, err := zw.Create(prefix + name)
		require.NoError(t, err)
		_, err = w.Write(files[name])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return p
}
