package podcontroller

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BenchmarkConvert: one Pod of the guide (metrics annotations, an aggregated
// application, five labels) among the Services of a namespace, of which
// two select it.
func BenchmarkConvert(b *testing.B) {
	for _, n := range []int{2, 50} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			pod := testPod(
				withLabels("version", "v1", "app.kubernetes.io/name", "echo", "pod-template-hash", "5c89f4d995", "tier", "backend"),
				withAnnotations(MetricsPort, "1234", MetricsPath, "/non-standard-path",
					AggregatePrefix+"app-port", "3000", AggregatePrefix+"app-path", "/stats",
					"kubectl.kubernetes.io/restartedAt", "2026-12-06T10:00:00Z"))
			services := []corev1.Service{testService("echo"), testService("echo-admin", ports(corev1.ServicePort{Port: 81, TargetPort: intstr.FromString("http")}))}
			for i := len(services); i < n; i++ {
				services = append(services, testService(fmt.Sprintf("other-%d", i), func(s *corev1.Service) {
					s.Spec.Selector = map[string]string{"app": fmt.Sprintf("other-%d", i)}
				}))
			}
			ns := enabledNS()
			b.ReportAllocs()
			for b.Loop() {
				if r := Convert(pod, services, ns); r.Dataplane == nil {
					b.Fatalf("no Dataplane: %+v", r)
				}
			}
		})
	}
}
