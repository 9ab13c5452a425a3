// Package v1alpha1 holds the Kubernetes custom resources of group kuma.io,
// version v1alpha1 (the reference system's shapes): Mesh, TrafficPermission,
// Dataplane, DataplaneInsight and ControlPlaneInstance, their registration in
// a runtime.Scheme, and their conversion to and from resource.Object. The body
// of each custom resource is exactly the Universal resource's spec in its
// JSON shape (`spec`; `status` for the kinds the control plane writes), kept
// as raw JSON and decoded strictly by package resource, so that errors carry
// the same field paths as the REST API's.
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Group and Version of the custom resources.
const (
	Group   = "kuma.io"
	Version = "v1alpha1"
)

// GroupVersion is kuma.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// AddToScheme registers every kind of the group version (and its list) in s.
func AddToScheme(s *runtime.Scheme) error {
	for _, k := range kinds {
		s.AddKnownTypeWithName(GroupVersion.WithKind(k.Kind), k.New())
		s.AddKnownTypeWithName(GroupVersion.WithKind(k.Kind+"List"), k.NewList())
	}
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
