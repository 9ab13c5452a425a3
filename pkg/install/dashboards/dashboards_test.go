package dashboards_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/install/dashboards"
)

// The Grafana dashboard JSON model, as far as these dashboards use it.
// Decoding is strict: a field outside this model is an error (a typo such as
// "legendformat" would otherwise be silently ignored by Grafana).
type dashboard struct {
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
	Description          string          `json:"description"`
	Editable             bool            `json:"editable"`
	FiscalYearStartMonth int             `json:"fiscalYearStartMonth"`
	GraphTooltip         int             `json:"graphTooltip"`
	ID                   *int            `json:"id"`
	Links                []dashboardLink `json:"links"`
	Panels               []panel         `json:"panels"`
	Refresh              string          `json:"refresh"`
	SchemaVersion        int             `json:"schemaVersion"`
	Tags                 []string        `json:"tags"`
	Templating           struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Time struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Timepicker struct {
		RefreshIntervals []string `json:"refresh_intervals"`
	} `json:"timepicker"`
	Timezone  string `json:"timezone"`
	Title     string `json:"title"`
	UID       string `json:"uid"`
	Version   int    `json:"version"`
	WeekStart string `json:"weekStart"`

	// Top-level fields Grafana writes on export and import; accepted,
	// not checked.
	Inputs   json.RawMessage `json:"__inputs"`
	Requires json.RawMessage `json:"__requires"`
	Elements json.RawMessage `json:"__elements"`
	GnetID   json.RawMessage `json:"gnetId"`
	LiveNow  json.RawMessage `json:"liveNow"`
}

type annotation struct {
	BuiltIn    int    `json:"builtIn"`
	Datasource dsRef  `json:"datasource"`
	Enable     bool   `json:"enable"`
	Hide       bool   `json:"hide"`
	IconColor  string `json:"iconColor"`
	Name       string `json:"name"`
	Type       string `json:"type"`
}

type dashboardLink struct {
	AsDropdown  bool     `json:"asDropdown"`
	Icon        string   `json:"icon"`
	IncludeVars bool     `json:"includeVars"`
	KeepTime    bool     `json:"keepTime"`
	Tags        []string `json:"tags"`
	TargetBlank bool     `json:"targetBlank"`
	Title       string   `json:"title"`
	Tooltip     string   `json:"tooltip"`
	Type        string   `json:"type"`
	URL         string   `json:"url"`
}

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type panel struct {
	Collapsed       *bool            `json:"collapsed"`
	Datasource      *dsRef           `json:"datasource"`
	Description     string           `json:"description"`
	FieldConfig     *fieldConfig     `json:"fieldConfig"`
	GridPos         *gridPos         `json:"gridPos"`
	ID              int              `json:"id"`
	Interval        string           `json:"interval"`
	MaxDataPoints   int              `json:"maxDataPoints"`
	Options         json.RawMessage  `json:"options"`
	Panels          []panel          `json:"panels"`
	PluginVersion   string           `json:"pluginVersion"`
	Targets         []target         `json:"targets"`
	Title           string           `json:"title"`
	Transformations []transformation `json:"transformations"`
	Type            string           `json:"type"`
}

type fieldConfig struct {
	Defaults struct {
		Color       json.RawMessage   `json:"color"`
		Custom      json.RawMessage   `json:"custom"`
		Decimals    *int              `json:"decimals"`
		DisplayName string            `json:"displayName"`
		Links       []dataLink        `json:"links"`
		Mappings    []json.RawMessage `json:"mappings"`
		Max         *float64          `json:"max"`
		Min         *float64          `json:"min"`
		NoValue     string            `json:"noValue"`
		Thresholds  *thresholds       `json:"thresholds"`
		Unit        string            `json:"unit"`
	} `json:"defaults"`
	Overrides []struct {
		Matcher struct {
			ID      string `json:"id"`
			Options string `json:"options"`
		} `json:"matcher"`
		Properties []struct {
			ID    string          `json:"id"`
			Value json.RawMessage `json:"value"`
		} `json:"properties"`
	} `json:"overrides"`
}

type thresholds struct {
	Mode  string `json:"mode"`
	Steps []struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	} `json:"steps"`
}

type dataLink struct {
	Title       string `json:"title"`
	URL         string `json:"url"`
	TargetBlank bool   `json:"targetBlank"`
}

