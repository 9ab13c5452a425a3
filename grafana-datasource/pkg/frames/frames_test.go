package frames

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/grafana/grafana-plugin-sdk-go/data"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/kumaapi"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/meshgraph"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// schema is what the golden files pin of a frame: its name, meta and each
// field's name, type and config.
type schema struct {
	Name   string          `json:"name"`
	Meta   *data.FrameMeta `json:"meta,omitempty"`
	Fields []fieldSchema   `json:"fields"`
}

type fieldSchema struct {
	Name   string            `json:"name"`
	Type   string            `json:"type"`
	Config *data.FieldConfig `json:"config,omitempty"`
}

// wire sends f through Arrow, as the plugin answers Grafana.
func wire(t *testing.T, f *data.Frame) *data.Frame {
	t.Helper()
	b, err := f.MarshalArrow()
	require.NoError(t, err)
	out, err := data.UnmarshalArrowFrame(b)
	require.NoError(t, err)
	return out
}

func schemaOf(f *data.Frame) schema {
	s := schema{Name: f.Name, Meta: f.Meta}
	for _, fl := range f.Fields {
		s.Fields = append(s.Fields, fieldSchema{Name: fl.Name, Type: fl.Type().ItemTypeString(), Config: fl.Config})
	}
	return s
}

// golden compares the schema of f (after the wire) with testdata/<name>.golden.json.
func golden(t *testing.T, f *data.Frame) {
	t.Helper()
	got, err := json.MarshalIndent(schemaOf(wire(t, f)), "", "  ")
	require.NoError(t, err)
	got = append(got, '\n')
	path := filepath.Join("testdata", f.Name+".golden.json")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, got, 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./pkg/frames -update to write it")
	require.Equal(t, string(want), string(got), "the schema of frame %q changed: a renamed or retyped field breaks the panels that read it (go test -update rewrites the golden file once intended)", f.Name)
}

// sampleGraph has a node and an edge of each kind: HTTP, TCP, outside the
// mesh, without traffic.
func sampleGraph() meshgraph.Graph {
	inf := math.Inf(1)
	httpT := meshgraph.Traffic{
		RequestsPerSecond: 20, ByClass: [6]float64{0, 0, 16, 0, 0, 4},
		Latency:              meshgraph.Histogram{{UpperBound: 1, Count: 2}, {UpperBound: 5, Count: 20}, {UpperBound: inf, Count: 20}},
		ConnectionsPerSecond: 0.1, ActiveConnections: 2, SentBytesPerSecond: 2000, ReceivedBytesPerSecond: 20000,
	}
	tcpT := meshgraph.Traffic{ConnectionsPerSecond: 1, ActiveConnections: 3, SentBytesPerSecond: 4096, ReceivedBytesPerSecond: 1024}
	return meshgraph.Graph{
		Nodes: []meshgraph.Node{
			{ID: "backend", InMesh: true, Status: "online", Online: 2, Total: 2, In: httpT},
			{ID: "db", InMesh: true, Status: "partially_degraded", Online: 1, Offline: 1, Total: 2, In: tcpT},
			{ID: "external", In: httpT},
			{ID: "frontend", InMesh: true, Status: "online", Online: 1, Total: 1},
		},
		Edges: []meshgraph.Edge{
			{ID: "frontend->backend", Source: "frontend", Target: "backend", MTLS: true, Traffic: httpT},
			{ID: "frontend->db", Source: "frontend", Target: "db", Traffic: tcpT},
			{ID: "frontend->external", Source: "frontend", Target: "external", OutsideMesh: true, Traffic: httpT},
		},
	}
}

