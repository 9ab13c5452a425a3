// Package mads is the monitoring assignment discovery service: it derives
// one MonitoringAssignment per dataplane of every mesh with metrics enabled
// (a pure function of the store's content) and serves them to Prometheus
// over HTTP long-polling (kuma_sd_configs), Prometheus' http_sd, and the xDS
// gRPC streams that kuma-prometheus-sd uses, on one port. It may require
// TLS, client certificates of a CA and user tokens of the control plane.
package mads

import (
	"net"
	"slices"
	"strconv"
	"strings"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/xds"
)

// TypeURL of a MonitoringAssignment.
const TypeURL = "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"

// Assignment is one dataplane's monitoring assignment and its name in snapshots.
type Assignment struct {
	Name string
	*observabilityv1.MonitoringAssignment
}

// ResourceName names a dataplane's assignment: "<mesh>/<dataplane>".
func ResourceName(mesh, dataplane string) string { return mesh + "/" + dataplane }

// Assignments returns one assignment per dataplane whose mesh has an enabled
// prometheus metrics backend, sorted by mesh, then dataplane name. meshes and
// dataplanes may come in any order; dataplanes of unknown meshes are skipped.
func Assignments(meshes, dataplanes []*resource.Object) []Assignment {
	byName := make(map[string]*resource.MeshSpec, len(meshes))
	for _, m := range meshes {
		if spec := m.Mesh(); spec != nil {
			byName[m.Meta.Name] = spec
		}
	}
	out := make([]Assignment, 0, len(dataplanes))
	for _, dp := range dataplanes {
		mesh, spec := byName[dp.Meta.Mesh], dp.Dataplane()
		if mesh == nil || spec == nil {
			continue
		}
		if a := assignment(dp.Meta, mesh, spec); a != nil {
			out = append(out, Assignment{Name: ResourceName(dp.Meta.Mesh, dp.Meta.Name), MonitoringAssignment: a})
		}
	}
	slices.SortFunc(out, func(a, b Assignment) int {
		if c := strings.Compare(a.Mesh, b.Mesh); c != 0 {
			return c
		}
		return strings.Compare(a.Targets[0].Name, b.Targets[0].Name)
	})
	return out
}

func assignment(meta resource.Meta, mesh *resource.MeshSpec, dp *resource.DataplaneSpec) *observabilityv1.MonitoringAssignment {
	meshName, name := meta.Mesh, meta.Name
	if mesh == nil || dp == nil {
		return nil
	}
	eff := resource.EffectiveMetricsConfig(mesh, dp)
	if eff == nil || dp.Networking == nil {
		return nil
	}
	host := dp.Networking.AdvertisedAddress
	if host == "" {
		host = dp.Networking.Address
	}
	if host == "" {
		return nil
	}
	tags := dp.TagValues()
	service := ""
	if vs := tags[resource.ServiceTag]; len(vs) > 0 {
		service = vs[0]
	}
	return &observabilityv1.MonitoringAssignment{
		Mesh:    meshName,
		Service: service,
		Targets: []*observabilityv1.MonitoringAssignment_Target{{
			Name:        name,
			Scheme:      Scheme(mesh, eff),
			Address:     net.JoinHostPort(host, strconv.FormatUint(uint64(eff.Port), 10)),
			MetricsPath: eff.Path,
			Labels:      withKubernetesLabels(TagLabels(tags), meta.NameExtensions),
		}},
	}
}

// Labels of the Kubernetes name and namespace of a dataplane (its Pod's),
// from the name extensions the Kubernetes store fills in (compat.md §2: no
// plural form for these two).
const (
	K8sNameLabel      = "k8s_kuma_io_name"
	K8sNamespaceLabel = "k8s_kuma_io_namespace"
)

// withKubernetesLabels adds the Kubernetes name and namespace of a
// dataplane to its target labels; they win over tags of the same name.
func withKubernetesLabels(labels, ext map[string]string) map[string]string {
	if v := ext[resource.K8sNameExtension]; v != "" {
		labels[K8sNameLabel] = v
	}
	if v := ext[resource.K8sNamespaceExtension]; v != "" {
		labels[K8sNamespaceLabel] = v
	}
	return labels
}

// Scheme is how Prometheus reaches a dataplane's metrics endpoint: https
// when the endpoint serves TLS (the operator's certificate, or the mesh's
// mTLS unless skipMTLS / tls.mode disabled), else http.
func Scheme(mesh *resource.MeshSpec, eff *resource.EffectiveMetrics) string {
	switch {
	case eff.TLSMode == resource.TLSModeProvidedTLS:
		return "https"
	case eff.TLSMode == resource.TLSModeActiveMTLSBackend && ca.Enabled(mesh) != nil:
		return "https"
	}
	return "http"
}

// TagLabels turns a dataplane's tags (key → sorted distinct values) into
// labels: sanitize(k) = first value, sanitize(k+"s") = ",v1,v2,". Keys are
// processed in sorted order, so a collision resolves the same way every time.
func TagLabels(tags map[string][]string) map[string]string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(map[string]string, 2*len(keys))
	for _, k := range keys {
		vs := tags[k]
		if len(vs) == 0 {
			continue
		}
		out[SanitizeLabelName(k)] = vs[0]
		out[SanitizeLabelName(k+"s")] = "," + strings.Join(vs, ",") + ","
	}
	return out
}

// SanitizeLabelName replaces every character outside [a-zA-Z0-9_] with '_'
// (one '_' per character, as Prometheus does).
func SanitizeLabelName(s string) string {
	clean := true
	for i := 0; i < len(s) && clean; i++ {
		c := s[i]
		clean = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Snapshot versions a set of assignments for the xDS streams.
func Snapshot(assignments []Assignment) (*xds.Snapshot, error) {
	rs := make([]xds.Resource, len(assignments))
	for i, a := range assignments {
		r, err := xds.NewResource(a.Name, a.MonitoringAssignment)
		if err != nil {
			return nil, err
		}
		rs[i] = r
	}
	return xds.NewSnapshot(TypeURL, rs)
}
