// Package frames turns the datasource's results into Grafana data frames:
// the mesh graph as the nodes and edges frames Grafana's node graph panel
// reads, and the tables of meshes, zones and services. The frames' schema
// (field names and types) is pinned by golden files in testdata.
package frames

import (
	"fmt"
	"math"

	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/meshgraph"
)

// The node graph panel finds frames by these names, and fields by the
// lower-case names below.
const (
	NodesFrame = "nodes"
	EdgesFrame = "edges"
)

// Colors (HTML, as the color field takes them) of nodes without HTTP
// responses, whose arcs are all zero.
const (
	colorTCP       = "#5794f2"
	colorOutside   = "#b877d9"
	colorNoTraffic = "#8e8e8e"
)

// arcs are the response classes of the nodes' arcs, in Traffic.Arcs order.
var arcs = []struct{ name, color string }{
	{"2xx", "green"}, {"3xx", "blue"}, {"4xx", "orange"}, {"5xx", "red"},
}

// Edge thickness: from thinEdge (least traffic) to thickEdge (most, among
// edges of the same protocol).
const (
	thinEdge  = 1.0
	thickEdge = 5.0
)

// dashedEdge draws an edge to a service outside the mesh dashed.
const dashedEdge = "5 5"

func unit(u, display string) *data.FieldConfig {
	return &data.FieldConfig{Unit: u, DisplayName: display}
}

// Graph is the graph as the node graph panel's nodes and edges frames.
func Graph(g meshgraph.Graph) (nodes, edges *data.Frame) {
	return nodesFrame(g.Nodes), edgesFrame(g.Edges)
}

func nodesFrame(ns []meshgraph.Node) *data.Frame {
	n := len(ns)
	id := make([]string, n)
	title := make([]string, n)
	subtitle := make([]string, n)
	mainstat := make([]string, n)
	secondarystat := make([]string, n)
	color := make([]string, n)
	arcValues := make([][]float64, len(arcs))
	for i := range arcValues {
		arcValues[i] = make([]float64, n)
	}
	protocol := make([]string, n)
	inMesh := make([]bool, n)
	status := make([]string, n)
	online := make([]int64, n)
	offline := make([]int64, n)
	total := make([]int64, n)
	h := newHTTPColumns(n)
	tcp := newTCPColumns(n)
	for i, node := range ns {
		t := node.In
		id[i], title[i] = node.ID, node.ID
		subtitle[i] = nodeSubtitle(node)
		mainstat[i], secondarystat[i] = stats(t)
		a := t.Arcs()
		for j := range arcs {
			arcValues[j][i] = a[j]
		}
		switch {
		case !node.InMesh:
			color[i] = colorOutside
		case t.Protocol() == meshgraph.TCP:
			color[i] = colorTCP
		default:
			color[i] = colorNoTraffic
		}
		protocol[i] = string(t.Protocol())
		inMesh[i] = node.InMesh
		status[i] = node.Status
		online[i], offline[i], total[i] = int64(node.Online), int64(node.Offline), int64(node.Total)
		h.set(i, t)
		tcp.set(i, t)
	}
	fields := []*data.Field{
		data.NewField("id", nil, id),
		data.NewField("title", nil, title),
		data.NewField("subtitle", nil, subtitle),
		data.NewField("mainstat", nil, mainstat),
		data.NewField("secondarystat", nil, secondarystat),
	}
	for j, a := range arcs {
		fields = append(fields, data.NewField("arc__"+a.name, nil, arcValues[j]).SetConfig(&data.FieldConfig{
			DisplayName: a.name,
			Color:       map[string]any{"mode": "fixed", "fixedColor": a.color},
		}))
	}
	fields = append(fields,
		data.NewField("color", nil, color),
		data.NewField("detail__protocol", nil, protocol).SetConfig(unit("", "Protocol")),
		data.NewField("detail__in_mesh", nil, inMesh).SetConfig(unit("", "In the mesh")),
		data.NewField("detail__status", nil, status).SetConfig(unit("", "Status")),
		data.NewField("detail__dataplanes_online", nil, online).SetConfig(unit("none", "Dataplanes online")),
		data.NewField("detail__dataplanes_offline", nil, offline).SetConfig(unit("none", "Dataplanes offline")),
		data.NewField("detail__dataplanes_total", nil, total).SetConfig(unit("none", "Dataplanes")),
	)
	fields = append(fields, h.fields()...)
	fields = append(fields, tcp.fields(true)...)
	f := data.NewFrame(NodesFrame, fields...)
	f.SetMeta(&data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph})
	return f
}

