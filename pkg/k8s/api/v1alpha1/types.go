package v1alpha1

import (
	"bytes"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Object is one custom resource of this group.
type Object interface {
	metav1.Object
	runtime.Object
	// GetMesh is the top-level `mesh` ("" for kinds outside meshes).
	GetMesh() string
	// SetMesh sets the top-level `mesh` (ignored by kinds outside meshes).
	SetMesh(mesh string)
	// Body is the resource's spec in the Universal JSON shape: the CR's
	// `spec`, or `status` for the kinds the control plane writes.
	Body() json.RawMessage
	// SetBody replaces the body.
	SetBody(body json.RawMessage)
}

// ObjectList is a list of custom resources of one kind.
type ObjectList interface {
	metav1.ListInterface
	runtime.Object
	// Objects returns pointers to the items.
	Objects() []Object
}

// Kind describes one custom resource kind.
type Kind struct {
	// Kind is the Kubernetes kind, as resource.Kind names it (`Mesh`).
	Kind string
	// Resource is the control plane's kind of the same name.
	Resource resource.Kind
	// Plural is the CRD's plural (`meshes`), Singular its singular.
	Plural, Singular string
	// Namespaced kinds live in a namespace; the others are cluster-scoped.
	Namespaced bool
	// BodyField is the top-level field holding the resource's spec: `spec`,
	// or `status` for the kinds only the control plane writes (as the
	// reference system's insights).
	BodyField string
	New       func() Object
	NewList   func() ObjectList
}

// GroupResource is the kind's plural in group kuma.io.
func (k Kind) GroupResource() schema.GroupResource {
	return schema.GroupResource{Group: Group, Resource: k.Plural}
}

// GroupVersionKind is the kind in kuma.io/v1alpha1.
func (k Kind) GroupVersionKind() schema.GroupVersionKind { return GroupVersion.WithKind(k.Kind) }

var kinds = []Kind{
	{Kind: "Mesh", Resource: resource.KindMesh, Plural: "meshes", Singular: "mesh", BodyField: "spec",
		New: func() Object { return &Mesh{} }, NewList: func() ObjectList { return &MeshList{} }},
	{Kind: "TrafficPermission", Resource: resource.KindTrafficPermission, Plural: "trafficpermissions", Singular: "trafficpermission", BodyField: "spec",
		New: func() Object { return &TrafficPermission{} }, NewList: func() ObjectList { return &TrafficPermissionList{} }},
	{Kind: "Dataplane", Resource: resource.KindDataplane, Plural: "dataplanes", Singular: "dataplane", Namespaced: true, BodyField: "spec",
		New: func() Object { return &Dataplane{} }, NewList: func() ObjectList { return &DataplaneList{} }},
	{Kind: "DataplaneInsight", Resource: resource.KindDataplaneInsight, Plural: "dataplaneinsights", Singular: "dataplaneinsight", Namespaced: true, BodyField: "status",
		New: func() Object { return &DataplaneInsight{} }, NewList: func() ObjectList { return &DataplaneInsightList{} }},
	{Kind: "ControlPlaneInstance", Resource: resource.KindControlPlaneInstance, Plural: "controlplaneinstances", Singular: "controlplaneinstance", BodyField: "status",
		New: func() Object { return &ControlPlaneInstance{} }, NewList: func() ObjectList { return &ControlPlaneInstanceList{} }},
}

// Kinds lists every custom resource kind, Mesh first.
func Kinds() []Kind { return kinds }

// KindFor returns the custom resource kind of a control-plane kind; false
// for kinds that are not custom resources (Secret is a core Secret).
func KindFor(k resource.Kind) (Kind, bool) {
	for _, d := range kinds {
		if d.Resource == k {
			return d, true
		}
	}
	return Kind{}, false
}

// KindOf returns the kind of a custom resource of this package.
func KindOf(o Object) Kind {
	var k resource.Kind
	switch o.(type) {
	case *Mesh:
		k = resource.KindMesh
	case *TrafficPermission:
		k = resource.KindTrafficPermission
	case *Dataplane:
		k = resource.KindDataplane
	case *DataplaneInsight:
		k = resource.KindDataplaneInsight
	case *ControlPlaneInstance:
		k = resource.KindControlPlaneInstance
	}
	d, _ := KindFor(k)
	return d
}

// objects returns pointers to items.
func objects[T any, P interface {
	*T
	Object
}](items []T) []Object {
	out := make([]Object, len(items))
	for i := range items {
		out[i] = P(&items[i])
	}
	return out
}

// cloneRaw copies a raw JSON body.
func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}