type transformation struct {
	ID       string          `json:"id"`
	Options  json.RawMessage `json:"options"`
	Disabled bool            `json:"disabled"`
}

type target struct {
	Datasource   *dsRef `json:"datasource"`
	EditorMode   string `json:"editorMode"`
	Exemplar     bool   `json:"exemplar"`
	Expr         string `json:"expr"`
	Format       string `json:"format"`
	Hide         bool   `json:"hide"`
	Instant      *bool  `json:"instant"`
	Interval     string `json:"interval"`
	LegendFormat string `json:"legendFormat"`
	Range        *bool  `json:"range"`
	RefID        string `json:"refId"`
	// The Kuma datasource's query.
	QueryType string `json:"queryType"`
	Mesh      string `json:"mesh"`
	Zone      string `json:"zone"`
}

type variable struct {
	AllValue    string            `json:"allValue"`
	Current     json.RawMessage   `json:"current"`
	Datasource  *dsRef            `json:"datasource"`
	Definition  string            `json:"definition"`
	Description string            `json:"description"`
	Hide        int               `json:"hide"`
	IncludeAll  bool              `json:"includeAll"`
	Label       string            `json:"label"`
	Multi       bool              `json:"multi"`
	Name        string            `json:"name"`
	Options     []json.RawMessage `json:"options"`
	Query       json.RawMessage   `json:"query"`
	Refresh     int               `json:"refresh"`
	Regex       string            `json:"regex"`
	SkipURLSync bool              `json:"skipUrlSync"`
	Sort        int               `json:"sort"`
	Type        string            `json:"type"`
}

// The datasources the dashboards may use: Prometheus through the variable
// the installer fills in, and the Kuma datasource (variable or the uid the
// installer provisions).
var (
	prometheusDS = dsRef{Type: "prometheus", UID: "${DS_PROMETHEUS}"}
	kumaDSs      = []dsRef{{Type: "kumahq-kuma-datasource", UID: "${DS_KUMA}"}, {Type: "kumahq-kuma-datasource", UID: "kuma"}}
)

var panelTypes = []string{"row", "timeseries", "stat", "gauge", "bargauge", "table", "nodeGraph", "text", "state-timeline", "heatmap", "piechart"}

var units = []string{"none", "short", "reqps", "ops", "cps", "ms", "s", "d", "bytes", "Bps", "percent", "percentunit"}

// builtinVars are Grafana's global variables.
var builtinVars = []string{
	"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
	"__url_time_range", "__value", "__data", "__field", "__series", "__from", "__to", "__timezone",
	"__dashboard", "__org", "__user", "__all",
}

// expectations per dashboard file: required variables and the label
// matchers every selector of every Prometheus query must carry, so that no
// panel leaks data of other meshes, dataplanes or services.
var expectations = map[string]struct {
	title     string
	variables []string
	matchers  []string // every selector contains each of these...
	anyOf     []string // ...and at least one of these
}{
	"kuma-dataplane.json": {
		title:     "Kuma Dataplane",
		variables: []string{"DS_PROMETHEUS", "mesh", "zone", "dataplane"},
		matchers:  []string{`mesh="$mesh"`, `dataplane="$dataplane"`},
	},
	"kuma-mesh.json": {
		title:     "Kuma Mesh",
		variables: []string{"DS_PROMETHEUS", "DS_KUMA", "mesh", "zone"},
		matchers:  []string{`mesh="$mesh"`, `kuma_io_zone=~"$zone"`},
	},
	"kuma-service.json": {
		title:     "Kuma Service",
		variables: []string{"DS_PROMETHEUS", "mesh", "zone", "service"},
		matchers:  []string{`mesh="$mesh"`, `kuma_io_zone=~"$zone"`, `kuma_io_service="$service"`},
	},
	"kuma-service-to-service.json": {
		title:     "Kuma Service to Service",
		variables: []string{"DS_PROMETHEUS", "mesh", "zone", "source", "destination"},
		matchers:  []string{`mesh="$mesh"`, `kuma_io_zone=~"$zone"`},
		anyOf:     []string{`kuma_io_services=~".*,$source,.*"`, `kuma_io_services=~".*,$destination,.*"`},
	},
	"kuma-cp.json": {
		title:     "Kuma CP",
		variables: []string{"DS_PROMETHEUS", "job", "zone", "instance"},
		matchers:  []string{`job="$job"`, `zone=~"$zone"`, `instance=~"$instance"`},
	},
}

