package install

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
)

// dashboard is one Grafana dashboard, provisioned byte for byte as given.
type dashboard struct {
	// File is the dashboard's file name: its ConfigMap key and its file in
	// Universal mode.
	File    string
	Content string
	// ConfigMap is the name of its ConfigMap on Kubernetes.
	ConfigMap string
}

var (
	// configMapKey is what a ConfigMap key may be.
	configMapKey = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
	// notInName are the characters a ConfigMap name may not hold.
	notInName = regexp.MustCompile(`[^a-z0-9-]+`)
	// datasourceRef is a reference to a datasource variable, as Grafana's
	// dashboard export writes it.
	datasourceRef = regexp.MustCompile(`\$\{(DS_[A-Za-z0-9_]+)\}`)
)

// loadDashboards reads every *.json file of fsys (in any directory), sorted
// by name; there must be at least one. File provisioning, unlike Grafana's import, does not substitute
// the __inputs of an exported dashboard: a ${DS_X} reference resolves only
// through a datasource variable named DS_X, so a dashboard without one is an
// error. With exactly one provisioned datasource of each type, the variable
// resolves to it whatever its saved current value.
func loadDashboards(fsys fs.FS) ([]dashboard, error) {
	if fsys == nil {
		return nil, fmt.Errorf("install: no dashboards given")
	}
	var out []dashboard
	seen := map[string]string{}
	configMaps := map[string]string{}
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		file := path.Base(p)
		if !configMapKey.MatchString(file) {
			return fmt.Errorf("dashboard %s: the file name may hold only letters, digits, '-', '_' and '.'", p)
		}
		if other, ok := seen[file]; ok {
			return fmt.Errorf("dashboards %s and %s have the same file name", other, p)
		}
		seen[file] = p
		stem := strings.Trim(notInName.ReplaceAllString(strings.ToLower(strings.TrimSuffix(file, ".json")), "-"), "-")
		cm := "grafana-dashboards-" + stem
		switch other, ok := configMaps[cm]; {
		case stem == "":
			return fmt.Errorf("dashboard %s: the file name needs a letter or digit", p)
		case len(cm) > 253:
			return fmt.Errorf("dashboard %s: the file name is too long", p)
		case ok:
			return fmt.Errorf("dashboards %s and %s would share the ConfigMap %s: rename one", other, p, cm)
		}
		configMaps[cm] = p
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if err := checkDashboard(b); err != nil {
			return fmt.Errorf("dashboard %s: %w", p, err)
		}
		if len(b) > maxConfigMapData-len(file) {
			return fmt.Errorf("dashboard %s: %d bytes is more than a ConfigMap holds", p, len(b))
		}
		out = append(out, dashboard{File: file, Content: string(b), ConfigMap: cm})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("install: no dashboards (*.json) given")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, nil
}

// checkDashboard checks that b is a dashboard whose datasource references
// resolve when provisioned from a file.
func checkDashboard(b []byte) error {
	var d struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			vars[v.Name] = true
		}
	}
	for _, m := range datasourceRef.FindAllSubmatch(b, -1) {
		if name := string(m[1]); !vars[name] {
			return fmt.Errorf("it refers to ${%s} but has no datasource variable %s (file provisioning does not substitute __inputs)", name, name)
		}
	}
	return nil
}
