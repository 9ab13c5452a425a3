// Package resource defines the mesh's resource kinds (Mesh, Dataplane,
// TrafficPermission): their types, both YAML forms (Universal and
// Kubernetes) and the REST JSON shape, validation with field paths, the
// defaults stored with them and the effective metrics configuration of a
// dataplane. Everything here is pure: no I/O.
package resource

import (
	"fmt"
	"strings"
	"time"
)

// Kind names a resource type, as in `type: Mesh`.
type Kind string

// The resource kinds.
const (
	KindMesh              Kind = "Mesh"
	KindDataplane         Kind = "Dataplane"
	KindTrafficPermission Kind = "TrafficPermission"
	KindSecret            Kind = "Secret"
	// KindGlobalSecret is a secret of the control plane itself, in no mesh:
	// its token signing keys, the admin token, its serving CA.
	KindGlobalSecret Kind = "GlobalSecret"
	// KindDataplaneInsight is what the control planes know of a Dataplane's
	// config streams; it has the Dataplane's mesh and name.
	KindDataplaneInsight Kind = "DataplaneInsight"
	// KindControlPlaneInstance is the heartbeat record of one running
	// control plane, named by its instance id.
	KindControlPlaneInstance Kind = "ControlPlaneInstance"
)

// Descriptor says how a kind is named and scoped.
type Descriptor struct {
	Kind Kind
	// Plural is the REST path segment and the kumactl plural (`meshes`).
	Plural string
	// Singular is the kumactl singular (`mesh`).
	Singular string
	// Scoped is true for kinds that live inside a mesh.
	Scoped bool
	// NewSpec returns an empty spec of the kind.
	NewSpec func() Spec
	// Sensitive kinds (secrets) are read and written by admins only.
	Sensitive bool
	// ReadOnly kinds are written by the control plane itself: the API and
	// kumactl read them but never create, change or delete them.
	ReadOnly bool
	// Owner is the kind whose resource of the same mesh and name owns a
	// resource of this kind: deleting the owner deletes it, in the same
	// store transaction. Empty for kinds that have no owner.
	Owner Kind
}

var descriptors = []Descriptor{
	{Kind: KindMesh, Plural: "meshes", Singular: "mesh", NewSpec: func() Spec { return &MeshSpec{} }},
	{Kind: KindDataplane, Plural: "dataplanes", Singular: "dataplane", Scoped: true, NewSpec: func() Spec { return &DataplaneSpec{} }},
	{Kind: KindTrafficPermission, Plural: "traffic-permissions", Singular: "traffic-permission", Scoped: true, NewSpec: func() Spec { return &TrafficPermissionSpec{} }},
	{Kind: KindSecret, Plural: "secrets", Singular: "secret", Scoped: true, Sensitive: true, NewSpec: func() Spec { return &SecretSpec{} }},
	{Kind: KindGlobalSecret, Plural: "global-secrets", Singular: "global-secret", Sensitive: true, NewSpec: func() Spec { return &GlobalSecretSpec{} }},
	{Kind: KindDataplaneInsight, Plural: "dataplane-insights", Singular: "dataplane-insight", Scoped: true, ReadOnly: true, Owner: KindDataplane, NewSpec: func() Spec { return &DataplaneInsightSpec{} }},
	{Kind: KindControlPlaneInstance, Plural: "control-plane-instances", Singular: "control-plane-instance", ReadOnly: true, NewSpec: func() Spec { return &ControlPlaneInstanceSpec{} }},
}

// Descriptors lists every kind, Mesh first.
func Descriptors() []Descriptor { return descriptors }

// Describe returns the descriptor of a kind.
func Describe(k Kind) (Descriptor, error) {
	for _, d := range descriptors {
		if d.Kind == k {
			return d, nil
		}
	}
	return Descriptor{}, fmt.Errorf("unknown resource type %q (known: %s)", k, KnownKinds())
}