func files(t *testing.T) []string {
	t.Helper()
	fs, err := dashboards.Files()
	require.NoError(t, err)
	return fs
}

func decode(t *testing.T, file string) dashboard {
	t.Helper()
	b, err := dashboards.FS.ReadFile(file)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var d dashboard
	require.NoError(t, dec.Decode(&d), "%s is not a dashboard of the expected model", file)
	require.False(t, dec.More(), "%s: data after the dashboard", file)
	// encoding/json matches names case-insensitively; Grafana does not.
	var raw any
	require.NoError(t, json.Unmarshal(b, &raw))
	checkKeys(t, file, raw, reflect.TypeFor[dashboard]())
	return d
}

// checkKeys fails on an object key of v that is not, with the same case,
// the JSON name of a field of typ.
func checkKeys(t *testing.T, path string, v any, typ reflect.Type) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		if typ.Kind() != reflect.Struct {
			return // a map or json.RawMessage: free-form
		}
		fields := map[string]reflect.Type{}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			fields[name] = f.Type
		}
		for k, sub := range x {
			ft, ok := fields[k]
			require.True(t, ok, "%s: unknown field %q (names are case-sensitive)", path, k)
			checkKeys(t, path+"."+k, sub, ft)
		}
	case []any:
		if typ.Kind() != reflect.Slice || typ == reflect.TypeFor[json.RawMessage]() {
			return
		}
		for i, sub := range x {
			checkKeys(t, fmt.Sprintf("%s[%d]", path, i), sub, typ.Elem())
		}
	}
}

// allPanels returns the panels with those of collapsed rows, and the rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

func TestTheFiveDashboards(t *testing.T) {
	var want []string
	for f := range expectations {
		want = append(want, f)
	}
	slices.Sort(want)
	require.Equal(t, want, files(t))
}

func TestTitlesAndUIDsAreUnique(t *testing.T) {
	titles, uids := map[string]string{}, map[string]string{}
	for _, f := range files(t) {
		d := decode(t, f)
		require.NotEmpty(t, d.Title, f)
		require.NotEmpty(t, d.UID, f)
		require.LessOrEqual(t, len(d.UID), 40, "%s: Grafana limits uids to 40 characters", f)
		require.Regexp(t, `^[a-zA-Z0-9_-]+$`, d.UID, f)
		require.NotContains(t, titles, d.Title, "%s: title %q also in %s", f, d.Title, titles[d.Title])
		require.NotContains(t, uids, d.UID, "%s: uid %q also in %s", f, d.UID, uids[d.UID])
		titles[d.Title], uids[d.UID] = f, f
		require.Equal(t, expectations[f].title, d.Title, f)
	}
}

func TestDashboardsAreValid(t *testing.T) {
	for _, f := range files(t) {
		t.Run(f, func(t *testing.T) {
			d := decode(t, f)
			require.GreaterOrEqual(t, d.SchemaVersion, 36, "schemaVersion")
			require.Nil(t, d.ID, "id must be null so that Grafana assigns one")
			require.Contains(t, d.Tags, "kuma", "the dashboards link to each other through the kuma tag")
			require.NotEmpty(t, d.Description)

			vars := checkVariables(t, d, expectations[f].variables)
			ids := map[int]string{}
			for _, p := range allPanels(d.Panels) {
				require.Positive(t, p.ID, "panel %q: id", p.Title)
				require.NotContains(t, ids, p.ID, "panel %q: id %d also used by %q", p.Title, p.ID, ids[p.ID])
				ids[p.ID] = p.Title
				checkPanel(t, p, vars)
			}
			checkLayout(t, d.Panels)
			for _, p := range allPanels(d.Panels) {
				for _, tg := range p.Targets {
					if tg.Expr != "" {
						checkScope(t, p.Title, tg.Expr, expectations[f].matchers, expectations[f].anyOf)
					}
				}
			}
		})
	}
}

