package webhook

import (
	"fmt"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// kindOf returns the custom resource kind of a request's kind name.
func kindOf(name string) (v1alpha1.Kind, bool) {
	for _, k := range v1alpha1.Kinds() {
		if k.Kind == name {
			return k, true
		}
	}
	return v1alpha1.Kind{}, false
}

// decode reads the custom resource of a request (JSON, as the API server
// holds it) as the control plane's resource, as the Kubernetes store reads
// it, so that the webhook judges what the store will serve.
func (v *Validator) decode(k v1alpha1.Kind, raw []byte) (*resource.Object, error) {
	cr, err := v1alpha1.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("the %s in the request cannot be read: %w", k.Kind, err)
	}
	if got := v1alpha1.KindOf(cr).Kind; got != k.Kind {
		return nil, fmt.Errorf("the request is for a %s but carries a %s", k.Kind, got)
	}
	return v.Names.ToObject(cr)
}
