package podcontroller

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/kumametrics/mesh/pkg/resource"
)

// The pod controller's reading of a Pod's labels and annotations, for the
// sidecar injector (pkg/k8s/injector), which must decide the same: which
// Pods are in the mesh, in which mesh, with which metrics endpoint.

// InMesh tells whether pod belongs in the mesh by its own labels and
// annotations and those of its Namespace (nil: unknown), as Convert
// decides it; problems name the label or annotation that cannot be parsed.
func InMesh(pod *corev1.Pod, ns *corev1.Namespace) (in bool, problems []Problem) {
	return inMesh(pod, ns)
}

// MeshOf is the mesh of pod, as Convert picks it.
func MeshOf(pod *corev1.Pod, ns *corev1.Namespace) (mesh string, problems []Problem) {
	mesh = meshOf(pod, ns, &problems)
	return mesh, problems
}

// MetricsOverride is the metrics override of a Pod's annotations
// (prometheus.metrics.kuma.io/…), nil when it has none, as Convert puts it
// in the Dataplane.
func MetricsOverride(annotations map[string]string) (metrics *resource.MetricsBackend, problems []Problem) {
	metrics = metricsFromAnnotations(annotations, &problems)
	return metrics, problems
}
