package v1alpha1

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/resource"
)

// ModificationTimeAnnotation holds the time (RFC 3339, nanoseconds) of the
// control plane's last write of a resource; metadata.creationTimestamp has
// whole seconds only. Writes by others (kubectl) are dated by their
// metadata.managedFields entries.
const ModificationTimeAnnotation = "k8s.kuma.io/modification-time"

// Names maps the control plane's names of the namespaced kinds (Dataplane,
// DataplaneInsight) to Kubernetes names and namespaces and back: the
// resource `<name>.<namespace>` is the custom resource <name> in namespace
// <namespace> (a Pod's Dataplane is the Pod's name and namespace, as in the
// reference system). A name without a dot is the custom resource of that
// name in SystemNamespace, so that proxies named as in Universal mode
// (`backend-1`) have a place too; a name ending in `.<SystemNamespace>` is
// refused, since it would read back without the suffix. Namespace names
// have no dots, so the namespace is what follows the last dot.
type Names struct {
	// SystemNamespace is the control plane's namespace (kuma-system).
	SystemNamespace string
}

// Split returns the Kubernetes name and namespace of the resource name of a
// namespaced kind.
func (n Names) Split(name string) (k8sName, namespace string, err error) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return name, n.SystemNamespace, nil
	}
	k8sName, namespace = name[:i], name[i+1:]
	switch {
	case k8sName == "" || namespace == "":
		return "", "", fmt.Errorf("name %q: a namespaced resource is named <name>.<namespace> (or <name>, in namespace %s)", name, n.SystemNamespace)
	case namespace == n.SystemNamespace:
		return "", "", fmt.Errorf("name %q: a resource in the control plane's namespace %s is named without the suffix: %q", name, n.SystemNamespace, k8sName)
	}
	return k8sName, namespace, nil
}

// Join returns the resource name of a namespaced custom resource.
func (n Names) Join(k8sName, namespace string) string {
	if namespace == n.SystemNamespace {
		return k8sName
	}
	return k8sName + "." + namespace
}

// ToObject converts a custom resource to the control plane's resource. Its
// body is decoded strictly: problems are a *resource.ValidationError whose
// field paths start with the body's field (`spec.networking.address`), or
// `mesh` when a mesh-scoped resource names none. Meta.Version is the
// resourceVersion (see ParseVersion); Meta.NameExtensions carry the
// Kubernetes name and namespace.
func (n Names) ToObject(cr Object) (*resource.Object, error) {
	k := KindOf(cr)
	if k.Kind == "" {
		return nil, fmt.Errorf("convert %T: not a custom resource of %s", cr, GroupVersion)
	}
	d, err := resource.Describe(k.Resource)
	if err != nil {
		return nil, err
	}
	spec, err := resource.DecodeSpec(k.Resource, cr.Body(), k.BodyField)
	if err != nil {
		return nil, err
	}
	obj := &resource.Object{Meta: resource.Meta{Kind: k.Resource, Name: cr.GetName()}, Spec: spec}
	if k.Namespaced {
		obj.Meta.Name = n.Join(cr.GetName(), cr.GetNamespace())
	}
	if d.Scoped {
		obj.Meta.Mesh = cr.GetMesh()
		if obj.Meta.Mesh == "" {
			return nil, &resource.ValidationError{Causes: []resource.Cause{{Field: "mesh", Message: "must name the mesh of the " + k.Kind}}}
		}
	}
	if err := setMeta(&obj.Meta, cr); err != nil {
		return nil, err
	}
	return obj, nil
}

// setMeta fills in what metadata says of a stored object: version, times
// and name extensions.
func setMeta(m *resource.Meta, o metav1.Object) error {
	v, err := ParseVersion(o.GetResourceVersion())
	if err != nil {
		return err
	}
	m.Version = v
	m.CreationTime, m.ModificationTime = Times(o)
	m.NameExtensions = map[string]string{resource.K8sNameExtension: o.GetName()}
	if ns := o.GetNamespace(); ns != "" {
		m.NameExtensions[resource.K8sNamespaceExtension] = ns
	}
	return nil
}

