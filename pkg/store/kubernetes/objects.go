package kubernetes

import (
	"encoding/base64"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Secrets of the control plane (mesh CAs and others) are Kubernetes
// Secrets of this type in the system namespace, labelled with their mesh,
// holding the bytes under this key (the reference system's naming).
// GlobalSecrets are Kubernetes Secrets of GlobalSecretType in the system
// namespace, without a mesh label.
const (
	SecretType       corev1.SecretType = "system.kuma.io/secret"
	GlobalSecretType corev1.SecretType = "system.kuma.io/global-secret"
	MeshLabel                          = "kuma.io/mesh"
	SecretDataKey                      = "value"
)

// isSecret tells whether a kind is kept as a Kubernetes Secret.
func isSecret(kind resource.Kind) bool {
	return kind == resource.KindSecret || kind == resource.KindGlobalSecret
}

// newObject returns an empty Kubernetes object of a kind.
func newObject(kind resource.Kind) client.Object {
	if isSecret(kind) {
		return &corev1.Secret{}
	}
	k, _ := v1alpha1.KindFor(kind)
	return k.New()
}

// newList returns an empty Kubernetes list of a kind.
func newList(kind resource.Kind) client.ObjectList {
	if isSecret(kind) {
		return &corev1.SecretList{}
	}
	k, _ := v1alpha1.KindFor(kind)
	return k.NewList()
}

// items returns the objects of a list made by newList.
func items(list client.ObjectList) []client.Object {
	switch l := list.(type) {
	case *corev1.SecretList:
		out := make([]client.Object, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out
	case v1alpha1.ObjectList:
		objs := l.Objects()
		out := make([]client.Object, len(objs))
		for i, o := range objs {
			out[i] = o
		}
		return out
	}
	return nil
}

// supported tells whether the store keeps a kind.
func supported(kind resource.Kind) error {
	if isSecret(kind) {
		return nil
	}
	if _, ok := v1alpha1.KindFor(kind); ok {
		return nil
	}
	return fmt.Errorf("kubernetes store: %s is not kept in Kubernetes (no custom resource for it)", kind)
}

// objectKey returns the Kubernetes name (and namespace) of a resource key;
// false when no Kubernetes object can have that key.
func (s *Store) objectKey(kind resource.Kind, key resource.Key) (types.NamespacedName, error) {
	if key.Name == "" {
		return types.NamespacedName{}, fmt.Errorf("%s: name must not be empty", kind)
	}
	if isSecret(kind) {
		return types.NamespacedName{Namespace: s.names.SystemNamespace, Name: key.Name}, nil
	}
	k, _ := v1alpha1.KindFor(kind)
	if !k.Namespaced {
		return types.NamespacedName{Name: key.Name}, nil
	}
	name, ns, err := s.names.Split(key.Name)
	if err != nil {
		return types.NamespacedName{}, err
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// keyOf returns the resource key of a Kubernetes object of a kind; false
// for an object that is not a resource (a Secret without its mesh label, a
// custom resource of a mesh-scoped kind without its mesh).
func (s *Store) keyOf(kind resource.Kind, o client.Object) (resource.Key, bool) {
	switch o := o.(type) {
	case *corev1.Secret:
		if o.Namespace != s.names.SystemNamespace {
			return resource.Key{}, false
		}
		if kind == resource.KindGlobalSecret {
			return resource.Key{Name: o.Name}, o.Type == GlobalSecretType
		}
		mesh := o.Labels[MeshLabel]
		return resource.Key{Mesh: mesh, Name: o.Name}, kind == resource.KindSecret && mesh != "" && o.Type == SecretType
	case v1alpha1.Object:
		k := v1alpha1.KindOf(o)
		name := o.GetName()
		if k.Namespaced {
			name = s.names.Join(name, o.GetNamespace())
		}
		d, err := resource.Describe(k.Resource)
		if err != nil {
			return resource.Key{}, false
		}
		if d.Scoped {
			return resource.Key{Mesh: o.GetMesh(), Name: name}, o.GetMesh() != ""
		}
		return resource.Key{Name: name}, true
	}
	return resource.Key{}, false
}

// toResource converts a Kubernetes object of a kind to its resource.
func (s *Store) toResource(kind resource.Kind, o client.Object) (*resource.Object, error) {
	switch o := o.(type) {
	case *corev1.Secret:
		key, ok := s.keyOf(kind, o)
		if !ok {
			if kind == resource.KindGlobalSecret {
				return nil, fmt.Errorf("Secret %s/%s: not a control-plane global secret (type %s)", o.Namespace, o.Name, GlobalSecretType)
			}
			return nil, fmt.Errorf("Secret %s/%s: not a control-plane secret (type %s with label %s)", o.Namespace, o.Name, SecretType, MeshLabel)
		}
		meta, err := v1alpha1.Meta(o)
		if err != nil {
			return nil, err
		}
		meta.Kind, meta.Mesh, meta.Name = kind, key.Mesh, key.Name
		data := base64.StdEncoding.EncodeToString(o.Data[SecretDataKey])
		if kind == resource.KindGlobalSecret {
			return &resource.Object{Meta: meta, Spec: &resource.GlobalSecretSpec{Data: data}}, nil
		}
		return &resource.Object{Meta: meta, Spec: &resource.SecretSpec{Data: data}}, nil
	case v1alpha1.Object:
		obj, err := s.names.ToObject(o)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", v1alpha1.KindOf(o).Kind, displayName(o), err)
		}
		return obj, nil
	}
	return nil, fmt.Errorf("kubernetes store: unexpected object %T", o)
}

func displayName(o client.Object) string {
	if ns := o.GetNamespace(); ns != "" {
		return ns + "/" + o.GetName()
	}
	return o.GetName()
}

// fromResource returns the Kubernetes object of a resource: name,
// namespace, mesh and body (for a Secret: type, mesh label and data).
func (s *Store) fromResource(obj *resource.Object) (client.Object, error) {
	switch obj.Meta.Kind {
	case resource.KindSecret:
		data, err := obj.Secret().Bytes()
		if err != nil {
			return nil, fmt.Errorf("Secret %q: data: %w", obj.Meta.Key(), err)
		}
		sec := &corev1.Secret{Type: SecretType, Data: map[string][]byte{SecretDataKey: data}}
		sec.Name, sec.Namespace = obj.Meta.Name, s.names.SystemNamespace
		sec.Labels = map[string]string{MeshLabel: obj.Meta.Mesh}
		return sec, nil
	case resource.KindGlobalSecret:
		data, err := obj.GlobalSecret().Bytes()
		if err != nil {
			return nil, fmt.Errorf("GlobalSecret %q: data: %w", obj.Meta.Name, err)
		}
		sec := &corev1.Secret{Type: GlobalSecretType, Data: map[string][]byte{SecretDataKey: data}}
		sec.Name, sec.Namespace = obj.Meta.Name, s.names.SystemNamespace
		return sec, nil
	}
	return s.names.FromObject(obj)
}

// withContent returns a copy of the stored object cur carrying obj's
// content (body and mesh; a Secret's data and mesh label), its metadata
// (labels, annotations, owners) kept, dated at.
func (s *Store) withContent(cur client.Object, obj *resource.Object, at time.Time) (client.Object, error) {
	want, err := s.fromResource(obj)
	if err != nil {
		return nil, err
	}
	next := cur.DeepCopyObject().(client.Object)
	switch n := next.(type) {
	case *corev1.Secret:
		w := want.(*corev1.Secret)
		n.Data = w.Data
		if obj.Meta.Kind == resource.KindSecret {
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels[MeshLabel] = obj.Meta.Mesh
		}
	case v1alpha1.Object:
		w := want.(v1alpha1.Object)
		n.SetBody(w.Body())
		n.SetMesh(w.GetMesh())
	}
	// Strictly after the previous modification, so that every write is a
	// change (Kubernetes skips writes that change nothing) and times grow.
	_, prev := v1alpha1.Times(cur)
	if !at.After(prev) {
		at = prev.Add(time.Nanosecond)
	}
	v1alpha1.SetModificationTime(next, at)
	return next, nil
}
