package v1alpha1

import "k8s.io/apimachinery/pkg/runtime"

// Deep copies, written by hand: every kind is metadata, an optional mesh
// name and a raw JSON body.

// copyItems deep-copies the items of a list.
func copyItems[T any](in []T, copyInto func(in, out *T)) []T {
	if in == nil {
		return nil
	}
	out := make([]T, len(in))
	for i := range in {
		copyInto(&in[i], &out[i])
	}
	return out
}

// DeepCopyInto copies m into out.
func (m *Mesh) DeepCopyInto(out *Mesh) {
	*out = *m
	m.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec = cloneRaw(m.Spec)
}

// DeepCopy returns a copy of m.
func (m *Mesh) DeepCopy() *Mesh {
	if m == nil {
		return nil
	}
	out := &Mesh{}
	m.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (m *Mesh) DeepCopyObject() runtime.Object { return m.DeepCopy() }

// DeepCopyInto copies l into out.
func (l *MeshList) DeepCopyInto(out *MeshList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*Mesh).DeepCopyInto)
}

// DeepCopy returns a copy of l.
func (l *MeshList) DeepCopy() *MeshList {
	if l == nil {
		return nil
	}
	out := &MeshList{}
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *MeshList) DeepCopyObject() runtime.Object { return l.DeepCopy() }

// DeepCopyInto copies t into out.
func (t *TrafficPermission) DeepCopyInto(out *TrafficPermission) {
	*out = *t
	t.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec = cloneRaw(t.Spec)
}

// DeepCopy returns a copy of t.
func (t *TrafficPermission) DeepCopy() *TrafficPermission {
	if t == nil {
		return nil
	}
	out := &TrafficPermission{}
	t.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (t *TrafficPermission) DeepCopyObject() runtime.Object { return t.DeepCopy() }

// DeepCopyInto copies l into out.
func (l *TrafficPermissionList) DeepCopyInto(out *TrafficPermissionList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*TrafficPermission).DeepCopyInto)
}

// DeepCopy returns a copy of l.
func (l *TrafficPermissionList) DeepCopy() *TrafficPermissionList {
	if l == nil {
		return nil
	}
	out := &TrafficPermissionList{}
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *TrafficPermissionList) DeepCopyObject() runtime.Object { return l.DeepCopy() }

// DeepCopyInto copies d into out.
func (d *Dataplane) DeepCopyInto(out *Dataplane) {
	*out = *d
	d.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Spec = cloneRaw(d.Spec)
}

// DeepCopy returns a copy of d.
func (d *Dataplane) DeepCopy() *Dataplane {
	if d == nil {
		return nil
	}
	out := &Dataplane{}
	d.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (d *Dataplane) DeepCopyObject() runtime.Object { return d.DeepCopy() }

// DeepCopyInto copies l into out.
func (l *DataplaneList) DeepCopyInto(out *DataplaneList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*Dataplane).DeepCopyInto)
}

// DeepCopy returns a copy of l.
func (l *DataplaneList) DeepCopy() *DataplaneList {
	if l == nil {
		return nil
	}
	out := &DataplaneList{}
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *DataplaneList) DeepCopyObject() runtime.Object { return l.DeepCopy() }

// DeepCopyInto copies d into out.
func (d *DataplaneInsight) DeepCopyInto(out *DataplaneInsight) {
	*out = *d
	d.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Status = cloneRaw(d.Status)
}

// DeepCopy returns a copy of d.
func (d *DataplaneInsight) DeepCopy() *DataplaneInsight {
	if d == nil {
		return nil
	}
	out := &DataplaneInsight{}
	d.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (d *DataplaneInsight) DeepCopyObject() runtime.Object { return d.DeepCopy() }

// DeepCopyInto copies l into out.
func (l *DataplaneInsightList) DeepCopyInto(out *DataplaneInsightList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*DataplaneInsight).DeepCopyInto)
}

// DeepCopy returns a copy of l.
func (l *DataplaneInsightList) DeepCopy() *DataplaneInsightList {
	if l == nil {
		return nil
	}
	out := &DataplaneInsightList{}
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *DataplaneInsightList) DeepCopyObject() runtime.Object { return l.DeepCopy() }

// DeepCopyInto copies c into out.
func (c *ControlPlaneInstance) DeepCopyInto(out *ControlPlaneInstance) {
	*out = *c
	c.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.Status = cloneRaw(c.Status)
}

// DeepCopy returns a copy of c.
func (c *ControlPlaneInstance) DeepCopy() *ControlPlaneInstance {
	if c == nil {
		return nil
	}
	out := &ControlPlaneInstance{}
	c.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (c *ControlPlaneInstance) DeepCopyObject() runtime.Object { return c.DeepCopy() }

// DeepCopyInto copies l into out.
func (l *ControlPlaneInstanceList) DeepCopyInto(out *ControlPlaneInstanceList) {
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = copyItems(l.Items, (*ControlPlaneInstance).DeepCopyInto)
}

// DeepCopy returns a copy of l.
func (l *ControlPlaneInstanceList) DeepCopy() *ControlPlaneInstanceList {
	if l == nil {
		return nil
	}
	out := &ControlPlaneInstanceList{}
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *ControlPlaneInstanceList) DeepCopyObject() runtime.Object { return l.DeepCopy() }
