package promsd

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

// Labels set on every group from the assignment and its target. They win
// over the target's and the assignment's own labels.
const (
	LabelScheme      = "__scheme__"
	LabelMetricsPath = "__metrics_path__"
	LabelJob         = "job"
	LabelInstance    = "instance"
	LabelMesh        = "mesh"
	LabelService     = "service"
	LabelDataplane   = "dataplane"
)

// TargetGroup is one entry of a Prometheus file_sd file.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// SanitizeLabelName turns name into a valid Prometheus label name: every
// character outside [a-zA-Z0-9_] becomes '_', and a leading digit gets a '_'
// prefix. The empty name stays empty.
func SanitizeLabelName(name string) string {
	var b strings.Builder
	b.Grow(len(name) + 1)
	for i, r := range name {
		switch {
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Convert turns monitoring assignments into file_sd target groups, one group
// per target. Labels, lowest precedence first: the target's labels, the
// assignment's labels, then __scheme__, __metrics_path__, job (the
// assignment's service), instance (the target's name), mesh, service and
// dataplane. Label names are sanitized; labels of the first two kinds whose
// sanitized name is empty or starts with "__" (reserved by Prometheus) are
// dropped, and so is every label with an empty value, which Prometheus would
// treat as unset anyway. Targets without an address are skipped. The result
// is sorted by mesh, dataplane name and address (then by the remaining
// content), so equal input in any order gives equal output.
func Convert(assignments []*observabilityv1.MonitoringAssignment) []TargetGroup {
	groups := make([]TargetGroup, 0, len(assignments))
	for _, a := range assignments {
		for _, t := range a.GetTargets() {
			if t.GetAddress() == "" {
				continue
			}
			labels := make(map[string]string, len(t.GetLabels())+len(a.GetLabels())+7)
			addUserLabels(labels, t.GetLabels())
			addUserLabels(labels, a.GetLabels())
			labels[LabelScheme] = t.GetScheme()
			labels[LabelMetricsPath] = t.GetMetricsPath()
			labels[LabelJob] = a.GetService()
			labels[LabelInstance] = t.GetName()
			labels[LabelMesh] = a.GetMesh()
			labels[LabelService] = a.GetService()
			labels[LabelDataplane] = t.GetName()
			for k, v := range labels {
				if v == "" {
					delete(labels, k)
				}
			}
			groups = append(groups, TargetGroup{Targets: []string{t.GetAddress()}, Labels: labels})
		}
	}
	slices.SortFunc(groups, compareGroups)
	return groups
}

// addUserLabels copies src into dst with sanitized names. Two names that
// sanitize alike (kuma.io/zone, kuma_io/zone) keep the value of the smaller
// original name, so the outcome does not depend on map order.
func addUserLabels(dst, src map[string]string) {
	keys := make([]string, 0, len(src))
	for k := range src {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		name := SanitizeLabelName(k)
		if name == "" || strings.HasPrefix(name, "__") || seen[name] {
			continue
		}
		seen[name] = true
		dst[name] = src[k]
	}
}

func compareGroups(a, b TargetGroup) int {
	if c := cmp.Compare(a.Labels[LabelMesh], b.Labels[LabelMesh]); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Labels[LabelDataplane], b.Labels[LabelDataplane]); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Targets[0], b.Targets[0]); c != 0 {
		return c
	}
	return cmp.Compare(canonicalLabels(a.Labels), canonicalLabels(b.Labels))
}

// canonicalLabels is a total, order-independent encoding of labels, used only
// to break ties between otherwise equal groups.
func canonicalLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	return b.String()
}

// Render returns the file_sd JSON of assignments: Convert's groups, indented,
// with sorted keys and a final newline. No assignments give "[]\n".
func Render(assignments []*observabilityv1.MonitoringAssignment) ([]byte, error) {
	return encodeGroups(Convert(assignments))
}

func encodeGroups(groups []TargetGroup) ([]byte, error) {
	if groups == nil {
		groups = []TargetGroup{}
	}
	data, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding file_sd JSON: %w", err)
	}
	return append(data, '\n'), nil
}