// checkVariables checks the template variables and returns their names.
func checkVariables(t *testing.T, d dashboard, required []string) map[string]bool {
	t.Helper()
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		require.NotEmpty(t, v.Name)
		require.False(t, defined[v.Name], "variable %s defined twice", v.Name)
		switch v.Type {
		case "datasource":
			var plugin string
			require.NoError(t, json.Unmarshal(v.Query, &plugin), "variable %s: query", v.Name)
			switch v.Name {
			case "DS_PROMETHEUS":
				require.Equal(t, "prometheus", plugin)
			case "DS_KUMA":
				require.Equal(t, "kumahq-kuma-datasource", plugin)
			}
		case "query":
			require.Equal(t, &prometheusDS, v.Datasource, "variable %s: datasource", v.Name)
			// A string, which Grafana turns into its variable editor's form.
			var q string
			require.NoError(t, json.Unmarshal(v.Query, &q), "variable %s: query", v.Name)
			require.Regexp(t, `^label_values\((.+), *[a-zA-Z_][a-zA-Z0-9_]*\)$`, q, "variable %s", v.Name)
			require.Equal(t, q, v.Definition, "variable %s: definition (shown in the variable list) differs from the query", v.Name)
			for _, used := range dashboards.VarsOf(q) {
				require.True(t, defined[used], "variable %s uses $%s, which is not defined before it", v.Name, used)
			}
			if v.IncludeAll {
				require.Equal(t, ".*", v.AllValue, "variable %s: All must match series without the label too", v.Name)
			}
		default:
			t.Fatalf("variable %s: unexpected type %q", v.Name, v.Type)
		}
		defined[v.Name] = true
	}
	for _, name := range required {
		require.True(t, defined[name], "variable %s missing", name)
	}
	for _, name := range []string{"zone", "instance"} {
		for _, v := range d.Templating.List {
			if v.Name == name {
				require.True(t, v.IncludeAll, "variable %s: All must be selectable (the label is absent outside multizone)", name)
			}
		}
	}
	return defined
}

