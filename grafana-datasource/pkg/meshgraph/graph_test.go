package meshgraph

import (
	"fmt"
	"math"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// series builds the samples of a query: caller, cluster, then label pairs.
func series(src, cluster string, v float64, kv ...string) Sample {
	l := map[string]string{LabelSource: src, LabelCluster: cluster}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return Sample{Labels: l, Value: v}
}

// httpEdge is what Prometheus answers for an HTTP edge carrying rps
// requests per second, a share fail5xx of them 5xx, every one in (1, 5] ms.
func httpEdge(results map[Metric][]Sample, src, cluster string, rps, fail5xx float64) {
	add := func(m Metric, s Sample) { results[m] = append(results[m], s) }
	add(Requests, series(src, cluster, rps))
	add(RequestsByClass, series(src, cluster, rps*(1-fail5xx), LabelClass, "2"))
	add(RequestsByClass, series(src, cluster, rps*fail5xx, LabelClass, "5"))
	for _, le := range []string{"0.5", "1"} {
		add(LatencyBuckets, series(src, cluster, 0, LabelLe, le))
	}
	for _, le := range []string{"5", "10", "+Inf"} {
		add(LatencyBuckets, series(src, cluster, rps, LabelLe, le))
	}
	add(Connections, series(src, cluster, 0.1))
	add(ActiveConnections, series(src, cluster, 2))
	add(SentBytes, series(src, cluster, rps*100))
	add(ReceivedBytes, series(src, cluster, rps*1000))
	add(Handshakes, series(src, cluster, 0))
}

// tcpEdge is a TCP edge: connections and bytes, requests counted at 0.
func tcpEdge(results map[Metric][]Sample, src, cluster string, cps, bytes float64) {
	add := func(m Metric, s Sample) { results[m] = append(results[m], s) }
	add(Requests, series(src, cluster, 0))
	add(Connections, series(src, cluster, cps))
	add(ActiveConnections, series(src, cluster, 3))
	add(SentBytes, series(src, cluster, bytes))
	add(ReceivedBytes, series(src, cluster, bytes/2))
}

func ids[T any](xs []T, id func(T) string) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, id(x))
	}
	return out
}

func nodeIDs(g Graph) []string { return ids(g.Nodes, func(n Node) string { return n.ID }) }
func edgeIDs(g Graph) []string { return ids(g.Edges, func(e Edge) string { return e.ID }) }

func nodeOf(t *testing.T, g Graph, id string) Node {
	t.Helper()
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("no node %q in %v", id, nodeIDs(g))
	return Node{}
}

func edgeOf(t *testing.T, g Graph, id string) Edge {
	t.Helper()
	for _, e := range g.Edges {
		if e.ID == id {
			return e
		}
	}
	t.Fatalf("no edge %q in %v", id, edgeIDs(g))
	return Edge{}
}

// TestDemo is the demo's mesh: traffic → frontend → backend (two
// dataplanes), 20 req/s, the backends failing 20%, the frontend answering
// 502 for each failure.
func TestDemo(t *testing.T) {
	r := map[Metric][]Sample{}
	httpEdge(r, "traffic", "frontend", 20, 0.2)
	httpEdge(r, "frontend", "backend", 20, 0.2)
	g := Compute(Input{Results: r, Services: []Service{
		{Name: "backend", Online: 2, Total: 2},
		{Name: "frontend", Online: 1, Total: 1},
		{Name: "traffic", Online: 1, Total: 1},
	}})
	require.Equal(t, []string{"backend", "frontend", "traffic"}, nodeIDs(g))
	require.Equal(t, []string{"frontend->backend", "traffic->frontend"}, edgeIDs(g))

	e := edgeOf(t, g, "frontend->backend")
	require.Equal(t, "frontend", e.Source)
	require.Equal(t, "backend", e.Target)
	require.Equal(t, HTTP, e.Traffic.Protocol())
	require.InDelta(t, 20, e.Traffic.RequestsPerSecond, 1e-9)
	ok, has := e.Traffic.SuccessRate()
	require.True(t, has)
	require.InDelta(t, 0.8, ok, 1e-9)
	require.False(t, e.MTLS)
	require.False(t, e.OutsideMesh)

	b := nodeOf(t, g, "backend")
	require.True(t, b.InMesh)
	require.Equal(t, StatusOnline, b.Status)
	require.Equal(t, [3]int{2, 0, 2}, [3]int{b.Online, b.Offline, b.Total})
	require.InDelta(t, 20, b.In.RequestsPerSecond, 1e-9)
	arcs := b.In.Arcs()
	require.InDeltaSlice(t, []float64{0.8, 0, 0, 0.2}, arcs[:], 1e-9)
	p50, ok50 := b.In.Latency.Quantile(0.5)
	require.True(t, ok50)
	require.InDelta(t, 3, p50, 1e-9) // (1, 5] ms, interpolated

	// The traffic generator calls but is not called.
	tr := nodeOf(t, g, "traffic")
	require.Equal(t, None, tr.In.Protocol())
	_, has = tr.In.SuccessRate()
	require.False(t, has)
	require.Equal(t, [4]float64{}, tr.In.Arcs())
}