// Mesh is a mesh (cluster-scoped): its spec is the Universal Mesh's.
type Mesh struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              json.RawMessage `json:"spec,omitempty"`
}

// MeshList is a list of Meshes.
type MeshList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Mesh `json:"items"`
}

// TrafficPermission (cluster-scoped) names its mesh at the top level,
// beside metadata and spec.
type TrafficPermission struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Mesh              string          `json:"mesh,omitempty"`
	Spec              json.RawMessage `json:"spec,omitempty"`
}

// TrafficPermissionList is a list of TrafficPermissions.
type TrafficPermissionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficPermission `json:"items"`
}

// Dataplane (namespaced) is a proxy's Dataplane; a Pod's is named after the
// Pod, in the Pod's namespace.
type Dataplane struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Mesh              string          `json:"mesh,omitempty"`
	Spec              json.RawMessage `json:"spec,omitempty"`
}

// DataplaneList is a list of Dataplanes.
type DataplaneList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Dataplane `json:"items"`
}

// DataplaneInsight (namespaced, beside its Dataplane) holds what the control
// planes know of the Dataplane's config streams, in `status`.
type DataplaneInsight struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Mesh              string          `json:"mesh,omitempty"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// DataplaneInsightList is a list of DataplaneInsights.
type DataplaneInsightList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DataplaneInsight `json:"items"`
}

// ControlPlaneInstance (cluster-scoped) is the heartbeat of one running
// control plane, in `status`.
type ControlPlaneInstance struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            json.RawMessage `json:"status,omitempty"`
}

// ControlPlaneInstanceList is a list of ControlPlaneInstances.
type ControlPlaneInstanceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ControlPlaneInstance `json:"items"`
}

// GetMesh implements Object.
func (*Mesh) GetMesh() string { return "" }

// SetMesh implements Object (a Mesh belongs to no mesh).
func (*Mesh) SetMesh(string) {}

// Body implements Object.
func (m *Mesh) Body() json.RawMessage { return m.Spec }

// SetBody implements Object.
func (m *Mesh) SetBody(b json.RawMessage) { m.Spec = b }

// GetMesh implements Object.
func (t *TrafficPermission) GetMesh() string { return t.Mesh }

// SetMesh implements Object.
func (t *TrafficPermission) SetMesh(mesh string) { t.Mesh = mesh }

// Body implements Object.
func (t *TrafficPermission) Body() json.RawMessage { return t.Spec }

// SetBody implements Object.
func (t *TrafficPermission) SetBody(b json.RawMessage) { t.Spec = b }

// GetMesh implements Object.
func (d *Dataplane) GetMesh() string { return d.Mesh }

// SetMesh implements Object.
func (d *Dataplane) SetMesh(mesh string) { d.Mesh = mesh }

// Body implements Object.
func (d *Dataplane) Body() json.RawMessage { return d.Spec }

// SetBody implements Object.
func (d *Dataplane) SetBody(b json.RawMessage) { d.Spec = b }

// GetMesh implements Object.
func (d *DataplaneInsight) GetMesh() string { return d.Mesh }

// SetMesh implements Object.
func (d *DataplaneInsight) SetMesh(mesh string) { d.Mesh = mesh }

// Body implements Object.
func (d *DataplaneInsight) Body() json.RawMessage { return d.Status }

// SetBody implements Object.
func (d *DataplaneInsight) SetBody(b json.RawMessage) { d.Status = b }

// GetMesh implements Object.
func (*ControlPlaneInstance) GetMesh() string { return "" }

// SetMesh implements Object (an instance belongs to no mesh).
func (*ControlPlaneInstance) SetMesh(string) {}

// Body implements Object.
func (c *ControlPlaneInstance) Body() json.RawMessage { return c.Status }

// SetBody implements Object.
func (c *ControlPlaneInstance) SetBody(b json.RawMessage) { c.Status = b }

// Objects implements ObjectList.
func (l *MeshList) Objects() []Object { return objects(l.Items) }

// Objects implements ObjectList.
func (l *TrafficPermissionList) Objects() []Object { return objects(l.Items) }

// Objects implements ObjectList.
func (l *DataplaneList) Objects() []Object { return objects(l.Items) }

// Objects implements ObjectList.
func (l *DataplaneInsightList) Objects() []Object { return objects(l.Items) }

// Objects implements ObjectList.
func (l *ControlPlaneInstanceList) Objects() []Object { return objects(l.Items) }
