package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
)

// The Grafana dashboards of pkg/install/dashboards, read as files: this
// module does not depend on the main module.
const dashboardsGlob = "../../pkg/install/dashboards/*.json"

// dashboardVarValues are plausible values for the template variables, as
// Grafana would substitute them (regex variables set to All give ".*").
var dashboardVarValues = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "30s",
	"__interval_ms":   "30000",
	"__range":         "1h",
	"__range_s":       "3600",
	"__range_ms":      "3600000",
	"mesh":            "default",
	"zone":            ".*",
	"dataplane":       "backend-1",
	"service":         "backend",
	"source":          "frontend",
	"destination":     "backend",
	"job":             "kuma-cp",
	"instance":        ".*",
}

var dashboardVarRef = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]`)

// expandDashboardVars substitutes the template variables of expr.
func expandDashboardVars(t *testing.T, where, expr string) string {
	t.Helper()
	return dashboardVarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := dashboardVarRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := dashboardVarValues[name]
		if !ok {
			t.Errorf("%s: no plausible value for $%s in this test; add one: %s", where, name, expr)
			return ".*"
		}
		return v
	})
}

type dashboardPanel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
	} `json:"datasource"`
	Targets []struct {
		Datasource *struct {
			Type string `json:"type"`
		} `json:"datasource"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		RefID        string `json:"refId"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"`
}