// Meta returns the stored meta of any Kubernetes object: its version, times
// and name extensions; kind, mesh and name are left to the caller.
func Meta(o metav1.Object) (resource.Meta, error) {
	var m resource.Meta
	err := setMeta(&m, o)
	return m, err
}

// ParseVersion reads a resourceVersion as the store's version. Kubernetes
// calls it opaque; API servers backed by etcd (every conformant one) give
// etcd's revision, a positive integer that grows with every write, and the
// Kubernetes store relies on that. "" (not stored) is 0.
func ParseVersion(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a positive integer: the Kubernetes store needs an etcd-backed API server", rv)
	}
	return v, nil
}

// FormatVersion is the resourceVersion of a store version.
func FormatVersion(v int64) string { return strconv.FormatInt(v, 10) }

// Times returns the creation and modification times of a stored object, in
// UTC: metadata.creationTimestamp, and the newest of the
// ModificationTimeAnnotation and the metadata.managedFields times (the
// creation time when neither is newer).
func Times(o metav1.Object) (created, modified time.Time) {
	created = o.GetCreationTimestamp().UTC()
	modified = created
	if s, ok := o.GetAnnotations()[ModificationTimeAnnotation]; ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil && t.After(modified) {
			modified = t.UTC()
		}
	}
	for _, f := range o.GetManagedFields() {
		if f.Time != nil && f.Time.After(modified) {
			modified = f.Time.UTC()
		}
	}
	return created, modified
}

// SetModificationTime records t as the object's modification time.
func SetModificationTime(o metav1.Object, t time.Time) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[ModificationTimeAnnotation] = t.UTC().Format(time.RFC3339Nano)
	o.SetAnnotations(a)
}

// FromObject converts a resource of a custom resource kind to its custom
// resource: name (and namespace), mesh and body. Metadata beyond the name is
// left empty, for the writer to fill in.
func (n Names) FromObject(obj *resource.Object) (Object, error) {
	k, ok := KindFor(obj.Meta.Kind)
	if !ok {
		return nil, fmt.Errorf("%s is not a custom resource kind", obj.Meta.Kind)
	}
	if obj.Spec == nil || obj.Spec.Kind() != obj.Meta.Kind {
		return nil, fmt.Errorf("%s %q: spec is not a %s", obj.Meta.Kind, obj.Meta.Key(), obj.Meta.Kind)
	}
	body, err := json.Marshal(obj.Spec)
	if err != nil {
		return nil, fmt.Errorf("%s %q: marshal spec: %w", obj.Meta.Kind, obj.Meta.Key(), err)
	}
	cr := k.New()
	cr.GetObjectKind().SetGroupVersionKind(k.GroupVersionKind())
	cr.SetName(obj.Meta.Name)
	if k.Namespaced {
		name, ns, err := n.Split(obj.Meta.Name)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", obj.Meta.Kind, obj.Meta.Key(), err)
		}
		cr.SetName(name)
		cr.SetNamespace(ns)
	}
	cr.SetMesh(obj.Meta.Mesh)
	cr.SetBody(body)
	return cr, nil
}

// Decode reads one custom resource of this group from YAML or JSON (a
// manifest, or the object of an admission request). Unknown fields are
// errors.
func Decode(data []byte) (Object, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("decode custom resource: %w", err)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(js, &tm); err != nil {
		return nil, fmt.Errorf("decode custom resource: %w", err)
	}
	if tm.APIVersion != GroupVersion.String() {
		return nil, fmt.Errorf("decode custom resource: apiVersion must be %s, got %q", GroupVersion, tm.APIVersion)
	}
	for _, k := range kinds {
		if k.Kind != tm.Kind {
			continue
		}
		cr := k.New()
		if err := yaml.UnmarshalStrict(js, cr); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k.Kind, err)
		}
		return cr, nil
	}
	return nil, errors.New("decode custom resource: kind must be one of " + kindNames())
}

func kindNames() string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Kind
	}
	return strings.Join(names, ", ")
}
