// Package dashboards holds the Grafana dashboards that `kumactl install
// metrics` provisions: Kuma Dataplane, Kuma Mesh (with the Service Map),
// Kuma Service, Kuma Service to Service and Kuma CP, as Grafana dashboard
// JSON (schemaVersion 39) in FS.
//
// Every Prometheus query uses the datasource variable DS_PROMETHEUS (default
// uid "prometheus"); the Service Map uses the Kuma datasource through the
// variable DS_KUMA (default uid "kuma"). The installer provisions the two
// datasources with these uids.
//
// Queries and VariableQueries list the PromQL of the dashboards for tests
// that parse or run it; Expand fills in template variables.
package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"
)

// FS holds the dashboards, one *.json file each.
//
//go:embed *.json
var FS embed.FS

// KubernetesOnlyPanels lists, by title, the panels whose queries need
// Kubernetes metrics (cAdvisor, kube-state-metrics) and so return nothing in
// Universal mode. None of the dashboards has such a panel today.
var KubernetesOnlyPanels = []string{}

// Query is one Prometheus query of a dashboard panel.
type Query struct {
	File      string // e.g. "kuma-mesh.json"
	Dashboard string // dashboard title, e.g. "Kuma Mesh"
	Panel     string // panel title
	PanelID   int
	RefID     string
	Expr      string
	// Instant is true for instant (table) queries, false for range queries.
	Instant bool
	// Vars are the template variables the expression uses, sorted, without
	// "$" (Grafana's global ones such as __rate_interval included).
	Vars []string
}

// VariableQuery is the query of a dashboard's template variable of type
// query, e.g. label_values(envoy_server_live{mesh="$mesh"}, dataplane).
type VariableQuery struct {
	File      string
	Dashboard string
	Name      string // the variable's name
	Query     string
	Vars      []string // template variables the query uses
}

// model is the part of a dashboard the helpers read.
type model struct {
	Title      string        `json:"title"`
	Panels     []modelPanel  `json:"panels"`
	Templating modelTemplate `json:"templating"`
}

type modelPanel struct {
	ID         int           `json:"id"`
	Title      string        `json:"title"`
	Type       string        `json:"type"`
	Datasource *modelDS      `json:"datasource"`
	Targets    []modelTarget `json:"targets"`
	Panels     []modelPanel  `json:"panels"`
}

type modelDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type modelTarget struct {
	Datasource *modelDS `json:"datasource"`
	Expr       string   `json:"expr"`
	RefID      string   `json:"refId"`
	Instant    bool     `json:"instant"`
	Range      *bool    `json:"range"`
}

type modelTemplate struct {
	List []struct {
		Name  string          `json:"name"`
		Type  string          `json:"type"`
		Query json.RawMessage `json:"query"`
	} `json:"list"`
}

// Files returns the dashboards' file names, sorted.
func Files() ([]string, error) {
	return fs.Glob(FS, "*.json")
}

func load(file string) (*model, error) {
	b, err := FS.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var m model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("dashboards: %s: %w", file, err)
	}
	return &m, nil
}

// Queries returns every Prometheus query of every panel (those of collapsed
// rows included), in file and panel order. Queries of the Kuma datasource
// (the Service Map) are not PromQL and are left out.
func Queries() ([]Query, error) {
	files, err := Files()
	if err != nil {
		return nil, err
	}
	var out []Query
	for _, f := range files {
		m, err := load(f)
		if err != nil {
			return nil, err
		}
		var walk func([]modelPanel)
		walk = func(ps []modelPanel) {
			for _, p := range ps {
				for _, t := range p.Targets {
					ds := t.Datasource
					if ds == nil {
						ds = p.Datasource
					}
					if ds == nil || ds.Type != "prometheus" {
						continue
					}
					out = append(out, Query{
						File: f, Dashboard: m.Title, Panel: p.Title, PanelID: p.ID, RefID: t.RefID, Expr: t.Expr,
						Instant: t.Instant && (t.Range == nil || !*t.Range), Vars: VarsOf(t.Expr),
					})
				}
				walk(p.Panels)
			}
		}
		walk(m.Panels)
	}
	return out, nil
}

// VariableQueries returns the queries of every template variable of type
// query.
func VariableQueries() ([]VariableQuery, error) {
	files, err := Files()
	if err != nil {
		return nil, err
	}
	var out []VariableQuery
	for _, f := range files {
		m, err := load(f)
		if err != nil {
			return nil, err
		}
		for _, v := range m.Templating.List {
			if v.Type != "query" {
				continue
			}
			q, err := variableQueryText(v.Query)
			if err != nil {
				return nil, fmt.Errorf("dashboards: %s: variable %s: %w", f, v.Name, err)
			}
			out = append(out, VariableQuery{File: f, Dashboard: m.Title, Name: v.Name, Query: q, Vars: VarsOf(q)})
		}
	}
	return out, nil
}

// variableQueryText reads a variable's query: a string, or Grafana 10's
// object form {"query": "...", "qryType": …, "refId": …}.
func variableQueryText(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return "", err
	}
	return o.Query, nil
}

// varRef matches Grafana's variable syntaxes: $name, ${name}, ${name:format}
// and [[name]].
var varRef = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]`)

// VarsOf returns the template variables expr refers to, sorted and unique.
func VarsOf(expr string) []string {
	var vs []string
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		vs = append(vs, m[1]+m[2]+m[3])
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}

// Expand replaces every template variable of expr by its value in values,
// as Grafana does for a single-value variable. It fails, naming them, when
// values lacks some.
func Expand(expr string, values map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return ref
		}
		return v
	})
	if len(missing) > 0 {
		slices.Sort(missing)
		return "", fmt.Errorf("dashboards: no value for %s in %q", strings.Join(slices.Compact(missing), ", "), expr)
	}
	return out, nil
}