func checkPanel(t *testing.T, p panel, vars map[string]bool) {
	t.Helper()
	require.Contains(t, panelTypes, p.Type, "panel %q: type", p.Title)
	require.NotEmpty(t, p.Title, "panel %d: title", p.ID)
	require.NotNil(t, p.GridPos, "panel %q: gridPos", p.Title)
	g := *p.GridPos
	require.True(t, g.W >= 1 && g.W <= 24 && g.X >= 0 && g.X+g.W <= 24 && g.H >= 1 && g.Y >= 0,
		"panel %q: gridPos %+v outside the 24-column grid", p.Title, g)

	if p.Type == "row" {
		require.Empty(t, p.Targets, "row %q: targets", p.Title)
		require.NotNil(t, p.Collapsed, "row %q: collapsed", p.Title)
		require.Equal(t, gridPos{H: 1, W: 24, X: 0, Y: g.Y}, g, "row %q: gridPos", p.Title)
		if !*p.Collapsed {
			require.Empty(t, p.Panels, "row %q: an expanded row's panels follow it at the top level", p.Title)
		} else {
			require.NotEmpty(t, p.Panels, "row %q: a collapsed row holds its panels", p.Title)
		}
		return
	}
	require.Empty(t, p.Panels, "panel %q: only rows hold panels", p.Title)
	require.NotEmpty(t, p.Description, "panel %q: description (the operator's tooltip)", p.Title)
	require.NotEmpty(t, p.Targets, "panel %q: targets", p.Title)

	refIDs := map[string]bool{}
	for _, tg := range p.Targets {
		ds := tg.Datasource
		if ds == nil {
			ds = p.Datasource
		}
		require.NotNil(t, ds, "panel %q target %s: no datasource", p.Title, tg.RefID)
		if p.Datasource != nil {
			require.Equal(t, *p.Datasource, *ds, "panel %q target %s: datasource differs from the panel's", p.Title, tg.RefID)
		}
		require.NotEmpty(t, tg.RefID, "panel %q: refId", p.Title)
		require.False(t, refIDs[tg.RefID], "panel %q: refId %s twice", p.Title, tg.RefID)
		refIDs[tg.RefID] = true

		switch {
		case *ds == prometheusDS:
			require.NotEmpty(t, strings.TrimSpace(tg.Expr), "panel %q target %s: expr", p.Title, tg.RefID)
			require.Empty(t, tg.QueryType, "panel %q target %s: queryType", p.Title, tg.RefID)
			for _, v := range dashboards.VarsOf(tg.Expr) {
				require.True(t, vars[v] || slices.Contains(builtinVars, v),
					"panel %q target %s: $%s is not a template variable: %s", p.Title, tg.RefID, v, tg.Expr)
			}
			for _, w := range regexp.MustCompile(`\[([^\]]*)\]`).FindAllStringSubmatch(tg.Expr, -1) {
				require.Contains(t, []string{"$__rate_interval", "$__range"}, w[1],
					"panel %q target %s: range windows follow the scrape interval ($__rate_interval) or the time range ($__range): %s", p.Title, tg.RefID, tg.Expr)
			}
			if tg.Format == "table" {
				require.True(t, tg.Instant != nil && *tg.Instant, "panel %q target %s: table queries are instant", p.Title, tg.RefID)
			}
		case slices.Contains(kumaDSs, *ds):
			require.Contains(t, []string{"mesh-graph", "meshes", "zones", "services"}, tg.QueryType, "panel %q target %s: queryType", p.Title, tg.RefID)
			require.Empty(t, tg.Expr, "panel %q target %s: expr", p.Title, tg.RefID)
			if tg.QueryType == "mesh-graph" {
				require.Equal(t, "$mesh", tg.Mesh, "panel %q target %s: mesh", p.Title, tg.RefID)
			}
			if strings.HasPrefix(ds.UID, "$") {
				require.True(t, vars[strings.Trim(ds.UID, "${}")], "panel %q: datasource variable %s not defined", p.Title, ds.UID)
			}
		default:
			t.Fatalf("panel %q target %s: datasource %+v is neither ${DS_PROMETHEUS} nor the Kuma datasource", p.Title, tg.RefID, *ds)
		}
	}

	if fc := p.FieldConfig; fc != nil {
		if fc.Defaults.Unit != "" {
			require.Contains(t, units, fc.Defaults.Unit, "panel %q: unit", p.Title)
		}
		for _, l := range fc.Defaults.Links {
			checkLink(t, p.Title, l.URL, vars)
		}
		for _, o := range fc.Overrides {
			require.Contains(t, []string{"byName", "byRegexp", "byType", "byFrameRefID"}, o.Matcher.ID, "panel %q: override matcher", p.Title)
			if o.Matcher.ID == "byRegexp" {
				_, err := regexp.Compile(o.Matcher.Options)
				require.NoError(t, err, "panel %q: override regexp", p.Title)
			}
			for _, prop := range o.Properties {
				require.Contains(t, []string{"color", "unit", "links", "thresholds", "mappings", "custom.cellOptions", "custom.transform", "custom.width", "displayName", "min", "max", "decimals"},
					prop.ID, "panel %q: override property", p.Title)
				switch prop.ID {
				case "unit":
					var u string
					require.NoError(t, json.Unmarshal(prop.Value, &u))
					require.Contains(t, units, u, "panel %q: override unit", p.Title)
				case "links":
					var ls []dataLink
					require.NoError(t, json.Unmarshal(prop.Value, &ls))
					for _, l := range ls {
						checkLink(t, p.Title, l.URL, vars)
					}
				}
			}
		}
	}
	for _, tr := range p.Transformations {
		require.Contains(t, []string{"merge", "organize", "sortBy", "joinByField", "filterFieldsByName", "renameByRegex"}, tr.ID, "panel %q: transformation", p.Title)
	}
}

// checkLink checks that a data link goes to one of these dashboards with
// defined variables.
func checkLink(t *testing.T, panel, url string, vars map[string]bool) {
	t.Helper()
	m := regexp.MustCompile(`^/d/([a-zA-Z0-9_-]+)/`).FindStringSubmatch(url)
	require.NotNil(t, m, "panel %q: link %s does not go to a dashboard", panel, url)
	var uids []string
	for _, f := range expectationsFiles() {
		b, err := dashboards.FS.ReadFile(f)
		require.NoError(t, err)
		var d struct {
			UID string `json:"uid"`
		}
		require.NoError(t, json.Unmarshal(b, &d))
		uids = append(uids, d.UID)
	}
	require.Contains(t, uids, m[1], "panel %q: link to an unknown dashboard", panel)
	for _, v := range dashboards.VarsOf(url) {
		require.True(t, vars[v] || slices.Contains(builtinVars, v), "panel %q: link uses undefined $%s", panel, v)
	}
}

func expectationsFiles() []string {
	var fs []string
	for f := range expectations {
		fs = append(fs, f)
	}
	slices.Sort(fs)
	return fs
}