func TestServicesWithoutTraffic(t *testing.T) {
	r := map[Metric][]Sample{}
	httpEdge(r, "web", "api", 5, 0)
	// A series without traffic in the window is no edge.
	r[Requests] = append(r[Requests], series("web", "idle", 0))
	r[Connections] = append(r[Connections], series("web", "idle", 0))
	r[ActiveConnections] = append(r[ActiveConnections], series("web", "idle", 1))
	g := Compute(Input{Results: r, Services: []Service{
		{Name: "web", Online: 1, Total: 1},
		{Name: "api", Online: 1, Total: 2},
		{Name: "idle", Online: 0, Offline: 3, Total: 3},
	}})
	require.Equal(t, []string{"api", "idle", "web"}, nodeIDs(g))
	require.Equal(t, []string{"web->api"}, edgeIDs(g))
	idle := nodeOf(t, g, "idle")
	require.True(t, idle.InMesh)
	require.Equal(t, StatusOffline, idle.Status)
	require.Equal(t, 3, idle.Offline)
	require.Equal(t, StatusPartiallyDegraded, nodeOf(t, g, "api").Status)
}

func TestTCP(t *testing.T) {
	r := map[Metric][]Sample{}
	tcpEdge(r, "app", "postgres", 0.5, 4096)
	g := Compute(Input{Results: r, Services: []Service{{Name: "app", Online: 1, Total: 1}, {Name: "postgres", Online: 1, Total: 1}}})
	e := edgeOf(t, g, "app->postgres")
	require.Equal(t, TCP, e.Traffic.Protocol())
	require.InDelta(t, 0.5, e.Traffic.ConnectionsPerSecond, 1e-9)
	require.InDelta(t, 3, e.Traffic.ActiveConnections, 1e-9)
	require.InDelta(t, 4096, e.Traffic.SentBytesPerSecond, 1e-9)
	require.InDelta(t, 2048, e.Traffic.ReceivedBytesPerSecond, 1e-9)
	_, has := e.Traffic.SuccessRate()
	require.False(t, has)
	pg := nodeOf(t, g, "postgres")
	require.Equal(t, TCP, pg.In.Protocol())
	require.Equal(t, [4]float64{}, pg.In.Arcs())
}

func TestOutsideMesh(t *testing.T) {
	r := map[Metric][]Sample{}
	httpEdge(r, "web", "api", 1, 0)
	httpEdge(r, "web", "payments-provider", 2, 0)
	g := Compute(Input{Results: r, MeshMTLS: true, Services: []Service{{Name: "web", Online: 1, Total: 1}, {Name: "api", Online: 1, Total: 1}}})
	ext := nodeOf(t, g, "payments-provider")
	require.False(t, ext.InMesh)
	require.Equal(t, "", ext.Status)
	e := edgeOf(t, g, "web->payments-provider")
	require.True(t, e.OutsideMesh)
	require.False(t, e.MTLS, "the mesh's mTLS does not reach outside the mesh")
	in := edgeOf(t, g, "web->api")
	require.False(t, in.OutsideMesh)
	require.True(t, in.MTLS, "the mesh has mTLS on")
}

func TestMTLSFromHandshakes(t *testing.T) {
	r := map[Metric][]Sample{}
	httpEdge(r, "web", "api", 1, 0)
	httpEdge(r, "web", "db", 1, 0)
	r[Handshakes] = []Sample{series("web", "api", 3), series("web", "db", 0)}
	g := Compute(Input{Results: r, Services: []Service{{Name: "web"}, {Name: "api"}, {Name: "db"}}})
	require.True(t, edgeOf(t, g, "web->api").MTLS)
	require.False(t, edgeOf(t, g, "web->db").MTLS)
}

// A service whose name has characters the proxies replace in cluster names
// is matched through its cluster name.
func TestClusterNames(t *testing.T) {
	require.Equal(t, "backend_default_svc_8080", ClusterName("backend.default.svc:8080"))
	require.Equal(t, "a-b_c__", ClusterName("a-b_c/é"))
	r := map[Metric][]Sample{}
	httpEdge(r, "web", "api_v1", 1, 0)
	g := Compute(Input{Results: r, Services: []Service{{Name: "web"}, {Name: "api.v1", Online: 1, Total: 1}}})
	require.Equal(t, []string{"api.v1", "web"}, nodeIDs(g))
	e := edgeOf(t, g, "web->api.v1")
	require.False(t, e.OutsideMesh)
}

