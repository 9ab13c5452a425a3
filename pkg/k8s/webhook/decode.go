package webhook

import (
	"encoding/json"
	"fmt"

	"github.com/kumametrics/mesh/pkg/resource"
)

// TODO(i10-store): replace with the conversion of pkg/k8s/api/v1alpha1, so
// that the webhook and the Kubernetes store read an object the same way.

// namespaced are the kinds whose custom resources live in a namespace; the
// control plane names them <name>.<namespace>.
var namespaced = map[resource.Kind]bool{resource.KindDataplane: true, resource.KindDataplaneInsight: true}

// decode reads the custom resource of a request (JSON, as the API server
// stored it: metadata full of server fields) as the control plane's
// resource, through the Kubernetes form of package resource: apiVersion,
// kind, mesh, metadata.name and spec; other metadata is not the webhook's.
func decode(d resource.Descriptor, namespace string, raw []byte) (*resource.Object, error) {
	var cr struct {
		APIVersion any             `json:"apiVersion"`
		Kind       any             `json:"kind"`
		Mesh       any             `json:"mesh,omitempty"`
		Spec       json.RawMessage `json:"spec,omitempty"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &cr); err != nil {
		return nil, fmt.Errorf("the %s in the request is not a Kubernetes object: %w", d.Kind, err)
	}
	doc := map[string]any{"apiVersion": cr.APIVersion, "kind": cr.Kind, "metadata": map[string]any{"name": cr.Metadata.Name}}
	if cr.Mesh != nil {
		doc["mesh"] = cr.Mesh
	}
	if len(cr.Spec) > 0 {
		doc["spec"] = cr.Spec
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	obj, err := resource.DecodeYAML(js, 1)
	if err != nil {
		return nil, err
	}
	if obj.Meta.Kind != d.Kind {
		return nil, fmt.Errorf("the request is for a %s but carries a %s", d.Kind, obj.Meta.Kind)
	}
	if ns := cr.Metadata.Namespace; namespaced[d.Kind] {
		if ns == "" {
			ns = namespace
		}
		obj.Meta.Name += "." + ns
	}
	return obj, nil
}