// KnownKinds lists the kind names, comma-separated, for error messages.
func KnownKinds() string {
	names := make([]string, len(descriptors))
	for i, d := range descriptors {
		names[i] = string(d.Kind)
	}
	return strings.Join(names, ", ")
}

// DescribeName finds a kind by its kind name, plural or singular.
func DescribeName(name string) (Descriptor, bool) {
	for _, d := range descriptors {
		if string(d.Kind) == name || d.Plural == name || d.Singular == name {
			return d, true
		}
	}
	return Descriptor{}, false
}

// Spec is the kind-specific body of a resource.
type Spec interface {
	// Kind of the resource this spec belongs to.
	Kind() Kind
}

// Meta identifies a stored resource.
type Meta struct {
	Kind Kind
	// Mesh is empty for a Mesh and set for mesh-scoped kinds.
	Mesh string
	Name string
	// Version is the store's optimistic-concurrency version; 0 means "not stored yet".
	Version          int64
	CreationTime     time.Time
	ModificationTime time.Time
	// NameExtensions are what a store knows of the resource's name in its
	// own system, filled by that store (given values are ignored): the
	// Kubernetes store sets K8sNameExtension and, for namespaced kinds,
	// K8sNamespaceExtension. Nil for stores that have none.
	NameExtensions map[string]string
}

// Name extensions of resources kept in Kubernetes.
const (
	// K8sNameExtension is the resource's Kubernetes name (a Dataplane's: its Pod's).
	K8sNameExtension = "k8s.kuma.io/name"
	// K8sNamespaceExtension is the resource's Kubernetes namespace.
	K8sNamespaceExtension = "k8s.kuma.io/namespace"
)

// Key returns the identity of the resource inside its kind.
func (m Meta) Key() Key { return Key{Mesh: m.Mesh, Name: m.Name} }

// Key identifies a resource within its kind.
type Key struct {
	Mesh string
	Name string
}

func (k Key) String() string {
	if k.Mesh == "" {
		return k.Name
	}
	return k.Mesh + "/" + k.Name
}

// Object is one resource: its identity and its spec.
type Object struct {
	Meta Meta
	Spec Spec
}

// New returns an object of the given spec, named and (for scoped kinds) placed in a mesh.
func New(mesh, name string, spec Spec) *Object {
	m := Meta{Kind: spec.Kind(), Name: name}
	if d, err := Describe(spec.Kind()); err == nil && d.Scoped {
		m.Mesh = mesh
	}
	return &Object{Meta: m, Spec: spec}
}

// Mesh returns the spec as a MeshSpec, or nil.
func (o *Object) Mesh() *MeshSpec { s, _ := o.Spec.(*MeshSpec); return s }

// Dataplane returns the spec as a DataplaneSpec, or nil.
func (o *Object) Dataplane() *DataplaneSpec { s, _ := o.Spec.(*DataplaneSpec); return s }

// Secret returns the spec as a SecretSpec, or nil.
func (o *Object) Secret() *SecretSpec { s, _ := o.Spec.(*SecretSpec); return s }

// GlobalSecret returns the spec as a GlobalSecretSpec, or nil.
func (o *Object) GlobalSecret() *GlobalSecretSpec { s, _ := o.Spec.(*GlobalSecretSpec); return s }

// DataplaneInsight returns the spec as a DataplaneInsightSpec, or nil.
func (o *Object) DataplaneInsight() *DataplaneInsightSpec {
	s, _ := o.Spec.(*DataplaneInsightSpec)
	return s
}

// ControlPlaneInstance returns the spec as a ControlPlaneInstanceSpec, or nil.
func (o *Object) ControlPlaneInstance() *ControlPlaneInstanceSpec {
	s, _ := o.Spec.(*ControlPlaneInstanceSpec)
	return s
}

// TrafficPermission returns the spec as a TrafficPermissionSpec, or nil.
func (o *Object) TrafficPermission() *TrafficPermissionSpec {
	s, _ := o.Spec.(*TrafficPermissionSpec)
	return s
}