func TestRollup(t *testing.T) {
	re, err := CompileRollup(DefaultRollup)
	require.NoError(t, err)
	r := map[Metric][]Sample{}
	httpEdge(r, "web_ns_svc_80", "backend_ns_svc_8080", 10, 0)
	httpEdge(r, "web_ns_svc_80", "backend_ns_svc_9090", 5, 1)
	httpEdge(r, "web_ns_svc_81", "backend_ns_svc_9090", 1, 0)
	g := Compute(Input{Rollup: re, Results: r, Services: []Service{
		{Name: "web_ns_svc_80", Online: 1, Total: 1},
		{Name: "web_ns_svc_81", Online: 1, Total: 1},
		{Name: "backend_ns_svc_8080", Online: 2, Total: 2},
		{Name: "backend_ns_svc_9090", Online: 1, Offline: 1, Total: 2},
	}})
	require.Equal(t, []string{"backend_ns", "web_ns"}, nodeIDs(g))
	require.Equal(t, []string{"web_ns->backend_ns"}, edgeIDs(g))
	e := edgeOf(t, g, "web_ns->backend_ns")
	require.InDelta(t, 16, e.Traffic.RequestsPerSecond, 1e-9)
	require.InDelta(t, 5, e.Traffic.ByClass[5], 1e-9)
	b := nodeOf(t, g, "backend_ns")
	require.Equal(t, [3]int{3, 1, 4}, [3]int{b.Online, b.Offline, b.Total})
	require.Equal(t, StatusPartiallyDegraded, b.Status)
	// The merged histogram holds every request.
	require.InDelta(t, 16, b.In.Latency[len(b.In.Latency)-1].Count, 1e-9)

	// Without roll-up every port is its own node.
	g = Compute(Input{Results: r})
	require.Equal(t, []string{"backend_ns_svc_8080", "backend_ns_svc_9090", "web_ns_svc_80", "web_ns_svc_81"}, nodeIDs(g))
}

func TestRollupNames(t *testing.T) {
	re, err := CompileRollup(DefaultRollup)
	require.NoError(t, err)
	for name, want := range map[string]string{
		"backend_kuma-demo_svc_3001": "backend_kuma-demo",
		"backend_kuma-demo_svc":      "backend_kuma-demo",
		"backend":                    "backend",
		"_svc_80":                    "_svc_80", // an empty group keeps the name
		"my_svc_x":                   "my_svc_x",
	} {
		require.Equal(t, want, Rollup(re, name), name)
	}
	// Anchored: a match inside the name is not enough.
	re, err = CompileRollup(`a|(ab)`)
	require.NoError(t, err)
	require.Equal(t, "ab", Rollup(re, "ab"))
	require.Equal(t, "xab", Rollup(re, "xab"))
	require.Equal(t, "x", Rollup(nil, "x"))

	re, err = CompileRollup("")
	require.NoError(t, err)
	require.Nil(t, re)
	_, err = CompileRollup("(")
	require.ErrorContains(t, err, "invalid regular expression")
	_, err = CompileRollup(".*_svc")
	require.ErrorContains(t, err, "no capture group")
}

func TestBadSeries(t *testing.T) {
	r := map[Metric][]Sample{
		Requests: {
			{Labels: map[string]string{LabelCluster: "api"}, Value: 1}, // no caller
			{Labels: map[string]string{LabelSource: "web"}, Value: 1},  // no cluster
			series("web", "api", math.NaN()),
			series("web", "api", math.Inf(1)),
		},
		RequestsByClass: {series("web", "api", 1, LabelClass, "9"), series("web", "api", 1, LabelClass, "x")},
		LatencyBuckets:  {series("web", "api", 1, LabelLe, "abc")},
	}
	g := Compute(Input{Results: r})
	require.Empty(t, g.Nodes)
	require.Empty(t, g.Edges)
}

func TestRollupRegexpIsAnchoredOnce(t *testing.T) {
	// An alternation must not escape the anchors.
	re, err := CompileRollup(`(x)|(.*)_svc`)
	require.NoError(t, err)
	require.Equal(t, "x", Rollup(re, "x"))
	require.Equal(t, "ax", Rollup(re, "ax"))
	require.IsType(t, &regexp.Regexp{}, re)
}

// BenchmarkCompute is a mesh of 50 services, each calling 4 others over
// HTTP, with Envoy's 20 latency buckets per edge.
func BenchmarkCompute(b *testing.B) {
	les := []string{"0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000", "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf"}
	r := map[Metric][]Sample{}
	var services []Service
	for i := range 50 {
		src := fmt.Sprintf("svc-%d", i)
		services = append(services, Service{Name: src, Online: 1, Total: 1})
		for j := 1; j <= 4; j++ {
			dst := fmt.Sprintf("svc-%d", (i+j)%50)
			r[Requests] = append(r[Requests], series(src, dst, 10))
			r[RequestsByClass] = append(r[RequestsByClass], series(src, dst, 9, LabelClass, "2"), series(src, dst, 1, LabelClass, "5"))
			for k, le := range les {
				r[LatencyBuckets] = append(r[LatencyBuckets], series(src, dst, float64(k), LabelLe, le))
			}
		}
	}
	in := Input{Results: r, Services: services}
	b.ReportAllocs()
	for b.Loop() {
		Compute(in)
	}
}
