package meshgraph

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Sample is one series of an instant query's answer.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Service is a service of the mesh as the control plane's service insights
// know it: its dataplanes online, offline and in total (a node's status is
// computed from them, after roll-up).
type Service struct {
	Name                   string
	Online, Offline, Total int
}

// Service statuses, as the control plane's service insights say them.
const (
	StatusOnline            = "online"
	StatusOffline           = "offline"
	StatusPartiallyDegraded = "partially_degraded"
)

// DefaultRollup folds the ports of a Kubernetes service
// (backend_kuma-demo_svc_3001, backend_kuma-demo_svc_3002) into one node
// (backend_kuma-demo).
const DefaultRollup = `(.*)(_svc(_[0-9]+)?)`

// Input is everything a graph is computed from.
type Input struct {
	// Results are the answers to Queries, by metric; a missing metric is
	// an empty answer.
	Results map[Metric][]Sample
	// Services are the mesh's services (service insights): each is a node,
	// also without traffic.
	Services []Service
	// MeshMTLS tells whether the mesh has mTLS on: then every edge to a
	// service of the mesh is mTLS.
	MeshMTLS bool
	// Rollup, when not nil, renames a service that it matches whole to its
	// first capture group; see DefaultRollup.
	Rollup *regexp.Regexp
}

// Protocol is what an edge or node carries.
type Protocol string

// Protocols.
const (
	HTTP Protocol = "http" // requests (HTTP/1.1, HTTP/2, gRPC)
	TCP  Protocol = "tcp"  // connections and bytes only
	None Protocol = ""     // no traffic in the window
)

// Traffic is what flowed over an edge, or into a node, during the window.
type Traffic struct {
	// RequestsPerSecond counts every request (upstream_rq_total).
	RequestsPerSecond float64
	// ByClass are the responses per second by status class: index 1 is
	// 1xx … index 5 is 5xx.
	ByClass [6]float64
	// Latency is the request time histogram (ms), per second.
	Latency Histogram
	// ConnectionsPerSecond counts new upstream connections.
	ConnectionsPerSecond float64
	// ActiveConnections are open at the end of the window.
	ActiveConnections float64
	// SentBytesPerSecond and ReceivedBytesPerSecond are seen from the caller.
	SentBytesPerSecond, ReceivedBytesPerSecond float64
	// Handshakes are TLS handshakes within the window.
	Handshakes float64
}

// Protocol is HTTP when requests flowed, TCP when only connections or bytes
// did, and None otherwise.
func (t Traffic) Protocol() Protocol {
	switch {
	case t.RequestsPerSecond > 0:
		return HTTP
	case t.ConnectionsPerSecond > 0 || t.SentBytesPerSecond > 0 || t.ReceivedBytesPerSecond > 0:
		return TCP
	}
	return None
}

// Responses is the rate of responses with a status (every class).
func (t Traffic) Responses() float64 {
	var n float64
	for _, v := range t.ByClass[1:] {
		n += v
	}
	return n
}

// SuccessRate is the share of responses that are not 5xx; false when there
// were none.
func (t Traffic) SuccessRate() (float64, bool) {
	n := t.Responses()
	if n <= 0 {
		return 0, false
	}
	return (n - t.ByClass[5]) / n, true
}

// Arcs are the shares of the final responses (2xx…5xx) by class, summing to
// 1, for the node graph's arcs; all zero when there were none.
func (t Traffic) Arcs() [4]float64 {
	var arcs [4]float64
	total := t.ByClass[2] + t.ByClass[3] + t.ByClass[4] + t.ByClass[5]
	if total <= 0 {
		return arcs
	}
	for i := range arcs {
		arcs[i] = t.ByClass[i+2] / total
	}
	return arcs
}

func (t *Traffic) add(o Traffic) {
	t.RequestsPerSecond += o.RequestsPerSecond
	for i := range t.ByClass {
		t.ByClass[i] += o.ByClass[i]
	}
	t.Latency = t.Latency.merge(o.Latency)
	t.ConnectionsPerSecond += o.ConnectionsPerSecond
	t.ActiveConnections += o.ActiveConnections
	t.SentBytesPerSecond += o.SentBytesPerSecond
	t.ReceivedBytesPerSecond += o.ReceivedBytesPerSecond
	t.Handshakes += o.Handshakes
}

// Node is a service.
type Node struct {
	// ID is the service's name after roll-up: the node's id and title.
	ID string
	// InMesh tells whether the control plane knows the service (it has
	// dataplanes) or callers in the mesh send to it (it is a caller
	// itself); false for an upstream cluster no service of the mesh is
	// named after: a service outside the mesh.
	InMesh bool
	// Status and the dataplane counts are the service insights' (summed
	// over the services rolled into the node); Status is "" when the
	// control plane knows no dataplane of it.
	Status                 string
	Online, Offline, Total int
	// In is the traffic the node received from the mesh's callers.
	In Traffic
}

// Edge is the traffic from one service to another.
type Edge struct {
	// ID is Source + "->" + Target.
	ID, Source, Target string
	// MTLS tells whether the traffic is mutual TLS: the mesh has mTLS on
	// and the target is in the mesh, or handshakes were counted.
	MTLS bool
	// OutsideMesh is true when the target is outside the mesh.
	OutsideMesh bool
	Traffic     Traffic
}

// Graph is the mesh's graph, nodes and edges sorted by ID.
type Graph struct {
	Nodes []Node
	Edges []Edge
}

