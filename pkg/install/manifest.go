package install

import (
	"bytes"
	"fmt"
	"sort"

	yamlv2 "go.yaml.in/yaml/v2"
)

// kindOrder is the order of the manifests: each kind after those it needs.
var kindOrder = map[string]int{
	"Namespace":                      0,
	"CustomResourceDefinition":       1,
	"ServiceAccount":                 2,
	"ClusterRole":                    3,
	"ClusterRoleBinding":             4,
	"Role":                           5,
	"RoleBinding":                    6,
	"Secret":                         7,
	"ConfigMap":                      8,
	"PersistentVolumeClaim":          9,
	"Service":                        10,
	"Deployment":                     11,
	"ValidatingWebhookConfiguration": 12,
	"MutatingWebhookConfiguration":   13,
}

// manifest is one rendered object.
type manifest struct {
	kind, name string
	// yaml is the object, normalized: keys in the template's order, one
	// formatting, multi-line strings as literal blocks.
	yaml []byte
}

// splitManifests parses the YAML documents a template rendered (a document
// that renders empty is skipped) and normalizes each.
func splitManifests(source string, out []byte) ([]manifest, error) {
	var ms []manifest
	for i, doc := range splitDocuments(out) {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var obj yamlv2.MapSlice
		if err := yamlv2.UnmarshalStrict(doc, &obj); err != nil {
			return nil, fmt.Errorf("install: %s renders document %d that is not valid YAML: %w", source, i+1, err)
		}
		kind, _ := lookup(obj, "kind").(string)
		meta, _ := lookup(obj, "metadata").(yamlv2.MapSlice)
		name, _ := lookup(meta, "name").(string)
		if _, ok := kindOrder[kind]; !ok || name == "" {
			return nil, fmt.Errorf("install: %s renders document %d with unexpected kind %q or empty name", source, i+1, kind)
		}
		y, err := yamlv2.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("install: %s %s/%s: %w", source, kind, name, err)
		}
		ms = append(ms, manifest{kind: kind, name: name, yaml: y})
	}
	return ms, nil
}

// joinManifests sorts the objects by kind and name and separates them with
// "---" lines.
func joinManifests(ms []manifest) []byte {
	sort.SliceStable(ms, func(i, j int) bool {
		if ki, kj := kindOrder[ms[i].kind], kindOrder[ms[j].kind]; ki != kj {
			return ki < kj
		}
		return ms[i].name < ms[j].name
	})
	var buf bytes.Buffer
	for i, m := range ms {
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(m.yaml)
	}
	return buf.Bytes()
}

// splitDocuments splits YAML at "---" lines. The templates put every
// multi-line value in one quoted line, so no such line is inside a value.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if string(bytes.TrimRight(line, " \r\n")) == "---" {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}

// stripComments drops the comment lines of a document.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] == '#' {
			continue
		}
		out = append(out, line...)
	}
	return out
}

func lookup(m yamlv2.MapSlice, key string) any {
	for _, item := range m {
		if k, ok := item.Key.(string); ok && k == key {
			return item.Value
		}
	}
	return nil
}

// checkYAML checks that b is one YAML document without duplicate keys.
func checkYAML(b []byte) error {
	var v any
	return yamlv2.UnmarshalStrict(b, &v)
}
