package resource

import "strings"

// KubernetesField maps a field path of the Universal form (the REST API's
// causes) to the Kubernetes form of the same resource: spec fields sit under
// `spec.`, the name under `metadata.name`, the type is the `kind`; `mesh`
// and paths already in the Kubernetes form are left alone.
func KubernetesField(field string) string {
	switch {
	case field == "":
		return ""
	case field == "name":
		return "metadata.name"
	case field == "type":
		return "kind"
	case field == "mesh", field == "apiVersion", field == "kind", field == "spec",
		strings.HasPrefix(field, "spec."), strings.HasPrefix(field, "metadata."):
		return field
	}
	return "spec." + field
}

// KubernetesCauses returns causes with their fields mapped by KubernetesField.
func KubernetesCauses(causes []Cause) []Cause {
	out := make([]Cause, len(causes))
	for i, c := range causes {
		out[i] = Cause{Field: KubernetesField(c.Field), Message: c.Message}
	}
	return out
}