func edgesFrame(es []meshgraph.Edge) *data.Frame {
	n := len(es)
	id := make([]string, n)
	source := make([]string, n)
	target := make([]string, n)
	mainstat := make([]string, n)
	secondarystat := make([]string, n)
	thickness := make([]float64, n)
	dash := make([]string, n)
	protocol := make([]string, n)
	mtls := make([]bool, n)
	outside := make([]bool, n)
	h := newHTTPColumns(n)
	tcp := newTCPColumns(n)
	// The busiest edge of each protocol is the thickest.
	var maxRPS, maxBytes float64
	for _, e := range es {
		if e.Traffic.Protocol() == meshgraph.HTTP {
			maxRPS = math.Max(maxRPS, e.Traffic.RequestsPerSecond)
		} else {
			maxBytes = math.Max(maxBytes, bytesPerSecond(e.Traffic))
		}
	}
	for i, e := range es {
		t := e.Traffic
		id[i], source[i], target[i] = e.ID, e.Source, e.Target
		mainstat[i], secondarystat[i] = stats(t)
		switch t.Protocol() {
		case meshgraph.HTTP:
			thickness[i] = scale(t.RequestsPerSecond, maxRPS)
		default:
			thickness[i] = scale(bytesPerSecond(t), maxBytes)
		}
		if e.OutsideMesh {
			dash[i] = dashedEdge
		}
		protocol[i] = string(t.Protocol())
		mtls[i] = e.MTLS
		outside[i] = e.OutsideMesh
		h.set(i, t)
		tcp.set(i, t)
	}
	fields := []*data.Field{
		data.NewField("id", nil, id),
		data.NewField("source", nil, source),
		data.NewField("target", nil, target),
		data.NewField("mainstat", nil, mainstat),
		data.NewField("secondarystat", nil, secondarystat),
		data.NewField("thickness", nil, thickness),
		data.NewField("strokedasharray", nil, dash),
		data.NewField("detail__protocol", nil, protocol).SetConfig(unit("", "Protocol")),
		data.NewField("detail__mtls", nil, mtls).SetConfig(unit("", "mTLS")),
		data.NewField("detail__outside_mesh", nil, outside).SetConfig(unit("", "To a service outside the mesh")),
	}
	fields = append(fields, h.fields()...)
	fields = append(fields, tcp.fields(false)...)
	f := data.NewFrame(EdgesFrame, fields...)
	f.SetMeta(&data.FrameMeta{PreferredVisualization: data.VisTypeNodeGraph})
	return f
}

// httpColumns are the request statistics of nodes or edges: null where no
// request flowed.
type httpColumns struct {
	rps, success, p50, p99, errors []*float64
}

func newHTTPColumns(n int) *httpColumns {
	return &httpColumns{make([]*float64, n), make([]*float64, n), make([]*float64, n), make([]*float64, n), make([]*float64, n)}
}

func (c *httpColumns) set(i int, t meshgraph.Traffic) {
	if t.Protocol() != meshgraph.HTTP {
		return
	}
	c.rps[i] = ptr(t.RequestsPerSecond)
	c.errors[i] = ptr(t.ByClass[5])
	if s, ok := t.SuccessRate(); ok {
		c.success[i] = ptr(s)
	}
	if q, ok := t.Latency.Quantile(0.5); ok {
		c.p50[i] = ptr(q)
	}
	if q, ok := t.Latency.Quantile(0.99); ok {
		c.p99[i] = ptr(q)
	}
}