type dashboardFile struct {
	file       string
	Title      string           `json:"title"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboards(t *testing.T) []dashboardFile {
	t.Helper()
	files, err := filepath.Glob(dashboardsGlob)
	require.NoError(t, err)
	require.Len(t, files, 5, "the five Kuma dashboards in %s", dashboardsGlob)
	var out []dashboardFile
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		d := dashboardFile{file: filepath.Base(f)}
		require.NoError(t, json.Unmarshal(b, &d), f)
		out = append(out, d)
	}
	return out
}

type promQuery struct {
	where  string // file, dashboard, panel and refId, for messages
	expr   string // as in the dashboard
	legend string
}

// promQueries returns the Prometheus queries of every panel, collapsed rows
// included.
func (d dashboardFile) promQueries() []promQuery {
	var out []promQuery
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				ds := tg.Datasource
				if ds == nil {
					ds = p.Datasource
				}
				if ds == nil || ds.Type != "prometheus" {
					continue
				}
				out = append(out, promQuery{
					where:  fmt.Sprintf("%s (%s), panel %d %q, query %s", d.file, d.Title, p.ID, p.Title, tg.RefID),
					expr:   tg.Expr,
					legend: tg.LegendFormat,
				})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// The metrics the dashboards may use, with their type and own labels, as
// the proxies (pkg/stats, pkg/metricsendpoint) and the control plane
// export them. Prometheus adds the target labels.
type knownMetric struct {
	counter bool // rate() and increase() apply
	labels  []string
	cp      bool // a control-plane metric (else a proxy's)
}

var (
	proxyTargetLabels = []string{"mesh", "dataplane", "service", "instance", "job", "kuma_io_service", "kuma_io_services", "kuma_io_zone", "kuma_io_protocol", "kuma_io_protocols"}
	cpTargetLabels    = []string{"instance", "job", "zone"}
	knownMetrics      = map[string]knownMetric{}
)

func init() {
	add := func(cp, counter bool, labels []string, names ...string) {
		for _, n := range names {
			knownMetrics[n] = knownMetric{counter: counter, labels: labels, cp: cp}
		}
	}
	histogram := func(cp bool, labels []string, names ...string) {
		for _, n := range names {
			add(cp, true, append(slices.Clone(labels), "le"), n+"_bucket")
			add(cp, true, labels, n+"_sum", n+"_count")
		}
	}
	cluster := []string{"envoy_cluster_name"}
	class := []string{"envoy_cluster_name", "envoy_response_code_class"}
	add(false, true, cluster, "envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_completed",
		"envoy_cluster_upstream_rq_timeout", "envoy_cluster_upstream_rq_rx_reset", "envoy_cluster_upstream_rq_tx_reset",
		"envoy_cluster_upstream_rq_pending_overflow", "envoy_cluster_upstream_rq_pending_failure_eject", "envoy_cluster_upstream_rq_retry_overflow",
		"envoy_cluster_upstream_cx_total", "envoy_cluster_upstream_cx_connect_fail", "envoy_cluster_upstream_cx_connect_timeout",
		"envoy_cluster_upstream_cx_overflow", "envoy_cluster_upstream_cx_destroy_local_with_active_rq", "envoy_cluster_upstream_cx_destroy_remote_with_active_rq",
		"envoy_cluster_upstream_cx_rx_bytes_total", "envoy_cluster_upstream_cx_tx_bytes_total", "envoy_cluster_ssl_handshake")
	add(false, true, class, "envoy_cluster_upstream_rq_xx", "envoy_cluster_external_upstream_rq_xx", "envoy_cluster_internal_upstream_rq_xx")
	add(false, false, cluster, "envoy_cluster_upstream_rq_active", "envoy_cluster_upstream_cx_active", "envoy_cluster_membership_total",
		"envoy_cluster_membership_healthy", "envoy_cluster_outlier_detection_ejections_active", "envoy_cluster_health_check_healthy")
	histogram(false, cluster, "envoy_cluster_upstream_rq_time", "envoy_cluster_upstream_cx_connect_ms", "envoy_cluster_upstream_cx_length_ms")

	hcm := []string{"envoy_http_conn_manager_prefix"}
	add(false, true, hcm, "envoy_http_downstream_rq_total", "envoy_http_downstream_cx_total")
	add(false, true, []string{"envoy_http_conn_manager_prefix", "envoy_response_code_class"}, "envoy_http_downstream_rq_xx")
	add(false, false, hcm, "envoy_http_downstream_cx_active", "envoy_http_downstream_rq_active")
	histogram(false, hcm, "envoy_http_downstream_rq_time")

	add(false, true, []string{"listener"}, "envoy_rbac_allowed", "envoy_rbac_denied")
	add(false, false, nil, "envoy_server_live", "envoy_server_uptime", "envoy_server_memory_allocated", "envoy_server_memory_heap_size",
		"envoy_control_plane_connected_state", "envoy_server_days_until_first_cert_expiring")

	add(false, true, []string{"app"}, "kuma_dp_metrics_aggregate_scrapes_total")
	add(false, true, []string{"app", "reason"}, "kuma_dp_metrics_aggregate_errors_total")
	add(false, true, []string{"app", "action"}, "kuma_dp_metrics_aggregate_collisions_total")
	add(false, false, []string{"app"}, "kuma_dp_metrics_aggregate_up")
	histogram(false, []string{"app"}, "kuma_dp_metrics_aggregate_scrape_time")

	add(true, false, []string{"instance_id", "version", "product"}, "cp_info")
	add(true, false, nil, "leader", "mads_server_long_polls_held", "go_goroutines", "go_memstats_alloc_bytes",
		"process_resident_memory_bytes", "process_start_time_seconds")
	add(true, false, []string{"resource_type"}, "resources_count")
	histogram(true, []string{"operation", "resource_type"}, "store")
	add(true, false, []string{"type_url"}, "xds_streams_active")
	add(true, true, []string{"type_url", "confirmation"}, "xds_requests_received")
	add(true, true, []string{"type_url"}, "xds_responses_sent", "xds_generation_errors", "xds_generation_sum", "xds_generation_count")
	add(true, false, []string{"type_url", "quantile"}, "xds_generation")
	histogram(true, []string{"handler", "code", "method"}, "mads_server_http_request_duration_seconds", "api_server_http_request_duration_seconds")
	add(true, true, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}, "grpc_server_handled_total")
	add(true, true, nil, "process_cpu_seconds_total")
}

// metricLabels returns the labels a series of metric can have in Prometheus.
func metricLabels(name string, m knownMetric) []string {
	if m.cp {
		return append(slices.Clone(cpTargetLabels), m.labels...)
	}
	return append(slices.Clone(proxyTargetLabels), m.labels...)
}

// labelSet is the set of labels a PromQL expression's result keeps; all
// means "whatever the selected series have".
type labelSet struct {
	all    bool
	labels []string
}

func (s labelSet) has(l string) bool { return s.all || slices.Contains(s.labels, l) }

// outputLabels computes which labels the result of e keeps.
func outputLabels(e parser.Expr) labelSet {
	switch n := e.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		return labelSet{all: true}
	case *parser.ParenExpr:
		return outputLabels(n.Expr)
	case *parser.UnaryExpr:
		return outputLabels(n.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet{}
	case *parser.AggregateExpr:
		switch {
		case n.Op == parser.TOPK || n.Op == parser.BOTTOMK:
			return outputLabels(n.Expr)
		case n.Without:
			return labelSet{all: true}
		default:
			return labelSet{labels: n.Grouping}
		}
	case *parser.Call:
		switch n.Func.Name {
		case "time", "vector", "scalar":
			return labelSet{}
		case "histogram_quantile":
			in := outputLabels(n.Args[1])
			return labelSet{all: in.all, labels: slices.DeleteFunc(slices.Clone(in.labels), func(l string) bool { return l == "le" })}
		}
		for _, a := range n.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return outputLabels(a)
			}
		}
		return labelSet{}
	case *parser.BinaryExpr:
		lhs, rhs := outputLabels(n.LHS), outputLabels(n.RHS)
		if n.Op == parser.LOR {
			return labelSet{all: lhs.all || rhs.all, labels: append(slices.Clone(lhs.labels), rhs.labels...)}
		}
		if n.LHS.Type() == parser.ValueTypeScalar {
			return rhs
		}
		return lhs
	}
	return labelSet{all: true}
}

// checkPromQL checks the semantics parsing alone does not catch: known
// metrics and labels, rate() over counters only, histogram_quantile over
// buckets grouped by le, binary operations whose sides can match, and
// legends naming labels the result keeps.
func checkPromQL(t *testing.T, q promQuery, expr parser.Expr, cpDashboard bool) {
	t.Helper()
	allLabels := map[string]bool{}
	for n, m := range knownMetrics {
		for _, l := range metricLabels(n, m) {
			allLabels[l] = true
		}
	}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			m, ok := knownMetrics[n.Name]
			if n.Name != "up" {
				if !ok {
					t.Errorf("%s: unknown metric %q: %s", q.where, n.Name, q.expr)
					return nil
				}
				if m.cp != cpDashboard {
					t.Errorf("%s: %q is a %s metric: %s", q.where, n.Name, map[bool]string{true: "control-plane", false: "proxy"}[m.cp], q.expr)
				}
			}
			allowed := proxyTargetLabels
			if cpDashboard {
				allowed = cpTargetLabels
			}
			if ok {
				allowed = metricLabels(n.Name, m)
			}
			for _, lm := range n.LabelMatchers {
				if lm.Name != model.MetricNameLabel && !slices.Contains(allowed, lm.Name) {
					t.Errorf("%s: %s has no label %q: %s", q.where, n.Name, lm.Name, q.expr)
				}
			}
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				if !allLabels[l] {
					t.Errorf("%s: no metric has label %q: %s", q.where, l, q.expr)
				}
			}
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "increase", "irate":
				ms := n.Args[0].(*parser.MatrixSelector)
				name := ms.VectorSelector.(*parser.VectorSelector).Name
				if m, ok := knownMetrics[name]; ok && !m.counter {
					t.Errorf("%s: %s() of %s, which is not a counter: %s", q.where, n.Func.Name, name, q.expr)
				}
			case "histogram_quantile":
				if !outputLabels(n.Args[1]).has("le") {
					t.Errorf("%s: histogram_quantile over an aggregation without le: %s", q.where, q.expr)
				}
				parser.Inspect(n.Args[1], func(in parser.Node, _ []parser.Node) error {
					if vs, ok := in.(*parser.VectorSelector); ok && !strings.HasSuffix(vs.Name, "_bucket") {
						t.Errorf("%s: histogram_quantile over %s, not a _bucket series: %s", q.where, vs.Name, q.expr)
					}
					return nil
				})
			}
		case *parser.BinaryExpr:
			if n.LHS.Type() != parser.ValueTypeVector || n.RHS.Type() != parser.ValueTypeVector || n.Op.IsSetOperator() {
				return nil
			}
			if n.VectorMatching != nil && (n.VectorMatching.On || len(n.VectorMatching.MatchingLabels) > 0) {
				return nil
			}
			lhs, rhs := outputLabels(n.LHS), outputLabels(n.RHS)
			if !lhs.all && !rhs.all {
				l, r := slices.Sorted(slices.Values(lhs.labels)), slices.Sorted(slices.Values(rhs.labels))
				if !slices.Equal(l, r) {
					t.Errorf("%s: the sides of %s keep different labels (%v and %v), so no series match: %s", q.where, n.Op, l, r, q.expr)
				}
			}
		}
		return nil
	})

	out := outputLabels(expr)
	for _, m := range regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`).FindAllStringSubmatch(q.legend, -1) {
		if !out.has(m[1]) {
			t.Errorf("%s: legend %q uses label %s, which the query drops (it keeps %v): %s", q.where, q.legend, m[1], out.labels, q.expr)
		}
	}
}

