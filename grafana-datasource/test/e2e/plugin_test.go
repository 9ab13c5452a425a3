package e2e

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/grafana/grafana-plugin-sdk-go/genproto/pluginv2"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// What the demo runs: the traffic generator sends 20 requests/s to the
// frontend, which calls backend once per request; both backends fail 20%
// of their requests (500), and the frontend answers 502 then.
const (
	demoRate      = 20.0
	demoErrorRate = 0.2
)

// frameRows reads a frame as rows of field name → value (pointers
// dereferenced, null as nil).
func frameRows(t *testing.T, f *data.Frame) []map[string]any {
	t.Helper()
	rows := make([]map[string]any, f.Rows())
	for i := range rows {
		rows[i] = map[string]any{}
		for _, fl := range f.Fields {
			v, _ := fl.ConcreteAt(i)
			rows[i][fl.Name] = v
		}
	}
	return rows
}

func frameNamed(t *testing.T, fs data.Frames, name string) *data.Frame {
	t.Helper()
	for _, f := range fs {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no frame %q among %d frames", name, len(fs))
	return nil
}

// graph is a MeshGraph answer by node and edge id.
type graph struct {
	nodes, edges map[string]map[string]any
}

func (p *pluginProcess) meshGraph(t *testing.T, d datasource, mesh string) (graph, error) {
	t.Helper()
	a := p.queryData(t, d, query{refID: "G", json: `{"queryType":"mesh-graph","mesh":"` + mesh + `"}`})["G"]
	if a.err != "" {
		return graph{}, fmt.Errorf("%s", a.err)
	}
	require.Len(t, a.frames, 2)
	g := graph{nodes: map[string]map[string]any{}, edges: map[string]map[string]any{}}
	for _, f := range a.frames {
		require.Equal(t, "G", f.RefID)
		require.Equal(t, data.VisType(data.VisTypeNodeGraph), f.Meta.PreferredVisualization)
	}
	for _, r := range frameRows(t, frameNamed(t, a.frames, "nodes")) {
		g.nodes[r["id"].(string)] = r
	}
	for _, r := range frameRows(t, frameNamed(t, a.frames, "edges")) {
		g.edges[r["id"].(string)] = r
	}
	return g, nil
}

func keys(m map[string]map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func within(name string, got, want, tolerance float64) error {
	if got < want-tolerance || got > want+tolerance {
		return fmt.Errorf("%s is %.3f, want %.3f ± %.3f", name, got, want, tolerance)
	}
	return nil
}

// TestAgainstTheDemo starts the demo and the plugin binary, and checks
// every query type, the resources and the health check through the
// plugin's gRPC interface, against kumactl and the traffic the demo sends.
func TestAgainstTheDemo(t *testing.T) {
	pluginZip, zipErr := findBuiltPlugin()
	d := startDemo(t, pluginZip)
	p := startPlugin(t)
	cp := "http://" + d.net + ".1:5681"
	prom := "http://" + d.net + ".1:9090"
	ds := datasource{uid: "demo", url: cp, jsonData: `{"prometheusUrl":"` + prom + `"}`}

	t.Run("health", func(t *testing.T) {
		res := p.checkHealth(t, ds)
		require.Equal(t, pluginv2.CheckHealthResponse_OK, res.Status, res.Message)
		var index struct{ Version, Hostname string }
		require.NoError(t, json.Unmarshal([]byte(httpGet(t, cp+"/")), &index))
		require.Contains(t, res.Message, "Control plane "+cp+": version "+index.Version)
		require.Regexp(t, `Prometheus `+regexp.QuoteMeta(prom)+`: version 2\.\d+\.\d+`, res.Message)
	})

	t.Run("mesh graph", func(t *testing.T) {
		// Once Prometheus holds a window of the demo's traffic, the graph
		// is exactly the demo's services and calls, at the rates it sends.
		var g graph
		eventually(t, 5*time.Minute, func() error {
			var err error
			if g, err = p.meshGraph(t, ds, "default"); err != nil {
				return err
			}
			if got := keys(g.nodes); strings.Join(got, ",") != "backend,frontend,traffic" {
				return fmt.Errorf("nodes %v", got)
			}
			if got := keys(g.edges); strings.Join(got, ",") != "frontend->backend,traffic->frontend" {
				return fmt.Errorf("edges %v", got)
			}
			for id, e := range g.edges {
				rps, _ := e["detail__requests_per_second"].(float64)
				if err := within(id+" req/s", rps, demoRate, 0.2*demoRate); err != nil {
					return err
				}
			}
			for _, id := range []string{"backend", "frontend"} {
				if err := within(id+" 5xx arc", g.nodes[id]["arc__5xx"].(float64), demoErrorRate, 0.06); err != nil {
					return err
				}
				if err := within(id+" 2xx arc", g.nodes[id]["arc__2xx"].(float64), 1-demoErrorRate, 0.06); err != nil {
					return err
				}
			}
			return nil
		})
		e := g.edges["frontend->backend"]
		require.Equal(t, "frontend", e["source"])
		require.Equal(t, "backend", e["target"])
		require.Equal(t, "http", e["detail__protocol"])
		require.Equal(t, false, e["detail__outside_mesh"])
		require.Equal(t, false, e["detail__mtls"], "the demo starts without mTLS")
		require.Regexp(t, `^\d+\.\d req/s$`, e["mainstat"])
		require.Regexp(t, `^\d+\.\d% success$`, e["secondarystat"])
		require.NotNil(t, e["detail__latency_p99"])
		b := g.nodes["backend"]
		require.Equal(t, "2/2 dataplanes online", b["subtitle"])
		require.Equal(t, int64(2), b["detail__dataplanes_total"])
		require.Equal(t, "online", b["detail__status"])
		require.Equal(t, true, b["detail__in_mesh"])
		tr := g.nodes["traffic"]
		require.Equal(t, "", tr["detail__protocol"], "nobody calls the traffic generator")
		require.Equal(t, 0.0, tr["arc__2xx"].(float64)+tr["arc__5xx"].(float64))

		// What a MeshGraph query costs, through gRPC, against the demo.
		var took []time.Duration
		for range 10 {
			start := time.Now()
			_, err := p.meshGraph(t, ds, "default")
			require.NoError(t, err)
			took = append(took, time.Since(start))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		t.Logf("mesh-graph query latency over 10 calls: min %s, median %s, max %s", took[0], took[5], took[9])
	})

	t.Run("meshes match kumactl", func(t *testing.T) {
		a := p.queryData(t, ds, query{refID: "M", json: `{"queryType":"meshes"}`})["M"]
		require.Empty(t, a.err)
		got := map[string][2]string{}
		for _, r := range frameRows(t, frameNamed(t, a.frames, "meshes")) {
			got[r["name"].(string)] = [2]string{r["mtls"].(string), r["metrics"].(string)}
		}
		want := map[string][2]string{}
		for _, l := range tableRows(d.kumactl(t, "get", "meshes")) {
			want[l["NAME"]] = [2]string{l["MTLS"], l["METRICS"]}
		}
		require.NotEmpty(t, want)
		require.Equal(t, want, got)
	})

	t.Run("services match kumactl", func(t *testing.T) {
		for _, q := range []string{`{"queryType":"services","mesh":"default"}`, `{"queryType":"services"}`} {
			a := p.queryData(t, ds, query{refID: "S", json: q})["S"]
			require.Empty(t, a.err)
			got := map[string][2]string{}
			for _, r := range frameRows(t, frameNamed(t, a.frames, "services")) {
				require.Equal(t, "default", r["mesh"])
				got[r["name"].(string)] = [2]string{r["status"].(string), fmt.Sprintf("%d/%d", r["online"], r["total"])}
			}
			want := map[string][2]string{}
			for _, l := range tableRows(d.kumactl(t, "inspect", "services", "--mesh", "default")) {
				want[l["SERVICE"]] = [2]string{l["STATUS"], l["DATAPLANES"]}
			}
			require.Equal(t, want, got, q)
			require.Equal(t, [2]string{"online", "2/2"}, got["backend"])
		}
	})

	t.Run("zones match kumactl", func(t *testing.T) {
		a := p.queryData(t, ds, query{refID: "Z", json: `{"queryType":"zones"}`})["Z"]
		require.Empty(t, a.err)
		var got []string
		for _, r := range frameRows(t, frameNamed(t, a.frames, "zones")) {
			got = append(got, r["name"].(string))
		}
		var want []string
		for _, l := range tableRows(d.kumactl(t, "get", "zones")) {
			want = append(want, l["NAME"])
		}
		require.Len(t, want, 1, "a single-zone control plane has one zone")
		require.Equal(t, want, got)
	})

	t.Run("resources", func(t *testing.T) {
		status, body := p.callResource(t, ds, "meshes")
		require.Equal(t, 200, status)
		require.JSONEq(t, `[{"name":"default"}]`, body)
		status, body = p.callResource(t, ds, "zones")
		require.Equal(t, 200, status)
		require.Contains(t, body, `"name":`)
		status, body = p.callResource(t, ds, "services?mesh=default")
		require.Equal(t, 200, status)
		var services []struct {
			Name, Mesh, Status     string
			Online, Offline, Total int
		}
		require.NoError(t, json.Unmarshal([]byte(body), &services))
		names := []string{}
		for _, s := range services {
			names = append(names, s.Name)
		}
		require.Equal(t, []string{"backend", "frontend", "traffic"}, names)
		status, body = p.callResource(t, ds, "services")
		require.Equal(t, 400, status)
		require.JSONEq(t, `{"message":"mesh: the query parameter is required"}`, body)
		status, body = p.callResource(t, ds, "services?mesh=nope")
		require.Equal(t, 404, status)
		require.Contains(t, body, "nope")
	})

	t.Run("bad queries fail alone, naming the field", func(t *testing.T) {
		as := p.queryData(t, ds,
			query{refID: "ok", json: `{"queryType":"meshes"}`},
			query{refID: "type", json: `{"queryType":"mesh-graph","mesh":42}`},
			query{refID: "unknown", json: `{"queryType":"graph"}`},
			query{refID: "regexp", json: `{"queryType":"mesh-graph","mesh":"default","zone":"(a"}`},
			query{refID: "json", json: `{"queryType":`},
			query{refID: "mesh", json: `{"queryType":"mesh-graph","mesh":"nope"}`},
		)
		require.Empty(t, as["ok"].err)
		require.Len(t, as["ok"].frames, 1)
		require.Contains(t, as["type"].err, "mesh: must be a string, got a number")
		require.Contains(t, as["unknown"].err, `queryType: unknown query type "graph"`)
		require.Contains(t, as["regexp"].err, "zone: invalid regular expression")
		require.Contains(t, as["json"].err, "query: not valid JSON")
		require.Contains(t, as["mesh"].err, `mesh "nope" not found`)
		require.EqualValues(t, 400, as["type"].status)
		require.EqualValues(t, 404, as["mesh"].status)
	})

	t.Run("the control plane over HTTPS, verified with its CA, with a token", func(t *testing.T) {
		ca, err := os.ReadFile(filepath.Join(d.dir, "kuma-data", "api-server-ca.pem"))
		require.NoError(t, err)
		token, err := os.ReadFile(filepath.Join(d.dir, "kuma-data", "admin-user-token"))
		require.NoError(t, err)
		https := datasource{uid: "https", url: "https://" + d.net + ".1:5682",
			jsonData: `{"prometheusUrl":"` + prom + `","tlsAuthWithCACert":true}`,
			secure:   map[string]string{"tlsCACert": string(ca), "controlPlaneToken": string(token)}}
		res := p.checkHealth(t, https)
		require.Equal(t, pluginv2.CheckHealthResponse_OK, res.Status, res.Message)
		require.Empty(t, p.queryData(t, https, query{refID: "M", json: `{"queryType":"meshes"}`})["M"].err)
		// Without the CA the certificate is not trusted.
		untrusted := https
		untrusted.uid, untrusted.jsonData = "untrusted", `{"prometheusUrl":"`+prom+`"}`
		res = p.checkHealth(t, untrusted)
		require.Equal(t, pluginv2.CheckHealthResponse_ERROR, res.Status)
		require.Contains(t, res.Message, "certificate")
	})

	t.Run("down: a clear health message and query errors, no panic", func(t *testing.T) {
		nowhere := "http://" + loopbackNet() + ".1" // nothing listens there
		cpDown := datasource{uid: "cp-down", url: nowhere + ":5681", jsonData: `{"prometheusUrl":"` + prom + `"}`}
		res := p.checkHealth(t, cpDown)
		require.Equal(t, pluginv2.CheckHealthResponse_ERROR, res.Status)
		require.Contains(t, res.Message, "Control plane "+nowhere+":5681: control plane at "+nowhere+":5681 is not reachable")
		require.Contains(t, res.Message, "connection refused")
		require.Regexp(t, `Prometheus `+regexp.QuoteMeta(prom)+`: version 2\.`, res.Message, "the part that works says so")
		as := p.queryData(t, cpDown, query{refID: "M", json: `{"queryType":"meshes"}`}, query{refID: "G", json: `{"queryType":"mesh-graph","mesh":"default"}`})
		require.Contains(t, as["M"].err, "is not reachable")
		require.Contains(t, as["G"].err, "is not reachable")
		status, body := p.callResource(t, cpDown, "meshes")
		require.Equal(t, 502, status)
		require.Contains(t, body, "is not reachable")

		promDown := datasource{uid: "prom-down", url: cp, jsonData: `{"prometheusUrl":"` + nowhere + `:9090"}`}
		res = p.checkHealth(t, promDown)
		require.Equal(t, pluginv2.CheckHealthResponse_ERROR, res.Status)
		require.Contains(t, res.Message, "Control plane "+cp+": version ")
		require.Contains(t, res.Message, "Prometheus "+nowhere+":9090: prometheus at "+nowhere+":9090 is not reachable")
		as = p.queryData(t, promDown, query{refID: "G", json: `{"queryType":"mesh-graph","mesh":"default"}`}, query{refID: "M", json: `{"queryType":"meshes"}`})
		require.Contains(t, as["G"].err, "prometheus at "+nowhere+":9090 is not reachable")
		require.Empty(t, as["M"].err, "queries without Prometheus still work")

		bad := datasource{uid: "bad", url: "ftp://cp", jsonData: `{"prometheusUrl":"` + prom + `","tlsSkipVerify":"yes"}`}
		res = p.checkHealth(t, bad)
		require.Equal(t, pluginv2.CheckHealthResponse_ERROR, res.Status)
		require.Contains(t, res.Message, "url: must be an http:// or https:// URL")
		require.Contains(t, res.Message, "jsonData.tlsSkipVerify: must be true or false, got a string")
		require.Contains(t, p.queryData(t, bad, query{refID: "M", json: `{"queryType":"meshes"}`})["M"].err, "settings are wrong")

		require.False(t, p.client.Exited(), "the plugin is still running")
	})

	t.Run("installed and provisioned by kumactl install metrics", func(t *testing.T) {
		// The demo ran kumactl install metrics --universal --grafana-plugin
		// with make plugin's zip: Grafana, started with grafana.ini, would
		// load the plugin from its plugins folder, unsigned, and provision
		// the Kuma datasource. Run what it would: the installed binary,
		// with the provisioned settings.
		requireBuilt(t, zipErr)
		grafana := filepath.Join(d.dir, "metrics", "grafana")
		ini, err := os.ReadFile(filepath.Join(grafana, "grafana.ini"))
		require.NoError(t, err)
		require.Contains(t, string(ini), "\nplugins = "+filepath.Join(grafana, "plugins")+"\n")
		require.Contains(t, string(ini), "\nallow_loading_unsigned_plugins = kumahq-kuma-datasource\n")
		folder := filepath.Join(grafana, "plugins", "kumahq-kuma-datasource")
		var manifest struct{ ID, Executable string }
		raw, err := os.ReadFile(filepath.Join(folder, "plugin.json"))
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, &manifest))
		require.Equal(t, "kumahq-kuma-datasource", manifest.ID)
		// The zip of make test holds the amd64 backend only (make plugin's
		// holds arm64's too): whichever it holds is installed whole.
		files := []string{"module.js", "img/logo.svg", "README.md", "LICENSE", manifest.Executable + "_linux_amd64"}
		zr, err := zip.OpenReader(pluginZip)
		require.NoError(t, err)
		for _, f := range zr.File {
			if path.Base(f.Name) == manifest.Executable+"_linux_arm64" {
				files = append(files, manifest.Executable+"_linux_arm64")
			}
		}
		require.NoError(t, zr.Close())
		for _, f := range files {
			fi, err := os.Stat(filepath.Join(folder, f))
			require.NoError(t, err)
			require.NotZero(t, fi.Size(), f)
		}

		var provisioning struct {
			Datasources []struct {
				UID, Type, URL string
				JSONData       map[string]any `yaml:"jsonData"`
			}
		}
		raw, err = os.ReadFile(filepath.Join(grafana, "provisioning", "datasources", "kuma.yaml"))
		require.NoError(t, err)
		require.NoError(t, yaml.Unmarshal(raw, &provisioning))
		var kuma datasource
		for _, ds := range provisioning.Datasources {
			if ds.UID == "kuma" {
				require.Equal(t, "kumahq-kuma-datasource", ds.Type)
				jsonData, err := json.Marshal(ds.JSONData)
				require.NoError(t, err)
				kuma = datasource{uid: ds.UID, url: ds.URL, jsonData: string(jsonData)}
			}
		}
		require.Equal(t, "kuma", kuma.uid, "a datasource with uid kuma is provisioned")
		require.Equal(t, cp, kuma.url)
		require.JSONEq(t, `{"prometheusUrl":"`+prom+`"}`, kuma.jsonData,
			"the demo's Prometheus, where kumactl install metrics --prometheus-address says it listens")

		installed := startPluginBinary(t, filepath.Join(folder, manifest.Executable+"_linux_"+runtime.GOARCH))
		res := installed.checkHealth(t, kuma)
		require.Equal(t, pluginv2.CheckHealthResponse_OK, res.Status, res.Message)
		g, err := installed.meshGraph(t, kuma, "default")
		require.NoError(t, err)
		require.Contains(t, g.nodes, "backend")
		require.Contains(t, g.edges, "frontend->backend")
	})

	t.Run("mTLS", func(t *testing.T) {
		d.kumactlStdin(t, "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n"+
			"metrics:\n  enabledBackend: prometheus-1\n  backends:\n  - name: prometheus-1\n    type: prometheus\n    conf:\n      skipMTLS: true\n", "apply", "-f", "-")
		eventually(t, 2*time.Minute, func() error {
			g, err := p.meshGraph(t, ds, "default")
			if err != nil {
				return err
			}
			for _, id := range []string{"frontend->backend", "traffic->frontend"} {
				e, ok := g.edges[id]
				if !ok || e["detail__mtls"] != true {
					return fmt.Errorf("edge %s is not mTLS yet: %v", id, e)
				}
			}
			return nil
		})
		a := p.queryData(t, ds, query{refID: "M", json: `{"queryType":"meshes"}`})["M"]
		require.Equal(t, "builtin/ca-1", frameRows(t, frameNamed(t, a.frames, "meshes"))[0]["mtls"])
	})
}

// tableRows parses kumactl's table output: a header line, then rows
// aligned under it.
func tableRows(out string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 {
		return nil
	}
	header := regexp.MustCompile(`\S+(\s\S+)*`).FindAllStringIndex(lines[0], -1)
	var rows []map[string]string
	for _, l := range lines[1:] {
		r := map[string]string{}
		for i, h := range header {
			end := len(l)
			if i+1 < len(header) && header[i+1][0] < end {
				end = header[i+1][0]
			}
			if h[0] < len(l) {
				r[lines[0][h[0]:h[1]]] = strings.TrimSpace(l[h[0]:end])
			}
		}
		rows = append(rows, r)
	}
	return rows
}