func (c *httpColumns) fields() []*data.Field {
	return []*data.Field{
		data.NewField("detail__requests_per_second", nil, c.rps).SetConfig(unit("reqps", "Requests")),
		data.NewField("detail__success_rate", nil, c.success).SetConfig(unit("percentunit", "Success rate (not 5xx)")),
		data.NewField("detail__errors_per_second", nil, c.errors).SetConfig(unit("reqps", "5xx")),
		data.NewField("detail__latency_p50", nil, c.p50).SetConfig(unit("ms", "Latency p50")),
		data.NewField("detail__latency_p99", nil, c.p99).SetConfig(unit("ms", "Latency p99")),
	}
}

// tcpColumns are the connection statistics of nodes or edges.
type tcpColumns struct {
	cps, active, sent, received []float64
}

func newTCPColumns(n int) *tcpColumns {
	return &tcpColumns{make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)}
}

func (c *tcpColumns) set(i int, t meshgraph.Traffic) {
	c.cps[i] = t.ConnectionsPerSecond
	c.active[i] = t.ActiveConnections
	c.sent[i] = t.SentBytesPerSecond
	c.received[i] = t.ReceivedBytesPerSecond
}

// fields are the columns; the bytes the callers sent and received are
// named as the node (in, out) or the edge (sent, received) sees them.
func (c *tcpColumns) fields(node bool) []*data.Field {
	sent, received := data.NewField("detail__bytes_sent_per_second", nil, c.sent).SetConfig(unit("Bps", "Bytes sent")),
		data.NewField("detail__bytes_received_per_second", nil, c.received).SetConfig(unit("Bps", "Bytes received"))
	if node {
		sent, received = data.NewField("detail__bytes_in_per_second", nil, c.sent).SetConfig(unit("Bps", "Bytes in")),
			data.NewField("detail__bytes_out_per_second", nil, c.received).SetConfig(unit("Bps", "Bytes out"))
	}
	return []*data.Field{
		data.NewField("detail__connections_per_second", nil, c.cps).SetConfig(unit("cps", "New connections")),
		data.NewField("detail__active_connections", nil, c.active).SetConfig(unit("none", "Open connections")),
		sent, received,
	}
}

func ptr(v float64) *float64 { return &v }

func bytesPerSecond(t meshgraph.Traffic) float64 {
	return t.SentBytesPerSecond + t.ReceivedBytesPerSecond
}

// scale maps v in [0, max] to a thickness.
func scale(v, max float64) float64 {
	if max <= 0 {
		return thinEdge
	}
	return thinEdge + (thickEdge-thinEdge)*v/max
}

// stats are the texts shown in a node or beside an edge: requests and
// success for HTTP, bytes and open connections for TCP.
func stats(t meshgraph.Traffic) (main, secondary string) {
	switch t.Protocol() {
	case meshgraph.HTTP:
		main = formatRate(t.RequestsPerSecond) + " req/s"
		if s, ok := t.SuccessRate(); ok {
			secondary = fmt.Sprintf("%.1f%% success", 100*s)
		}
	case meshgraph.TCP:
		main = formatBytes(bytesPerSecond(t)) + "/s"
		secondary = fmt.Sprintf("%.0f connections", t.ActiveConnections)
	}
	return main, secondary
}

func nodeSubtitle(n meshgraph.Node) string {
	switch {
	case !n.InMesh:
		return "outside the mesh"
	case n.Total == 0:
		return "no dataplanes"
	}
	return fmt.Sprintf("%d/%d dataplanes online", n.Online, n.Total)
}

// formatRate renders a rate with three significant digits at most.
func formatRate(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// formatBytes renders a byte count in binary units.
func formatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
	return formatRate(v) + " " + units[i]
}