// checkLayout checks that no two panels overlap: the top level (rows
// included), and the panels of each collapsed row, which Grafana lays out
// below the row when it expands.
func checkLayout(t *testing.T, top []panel) {
	t.Helper()
	noOverlap(t, top)
	for _, r := range top {
		if r.Type == "row" && len(r.Panels) > 0 {
			for _, p := range r.Panels {
				require.Greater(t, p.GridPos.Y, r.GridPos.Y, "panel %q lies above its row %q", p.Title, r.Title)
			}
			noOverlap(t, r.Panels)
		}
	}
}

func noOverlap(t *testing.T, ps []panel) {
	t.Helper()
	for i, a := range ps {
		for _, b := range ps[i+1:] {
			ga, gb := *a.GridPos, *b.GridPos
			overlap := ga.X < gb.X+gb.W && gb.X < ga.X+ga.W && ga.Y < gb.Y+gb.H && gb.Y < ga.Y+ga.H
			require.False(t, overlap, "panels %q %+v and %q %+v overlap", a.Title, ga, b.Title, gb)
		}
	}
}

var selector = regexp.MustCompile(`\{[^{}]*\}`)

// checkScope checks that every label selector of expr carries the
// dashboard's scoping matchers.
func checkScope(t *testing.T, panel, expr string, all, anyOf []string) {
	t.Helper()
	sels := selector.FindAllString(expr, -1)
	require.NotEmpty(t, sels, "panel %q: a query without label selector is not scoped: %s", panel, expr)
	for _, s := range sels {
		for _, m := range all {
			require.Contains(t, s, m, "panel %q: selector %s lacks %s in %s", panel, s, m, expr)
		}
		if len(anyOf) > 0 {
			require.True(t, slices.ContainsFunc(anyOf, func(m string) bool { return strings.Contains(s, m) }),
				"panel %q: selector %s has none of %v in %s", panel, s, anyOf, expr)
		}
	}
}

func TestMeshDashboardStartsWithTheServiceMap(t *testing.T) {
	d := decode(t, "kuma-mesh.json")
	first := d.Panels[0]
	for _, p := range d.Panels[1:] {
		if p.GridPos.Y < first.GridPos.Y || p.GridPos.Y == first.GridPos.Y && p.GridPos.X < first.GridPos.X {
			first = p
		}
	}
	require.Equal(t, "nodeGraph", first.Type, "the first panel is %q", first.Title)
	require.Equal(t, "Service Map", first.Title)
	require.NotNil(t, first.Datasource)
	require.Contains(t, kumaDSs, *first.Datasource)
	require.Len(t, first.Targets, 1)
	require.Equal(t, "mesh-graph", first.Targets[0].QueryType)
	require.Equal(t, "$mesh", first.Targets[0].Mesh)
	require.Equal(t, 24, first.GridPos.W, "the Service Map spans the whole width")
}

func TestDatasourceVariableDefaults(t *testing.T) {
	// The installer provisions the datasources with these uids.
	for _, f := range files(t) {
		d := decode(t, f)
		for _, v := range d.Templating.List {
			if v.Type != "datasource" {
				continue
			}
			var cur struct {
				Value string `json:"value"`
			}
			require.NoError(t, json.Unmarshal(v.Current, &cur), "%s: %s", f, v.Name)
			want := map[string]string{"DS_PROMETHEUS": "prometheus", "DS_KUMA": "kuma"}[v.Name]
			require.Equal(t, want, cur.Value, "%s: variable %s default", f, v.Name)
		}
	}
}

func TestQueries(t *testing.T) {
	qs, err := dashboards.Queries()
	require.NoError(t, err)
	perFile := map[string]int{}
	for _, q := range qs {
		perFile[q.File]++
		require.NotEmpty(t, q.Dashboard)
		require.NotEmpty(t, q.Panel)
		require.NotEmpty(t, q.RefID)
		require.NotEmpty(t, q.Expr)
		// Vars names every variable of the query: with a value for each,
		// nothing of Grafana's variable syntax is left in the expression.
		values := map[string]string{}
		for _, v := range q.Vars {
			values[v] = "x"
		}
		expanded, err := dashboards.Expand(q.Expr, values)
		require.NoError(t, err, "%s: panel %q target %s", q.File, q.Panel, q.RefID)
		require.NotContains(t, expanded, "$", "%s: panel %q target %s: a variable is missing from Vars %v", q.File, q.Panel, q.RefID, q.Vars)
		require.NotContains(t, expanded, "[[", "%s: panel %q target %s: a variable is missing from Vars %v", q.File, q.Panel, q.RefID, q.Vars)
		if strings.Contains(q.Expr, "$") {
			require.NotEmpty(t, q.Vars, "%s: panel %q target %s", q.File, q.Panel, q.RefID)
		}
		require.NotContains(t, dashboards.KubernetesOnlyPanels, q.Panel, "no panel of these dashboards needs Kubernetes")
	}
	for _, f := range files(t) {
		require.Positive(t, perFile[f], "%s has no Prometheus query", f)
	}
	// Every Prometheus target of every panel is listed, collapsed rows
	// included.
	n := 0
	for _, f := range files(t) {
		for _, p := range allPanels(decode(t, f).Panels) {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					n++
				}
			}
		}
	}
	require.Len(t, qs, n)

	vqs, err := dashboards.VariableQueries()
	require.NoError(t, err)
	require.NotEmpty(t, vqs)
	for _, vq := range vqs {
		require.True(t, strings.HasPrefix(vq.Query, "label_values("), "%s: %s", vq.File, vq.Query)
	}
}