func TestGraphSchema(t *testing.T) {
	nodes, edges := Graph(sampleGraph())
	golden(t, nodes)
	golden(t, edges)
	// An empty graph has the same schema.
	emptyNodes, emptyEdges := Graph(meshgraph.Graph{})
	require.Equal(t, schemaOf(wire(t, nodes)), schemaOf(wire(t, emptyNodes)))
	require.Equal(t, schemaOf(wire(t, edges)), schemaOf(wire(t, emptyEdges)))
	require.Equal(t, 0, emptyNodes.Rows())
	require.Equal(t, 0, emptyEdges.Rows())
}

func TestTableSchemas(t *testing.T) {
	golden(t, Meshes([]kumaapi.Mesh{{Name: "default", MTLS: &kumaapi.Backend{EnabledBackend: "ca-1"}}}))
	golden(t, Zones([]kumaapi.Zone{{Name: "Standalone", Enabled: true}}))
	golden(t, Services([]kumaapi.ServiceInsight{{Mesh: "default", Name: "backend", Status: "online"}}))
}

// field returns the frame's field of that name.
func field(t *testing.T, f *data.Frame, name string) *data.Field {
	t.Helper()
	fl, i := f.FieldByName(name)
	require.GreaterOrEqual(t, i, 0, "frame %s has no field %s", f.Name, name)
	return fl
}

func isNumber(ft data.FieldType) bool { return ft.Numeric() }

// TestNodeGraphReads checks the frames against what Grafana's node graph
// panel reads (its field names are matched lower-case): nodes need a string
// id; title, subtitle and color are strings; mainstat and secondarystat are
// strings or numbers; every arc__ field is a number with a fixed color and a
// node's arcs sum to 1 or are all 0 (then color is used); detail__ fields are
// shown in the context menu. Edges need string id, source and target naming
// nodes, and a numeric thickness. Ids are unique. Both frames prefer the
// node graph.
func TestNodeGraphReads(t *testing.T) {
	g := sampleGraph()
	nodes, edges := Graph(g)
	nodes, edges = wire(t, nodes), wire(t, edges)
	for _, f := range []*data.Frame{nodes, edges} {
		require.Equal(t, data.VisType(data.VisTypeNodeGraph), f.Meta.PreferredVisualization)
		for _, fl := range f.Fields {
			require.Equal(t, strings.ToLower(fl.Name), fl.Name, "the panel matches lower-case names")
		}
	}
	require.Equal(t, "nodes", nodes.Name)
	require.Equal(t, "edges", edges.Name)
	for _, name := range []string{"id", "title", "subtitle", "color"} {
		require.Equal(t, data.FieldTypeString, field(t, nodes, name).Type(), name)
	}
	for _, name := range []string{"mainstat", "secondarystat"} {
		ft := field(t, nodes, name).Type()
		require.True(t, ft == data.FieldTypeString || isNumber(ft), name)
		ft = field(t, edges, name).Type()
		require.True(t, ft == data.FieldTypeString || isNumber(ft), name)
	}
	var arcFields []*data.Field
	for _, fl := range nodes.Fields {
		if strings.HasPrefix(fl.Name, "arc__") {
			require.True(t, isNumber(fl.Type()), fl.Name)
			require.Equal(t, "fixed", fl.Config.Color["mode"], fl.Name)
			require.NotEmpty(t, fl.Config.Color["fixedColor"], fl.Name)
			arcFields = append(arcFields, fl)
		}
	}
	require.Len(t, arcFields, 4)
	ids := map[string]bool{}
	for row := 0; row < nodes.Rows(); row++ {
		id := field(t, nodes, "id").At(row).(string)
		require.False(t, ids[id], "duplicate node id %s", id)
		ids[id] = true
		var sum float64
		for _, fl := range arcFields {
			v, err := fl.FloatAt(row)
			require.NoError(t, err)
			require.GreaterOrEqual(t, v, 0.0)
			sum += v
		}
		require.True(t, math.Abs(sum-1) < 1e-9 || sum == 0, "node %s: arcs sum to %v", id, sum)
	}
	for _, name := range []string{"id", "source", "target"} {
		require.Equal(t, data.FieldTypeString, field(t, edges, name).Type(), name)
	}
	require.True(t, isNumber(field(t, edges, "thickness").Type()))
	edgeIDs := map[string]bool{}
	for row := 0; row < edges.Rows(); row++ {
		id := field(t, edges, "id").At(row).(string)
		require.False(t, edgeIDs[id])
		edgeIDs[id] = true
		require.True(t, ids[field(t, edges, "source").At(row).(string)])
		require.True(t, ids[field(t, edges, "target").At(row).(string)])
	}
}