// edgeKey is an edge before its target is resolved: the caller (rolled up)
// and the upstream cluster.
type edgeKey struct{ source, cluster string }

// Compute computes the graph. Series without a caller or a cluster label
// are ignored (nothing in the mesh scraped them), and so are edges without
// traffic in the window (no requests, connections or bytes).
func Compute(in Input) Graph {
	rollup := func(name string) string { return Rollup(in.Rollup, name) }
	traffic := map[edgeKey]*Traffic{}
	at := func(s Sample) *Traffic {
		src, cluster := s.Labels[LabelSource], s.Labels[LabelCluster]
		if src == "" || cluster == "" || math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			return nil
		}
		k := edgeKey{rollup(src), cluster}
		t := traffic[k]
		if t == nil {
			t = &Traffic{}
			traffic[k] = t
		}
		return t
	}
	add := func(m Metric, f func(t *Traffic, s Sample)) {
		for _, s := range in.Results[m] {
			if t := at(s); t != nil {
				f(t, s)
			}
		}
	}
	add(RequestsByClass, func(t *Traffic, s Sample) {
		if c, err := strconv.Atoi(s.Labels[LabelClass]); err == nil && c >= 1 && c <= 5 {
			t.ByClass[c] += s.Value
		}
	})
	add(Requests, func(t *Traffic, s Sample) { t.RequestsPerSecond += s.Value })
	add(LatencyBuckets, func(t *Traffic, s Sample) {
		if le, err := strconv.ParseFloat(s.Labels[LabelLe], 64); err == nil {
			t.Latency = append(t.Latency, Bucket{UpperBound: le, Count: s.Value})
		}
	})
	add(Connections, func(t *Traffic, s Sample) { t.ConnectionsPerSecond += s.Value })
	add(ActiveConnections, func(t *Traffic, s Sample) { t.ActiveConnections += s.Value })
	add(SentBytes, func(t *Traffic, s Sample) { t.SentBytesPerSecond += s.Value })
	add(ReceivedBytes, func(t *Traffic, s Sample) { t.ReceivedBytesPerSecond += s.Value })
	add(Handshakes, func(t *Traffic, s Sample) { t.Handshakes += s.Value })
	// The buckets came as the answer listed them: sort them by upper bound,
	// summing those of callers rolled into one, once per edge.
	for _, t := range traffic {
		t.Latency = Histogram(nil).merge(t.Latency)
	}

	nodes := map[string]*Node{}
	node := func(id string) *Node {
		n := nodes[id]
		if n == nil {
			n = &Node{ID: id}
			nodes[id] = n
		}
		return n
	}
	// The mesh's services, and the cluster names their callers use.
	byCluster := map[string]string{}
	for _, s := range in.Services {
		n := node(rollup(s.Name))
		n.InMesh = true
		n.Online += s.Online
		n.Offline += s.Offline
		n.Total += s.Total
		byCluster[ClusterName(s.Name)] = n.ID
	}
	for _, n := range nodes {
		n.Status = status(n.Online, n.Total)
	}

	edges := map[string]*Edge{}
	for k, t := range traffic {
		if t.Protocol() == None {
			continue
		}
		target, inMesh := byCluster[k.cluster]
		if !inMesh {
			target = rollup(k.cluster)
		}
		src := node(k.source)
		src.InMesh = true // its proxies were scraped with the mesh's label
		dst := node(target)
		dst.InMesh = dst.InMesh || inMesh
		dst.In.add(*t)
		id := k.source + "->" + target
		e := edges[id]
		if e == nil {
			e = &Edge{ID: id, Source: k.source, Target: target}
			edges[id] = e
		}
		e.Traffic.add(*t)
	}
	g := Graph{Nodes: make([]Node, 0, len(nodes)), Edges: make([]Edge, 0, len(edges))}
	for _, n := range nodes {
		g.Nodes = append(g.Nodes, *n)
	}
	for _, e := range edges {
		dst := nodes[e.Target]
		e.OutsideMesh = !dst.InMesh
		e.MTLS = e.Traffic.Handshakes > 0 || (in.MeshMTLS && dst.InMesh)
		g.Edges = append(g.Edges, *e)
	}
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].ID < g.Nodes[j].ID })
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g
}

// status is a service's status from its dataplanes: "" without any.
func status(online, total int) string {
	switch {
	case total == 0:
		return ""
	case online == total:
		return StatusOnline
	case online == 0:
		return StatusOffline
	}
	return StatusPartiallyDegraded
}

// CompileRollup compiles a roll-up expression (an RE2 regular expression
// with at least one capture group) to match service names whole; "" is no
// roll-up (nil).
func CompileRollup(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	if re.NumSubexp() < 1 {
		return nil, fmt.Errorf("%q has no capture group: its first group is the node's name", expr)
	}
	return re, nil
}

// Rollup is name after roll-up: the first capture group of re (from
// CompileRollup) when re matches name and the group is not empty, name
// otherwise (and when re is nil).
func Rollup(re *regexp.Regexp, name string) string {
	if re == nil {
		return name
	}
	m := re.FindStringSubmatchIndex(name)
	if m == nil || m[2] < 0 || m[2] == m[3] {
		return name
	}
	return name[m[2]:m[3]]
}

// ClusterName is the name of the outbound cluster of a service, as the
// proxies name it: every character outside [a-zA-Z0-9_-] becomes '_'.
func ClusterName(service string) string {
	var b strings.Builder
	b.Grow(len(service))
	for _, c := range service {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
