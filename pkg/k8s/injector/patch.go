package injector

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Operation is one JSON patch (RFC 6902) operation.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Patch renders what Inject changed, from the original Pod to the injected
// one, as the JSON patch the API server applies: an "add" per annotation
// (the whole map when the Pod had none) and per appended init container,
// container and volume (the whole list when the Pod had none), in that
// order, and the ServiceAccount when the Pod named none. Inject only adds;
// anything else changed is an error.
func Patch(original, injected *corev1.Pod) ([]byte, error) {
	var ops []Operation
	if original.Annotations == nil {
		if len(injected.Annotations) > 0 {
			ops = append(ops, Operation{"add", "/metadata/annotations", injected.Annotations})
		}
	} else {
		for _, k := range slices.Sorted(maps.Keys(injected.Annotations)) {
			v := injected.Annotations[k]
			if old, ok := original.Annotations[k]; !ok || old != v {
				ops = append(ops, Operation{"add", "/metadata/annotations/" + escape(k), v})
			}
		}
		for k := range original.Annotations {
			if _, ok := injected.Annotations[k]; !ok {
				return nil, fmt.Errorf("injection patch: annotation %q was removed", k)
			}
		}
	}
	var err error
	if ops, err = appended(ops, "/spec/initContainers", original.Spec.InitContainers, injected.Spec.InitContainers); err != nil {
		return nil, err
	}
	if ops, err = appended(ops, "/spec/containers", original.Spec.Containers, injected.Spec.Containers); err != nil {
		return nil, err
	}
	if ops, err = appended(ops, "/spec/volumes", original.Spec.Volumes, injected.Spec.Volumes); err != nil {
		return nil, err
	}
	switch a, b := original.Spec.ServiceAccountName, injected.Spec.ServiceAccountName; {
	case a == b:
	case a == "":
		ops = append(ops, Operation{"add", "/spec/serviceAccountName", b})
	default:
		return nil, fmt.Errorf("injection patch: spec.serviceAccountName was changed from %q", a)
	}
	out, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("injection patch: %w", err)
	}
	return out, nil
}

// appended adds the elements of after beyond before, which must be its
// prefix, to the list at path.
func appended[T any](ops []Operation, path string, before, after []T) ([]Operation, error) {
	if len(after) < len(before) {
		return nil, fmt.Errorf("injection patch: %s lost elements", path)
	}
	for i := range before {
		a, errA := json.Marshal(before[i])
		b, errB := json.Marshal(after[i])
		if errA != nil || errB != nil || string(a) != string(b) {
			return nil, fmt.Errorf("injection patch: %s/%d was changed", path, i)
		}
	}
	added := after[len(before):]
	switch {
	case len(added) == 0:
	case len(before) == 0:
		ops = append(ops, Operation{"add", path, added})
	default:
		for _, e := range added {
			ops = append(ops, Operation{"add", path + "/-", e})
		}
	}
	return ops, nil
}

// pointerEscaper makes a map key one JSON pointer token (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escape makes a map key one JSON pointer token (RFC 6901).
func escape(k string) string { return pointerEscaper.Replace(k) }