// The values a user sees for each kind of node and edge.
func TestGraphValues(t *testing.T) {
	nodes, edges := Graph(sampleGraph())
	row := func(f *data.Frame, id string) int {
		for i := 0; i < f.Rows(); i++ {
			if f.Fields[0].At(i) == id {
				return i
			}
		}
		t.Fatalf("no row %s", id)
		return -1
	}
	str := func(f *data.Frame, id, name string) string { return field(t, f, name).At(row(f, id)).(string) }
	num := func(f *data.Frame, id, name string) *float64 { return field(t, f, name).At(row(f, id)).(*float64) }

	require.Equal(t, "20.0 req/s", str(nodes, "backend", "mainstat"))
	require.Equal(t, "80.0% success", str(nodes, "backend", "secondarystat"))
	require.Equal(t, "2/2 dataplanes online", str(nodes, "backend", "subtitle"))
	require.InDelta(t, 0.2, field(t, nodes, "arc__5xx").At(row(nodes, "backend")).(float64), 1e-9)
	require.InDelta(t, 0.8, *num(nodes, "backend", "detail__success_rate"), 1e-9)
	require.InDelta(t, 1+4*(10-2)/18.0, *num(nodes, "backend", "detail__latency_p50"), 1e-9)
	require.InDelta(t, 1+4*(19.8-2)/18.0, *num(nodes, "backend", "detail__latency_p99"), 1e-9)

	require.Equal(t, "5.00 KiB/s", str(nodes, "db", "mainstat"))
	require.Equal(t, "3 connections", str(nodes, "db", "secondarystat"))
	require.Equal(t, colorTCP, str(nodes, "db", "color"))
	require.Nil(t, num(nodes, "db", "detail__requests_per_second"), "no requests: null, not 0")
	require.Equal(t, "tcp", str(nodes, "db", "detail__protocol"))

	require.Equal(t, "outside the mesh", str(nodes, "external", "subtitle"))
	require.Equal(t, colorOutside, str(nodes, "external", "color"))
	require.Equal(t, "", str(nodes, "frontend", "mainstat"))
	require.Equal(t, colorNoTraffic, str(nodes, "frontend", "color"))

	require.Equal(t, dashedEdge, str(edges, "frontend->external", "strokedasharray"))
	require.Equal(t, "", str(edges, "frontend->backend", "strokedasharray"))
	require.Equal(t, true, field(t, edges, "detail__mtls").At(row(edges, "frontend->backend")))
	require.Equal(t, true, field(t, edges, "detail__outside_mesh").At(row(edges, "frontend->external")))
	require.InDelta(t, thickEdge, field(t, edges, "thickness").At(row(edges, "frontend->backend")).(float64), 1e-9)
	require.InDelta(t, thickEdge, field(t, edges, "thickness").At(row(edges, "frontend->db")).(float64), 1e-9, "the busiest TCP edge")
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{0: "0.00", 0.123: "0.12", 9.999: "10.00", 12.34: "12.3", 123.4: "123", 20000: "20000"} {
		require.Equal(t, want, formatRate(v))
	}
	for v, want := range map[float64]string{0: "0 B", 1023: "1023 B", 1024: "1.00 KiB", 1536 * 1024: "1.50 MiB", 5 * 1 << 50: "5120 TiB"} {
		require.Equal(t, want, formatBytes(v))
	}
}