func TestExpand(t *testing.T) {
	values := map[string]string{"mesh": "default", "zone": ".*", "__rate_interval": "1m"}
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "plain", in: `rate(x{mesh="$mesh"}[$__rate_interval])`, want: `rate(x{mesh="default"}[1m])`},
		{name: "braces and format", in: `x{mesh="${mesh}",kuma_io_zone=~"${zone:regex}"}`, want: `x{mesh="default",kuma_io_zone=~".*"}`},
		{name: "brackets", in: `x{mesh="[[mesh]]"}`, want: `x{mesh="default"}`},
		{name: "prefix of a longer name", in: `x{a="$meshes"}`, err: "meshes"},
		{name: "missing", in: `x{a="$dataplane",b="$service",c="$dataplane"}`, err: "no value for dataplane, service"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dashboards.Expand(tc.in, values)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	require.Equal(t, []string{"__rate_interval", "mesh", "zone"},
		dashboards.VarsOf(`rate(x{mesh="$mesh",z=~"${zone:regex}"}[$__rate_interval]) / rate(y{mesh="[[mesh]]"}[$__rate_interval])`))
}

// Every graph and stat shows numbers with a unit, and a legend naming what a
// series is.
func TestTimeseriesHaveUnitsAndLegends(t *testing.T) {
	for _, f := range files(t) {
		for _, p := range allPanels(decode(t, f).Panels) {
			if p.Type != "timeseries" && p.Type != "stat" {
				continue
			}
			require.NotNil(t, p.FieldConfig, "%s: panel %q", f, p.Title)
			require.NotEmpty(t, p.FieldConfig.Defaults.Unit, "%s: panel %q: unit", f, p.Title)
			for _, tg := range p.Targets {
				require.NotEmpty(t, tg.LegendFormat, "%s: panel %q target %s: legend", f, p.Title, tg.RefID)
				// A legend may only name labels the query keeps.
				for _, m := range regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).FindAllStringSubmatch(tg.LegendFormat, -1) {
					require.True(t, keepsLabel(tg.Expr, m[1]), "%s: panel %q target %s: legend uses %s, which %s drops", f, p.Title, tg.RefID, m[1], tg.Expr)
				}
			}
		}
	}
}

// keepsLabel reports whether the outermost aggregation of expr keeps label
// (a rough check: every "by (…)" clause of expr names it, or expr does not
// aggregate at all).
func keepsLabel(expr, label string) bool {
	bys := regexp.MustCompile(`\bby \(([^)]*)\)`).FindAllStringSubmatch(expr, -1)
	aggregates := regexp.MustCompile(`\b(sum|max|min|avg|count)\s*\(`).MatchString(expr)
	if len(bys) == 0 {
		return !aggregates
	}
	for _, b := range bys {
		if !slices.Contains(strings.Split(strings.ReplaceAll(b[1], " ", ""), ","), label) {
			return false
		}
	}
	return true
}

func Example() {
	qs, _ := dashboards.Queries()
	for _, q := range qs {
		if q.Dashboard == "Kuma Mesh" && q.Panel == "Dataplanes online" {
			expr, _ := dashboards.Expand(q.Expr, map[string]string{"mesh": "default", "zone": ".*"})
			fmt.Println(expr)
		}
	}
	// Output: count(envoy_server_live{mesh="default",kuma_io_zone=~".*"})
}
