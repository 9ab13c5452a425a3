package install

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The Kuma datasource plugin in a Universal setup: `make plugin` builds it
// (grafana-datasource/dist, and the zip Grafana installs), and
// `kumactl install metrics --universal --grafana-plugin` copies it into
// Grafana's plugins folder of the setup, so Grafana loads it without
// downloading anything.

// maxPluginFile bounds one file of the plugin (the backend binaries are
// about 40 MB), so a corrupt or hostile zip cannot fill the disk.
const maxPluginFile = 512 << 20

// Plugin is the Kuma datasource plugin's folder, from a zip or a directory.
type Plugin struct {
	// Source is the path it was opened from, for messages.
	Source string
	// Files are the slash-separated paths of its regular files, sorted.
	Files []string

	fsys   fs.FS
	closer io.Closer
	// executable is plugin.json's executable: the backend binaries are
	// executable_<os>_<arch>.
	executable string
}

// pluginJSON is what the installer checks of plugin.json.
type pluginJSON struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Backend    bool   `json:"backend"`
	Executable string `json:"executable"`
}

// backendBinary matches the backend builds Grafana picks from:
// <executable>_<os>_<arch>[.exe].
var backendBinary = regexp.MustCompile(`^[a-z0-9]+_[a-z0-9]+(\.exe)?$`)

// OpenPlugin opens the Kuma datasource plugin at src: the zip Grafana
// installs (its files under one folder named kumahq-kuma-datasource), or the
// plugin's folder itself (grafana-datasource/dist). It checks that it is
// that plugin, built: plugin.json with its id, a backend executable, the
// frontend's module.js and a backend binary. Close the plugin after use.
func OpenPlugin(src string) (*Plugin, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("--grafana-plugin: %w", err)
	}
	p := &Plugin{Source: src}
	if fi.IsDir() {
		p.fsys = os.DirFS(src)
	} else {
		zr, err := zip.OpenReader(src)
		if errors.Is(err, zip.ErrInsecurePath) {
			zr.Close()
			return nil, fmt.Errorf("--grafana-plugin %s: an entry's path leaves the plugin's folder: %w", src, err)
		}
		if err != nil {
			return nil, fmt.Errorf("--grafana-plugin %s: not a zip file: %w", src, err)
		}
		p.closer = zr
		if err := checkZipLayout(&zr.Reader); err != nil {
			zr.Close()
			return nil, fmt.Errorf("--grafana-plugin %s: %w", src, err)
		}
		if p.fsys, err = fs.Sub(zr, KumaDatasourceType); err != nil {
			zr.Close()
			return nil, fmt.Errorf("--grafana-plugin %s: %w", src, err)
		}
	}
	if err := p.check(); err != nil {
		p.Close()
		return nil, fmt.Errorf("--grafana-plugin %s: %w", src, err)
	}
	return p, nil
}