// TestDashboardPromQLParses parses every PromQL query of every dashboard
// with Prometheus' own parser, after substituting the template variables,
// and checks the metrics and labels it uses.
func TestDashboardPromQLParses(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, d := range loadDashboards(t) {
		qs := d.promQueries()
		require.NotEmpty(t, qs, d.file)
		for _, q := range qs {
			n++
			if strings.TrimSpace(q.expr) == "" {
				t.Errorf("%s: empty expression", q.where)
				continue
			}
			expanded := expandDashboardVars(t, q.where, q.expr)
			expr, err := p.ParseExpr(expanded)
			if err != nil {
				t.Errorf("%s: %v\n  expr: %s\n  expanded: %s", q.where, err, q.expr, expanded)
				continue
			}
			if typ := expr.Type(); typ != parser.ValueTypeVector && typ != parser.ValueTypeScalar {
				t.Errorf("%s: a panel query must give a vector or a scalar, not a %s: %s", q.where, typ, q.expr)
				continue
			}
			checkPromQL(t, q, expr, d.file == "kuma-cp.json")
		}
	}
	t.Logf("%d queries parsed", n)
}

var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// TestDashboardVariableQueriesParse checks that the selector of every
// label_values(selector, label) template variable parses and that the
// label can be on the selected series.
func TestDashboardVariableQueriesParse(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	n := 0
	for _, d := range loadDashboards(t) {
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			n++
			where := fmt.Sprintf("%s (%s), variable %s", d.file, d.Title, v.Name)
			var query string
			if err := json.Unmarshal(v.Query, &query); err != nil {
				var o struct {
					Query string `json:"query"`
				}
				require.NoError(t, json.Unmarshal(v.Query, &o), where)
				query = o.Query
			}
			m := labelValuesQuery.FindStringSubmatch(query)
			if m == nil {
				t.Errorf("%s: not a label_values(selector, label) query: %s", where, query)
				continue
			}
			selector := expandDashboardVars(t, where, m[1])
			matchers, err := p.ParseMetricSelector(selector)
			if err != nil {
				t.Errorf("%s: selector %s: %v", where, selector, err)
				continue
			}
			var name string
			for _, lm := range matchers {
				if lm.Name == model.MetricNameLabel && lm.Type == labels.MatchEqual {
					name = lm.Value
				}
			}
			km, ok := knownMetrics[name]
			if !ok {
				t.Errorf("%s: unknown metric %q: %s", where, name, query)
				continue
			}
			allowed := metricLabels(name, km)
			for _, l := range append([]string{m[2]}, matcherNames(matchers)...) {
				if !slices.Contains(allowed, l) {
					t.Errorf("%s: %s has no label %q: %s", where, name, l, query)
				}
			}
		}
	}
	require.Positive(t, n)
	t.Logf("%d variable queries parsed", n)
}

func matcherNames(ms []*labels.Matcher) []string {
	var out []string
	for _, m := range ms {
		if m.Name != model.MetricNameLabel {
			out = append(out, m.Name)
		}
	}
	return out
}