// checkZipLayout requires every entry of the zip under the folder
// kumahq-kuma-datasource/ (as Grafana's own installer expects), with a
// relative path that stays inside it and no links.
func checkZipLayout(zr *zip.Reader) error {
	if len(zr.File) == 0 {
		return errors.New("the zip is empty")
	}
	for _, f := range zr.File {
		name := strings.TrimSuffix(f.Name, "/")
		if !fs.ValidPath(name) || strings.Contains(f.Name, `\`) {
			return fmt.Errorf("zip entry %q: not a relative path inside the plugin's folder", f.Name)
		}
		if name != KumaDatasourceType && !strings.HasPrefix(name, KumaDatasourceType+"/") {
			return fmt.Errorf("zip entry %q: every file must be under the folder %s/ (the plugin's id)", f.Name, KumaDatasourceType)
		}
		if m := f.Mode(); !m.IsRegular() && !m.IsDir() {
			return fmt.Errorf("zip entry %q: only files and folders, not %s", f.Name, m.Type())
		}
	}
	return nil
}

// check lists the plugin's files and checks that it is the Kuma datasource,
// built.
func (p *Plugin) check() error {
	err := fs.WalkDir(p.fsys, ".", func(name string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: only files and folders, not %s", name, d.Type())
		}
		p.Files = append(p.Files, name)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(p.Files)
	raw, err := fs.ReadFile(p.fsys, "plugin.json")
	if err != nil {
		return fmt.Errorf("no plugin.json: not a built Grafana plugin (make plugin builds one): %w", err)
	}
	var pj pluginJSON
	if err := json.Unmarshal(raw, &pj); err != nil {
		return fmt.Errorf("plugin.json: %w", err)
	}
	switch {
	case pj.ID != KumaDatasourceType:
		return fmt.Errorf("plugin.json: id is %q, not the Kuma datasource %q", pj.ID, KumaDatasourceType)
	case pj.Type != "datasource":
		return fmt.Errorf("plugin.json: type is %q, want \"datasource\"", pj.Type)
	case !pj.Backend || pj.Executable == "" || strings.ContainsAny(pj.Executable, `/\`):
		return fmt.Errorf("plugin.json: backend must be true and executable a file name, got backend %v, executable %q", pj.Backend, pj.Executable)
	}
	p.executable = pj.Executable
	if _, err := fs.Stat(p.fsys, "module.js"); err != nil {
		return fmt.Errorf("no module.js: the plugin's frontend is not built (make plugin builds it): %w", err)
	}
	var binaries []string
	for _, f := range p.Files {
		if p.isBinary(f) {
			binaries = append(binaries, f)
		}
	}
	if len(binaries) == 0 {
		return fmt.Errorf("no backend binary %s_<os>_<arch> (make plugin builds %s_linux_amd64 and %s_linux_arm64)", pj.Executable, pj.Executable, pj.Executable)
	}
	return nil
}

// isBinary says whether the file name is one of the backend's builds.
func (p *Plugin) isBinary(name string) bool {
	rest, ok := strings.CutPrefix(name, p.executable+"_")
	return ok && !strings.Contains(name, "/") && backendBinary.MatchString(rest)
}

// Close releases the zip, if the plugin came from one.
func (p *Plugin) Close() error {
	if p.closer == nil {
		return nil
	}
	return p.closer.Close()
}

// PluginFolder is the plugin's folder in a Universal setup, relative to
// Options.OutputDir.
const PluginFolder = UniversalPluginsDir + "/" + KumaDatasourceType

// CheckTarget fails when dir already has the plugin and overwrite is not
// set: what WriteTo would refuse, checked before anything is written.
func (p *Plugin) CheckTarget(dir string, overwrite bool) error {
	_, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(PluginFolder)))
	switch {
	case err == nil && !overwrite:
		return fmt.Errorf("--output-dir: %s already has %s (pass --overwrite to replace it)", dir, PluginFolder)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--output-dir: %w", err)
	}
	return nil
}

// WriteTo writes the plugin into dir (the setup's output directory) as
// grafana/plugins/kumahq-kuma-datasource, replacing a plugin there only when
// overwrite is set. It writes into a fresh folder beside it and renames it
// into place, so Grafana never sees half a plugin; the backend binaries are
// executable. It returns the paths written, relative to dir.
func (p *Plugin) WriteTo(dir string, overwrite bool) ([]string, error) {
	if err := p.CheckTarget(dir, overwrite); err != nil {
		return nil, err
	}
	target := filepath.Join(dir, filepath.FromSlash(PluginFolder))
	plugins := filepath.Dir(target)
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		return nil, fmt.Errorf("--output-dir: %w", err)
	}
	tmp, err := os.MkdirTemp(plugins, "."+KumaDatasourceType+"-")
	if err != nil {
		return nil, fmt.Errorf("--output-dir: %w", err)
	}
	defer os.RemoveAll(tmp) // after the rename, an old plugin's folder or nothing
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("--output-dir: %w", err)
	}
	written := make([]string, 0, len(p.Files))
	for _, name := range p.Files {
		mode := os.FileMode(0o644)
		if p.isBinary(name) {
			mode = 0o755
		}
		if err := p.copyFile(name, filepath.Join(tmp, filepath.FromSlash(name)), mode); err != nil {
			return nil, err
		}
		written = append(written, PluginFolder+"/"+name)
	}
	// Replace an old plugin: move it aside (into tmp's place, removed by
	// the deferred RemoveAll), then the new one in.
	old := tmp + ".old"
	if err := os.Rename(target, old); err == nil {
		defer os.RemoveAll(old)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("--output-dir: %w", err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return nil, fmt.Errorf("--output-dir: %w", err)
	}
	return written, nil
}

// copyFile copies the plugin's file name to dst, at most maxPluginFile
// bytes.
func (p *Plugin) copyFile(name, dst string, mode os.FileMode) error {
	in, err := p.fsys.Open(name)
	if err != nil {
		return fmt.Errorf("--grafana-plugin %s: %w", p.Source, err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("--output-dir: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("--output-dir: %w", err)
	}
	n, err := io.Copy(out, io.LimitReader(in, maxPluginFile+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
		return fmt.Errorf("--grafana-plugin %s: %s: %w", p.Source, path.Clean(name), err)
	case n > maxPluginFile:
		return fmt.Errorf("--grafana-plugin %s: %s is larger than %d MiB", p.Source, name, maxPluginFile>>20)
	}
	return nil
}
