package podcontroller_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	kubestore "github.com/kumametrics/mesh/pkg/store/kubernetes"
)

func TestMain(m *testing.M) {
	// controller-runtime's own log lines, at warning level and above.
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	k8stest.Main(m)
}

// wait is the deadline of every poll: generous, for a loaded machine.
const wait = 60 * time.Second

const tick = 20 * time.Millisecond

// names maps Dataplane custom resources to the control plane's resources.
var names = v1alpha1.Names{SystemNamespace: "kuma-system"}

// fixture is a pod controller running against the harness's API server.
type fixture struct {
	c        client.Client
	registry *prometheus.Registry
	events   *countingRecorder
}

// startController runs the pod controller in its own manager until the test ends.
func startController(t testing.TB) *fixture {
	t.Helper()
	env := k8stest.Get(t)
	mgr, err := ctrl.NewManager(env.Config(), manager.Options{
		Scheme:  k8stest.Scheme(),
		Metrics: metricsserver.Options{BindAddress: "0"}, // no listener
	})
	require.NoError(t, err)
	f := &fixture{c: env.Client(t), registry: prometheus.NewRegistry()}
	f.events = &countingRecorder{next: mgr.GetEventRecorder("kuma-control-plane"), calls: map[string]int{}}
	require.NoError(t, podcontroller.Setup(mgr, podcontroller.Options{Registerer: f.registry, Recorder: f.events}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "manager")
		case <-time.After(wait):
			t.Error("the manager did not stop")
		}
	})
	return f
}

// countingRecorder passes Events on to the manager's recorder and counts
// them by regarding object, reason and note.
type countingRecorder struct {
	next  podcontroller.Recorder
	mu    sync.Mutex
	calls map[string]int
}

func (r *countingRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if m, ok := regarding.(metav1.Object); ok {
		r.mu.Lock()
		r.calls[m.GetNamespace()+"/"+m.GetName()+"|"+reason+"|"+fmt.Sprintf(note, args...)]++
		r.mu.Unlock()
	}
	r.next.Eventf(regarding, related, eventtype, reason, action, note, args...)
}

// count returns how many Events on the Pod had the reason and a note containing text.
func (r *countingRecorder) count(pod types.NamespacedName, reason, text string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.calls {
		parts := strings.SplitN(k, "|", 3)
		if parts[0] == pod.String() && parts[1] == reason && strings.Contains(parts[2], text) {
			n += c
		}
	}
	return n
}

// reconciles reads the controller's reconcile counter for a result.
func (f *fixture) reconciles(t testing.TB, result string) float64 {
	t.Helper()
	n, ok := f.counts(t)[result]
	if !ok {
		t.Fatalf("no k8s_pod_controller_reconciles_total{result=%q}", result)
	}
	return n
}

// counts reads the controller's reconcile counter, by result.
func (f *fixture) counts(t testing.TB) map[string]float64 {
	t.Helper()
	mfs, err := f.registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "k8s_pod_controller_reconciles_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// ensureNamespace creates the namespace or sets its labels.
func (f *fixture) ensureNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	err := f.c.Create(ctx, ns)
	if apierrors.IsAlreadyExists(err) {
		require.NoError(t, f.c.Get(ctx, client.ObjectKey{Name: name}, ns))
		ns.Labels = labels
		err = f.c.Update(ctx, ns)
	}
	require.NoError(t, err)
}

// newPod creates a Pod of a fresh name with one container declaring port
// 9000 as "http"; without status (no IP) until setRunning.
func (f *fixture) newPod(t *testing.T, ns, prefix string, labels, annotations map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: prefix + "-", Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "kuma-tcp-echo",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9000}},
		}}},
	}
	require.NoError(t, f.c.Create(t.Context(), pod))
	t.Cleanup(func() {
		err := f.c.Delete(context.Background(), pod, client.GracePeriodSeconds(0))
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete Pod %s: %v", pod.Name, err)
		}
	})
	return pod
}

// setRunning does what the kubelet would: the Pod runs and is ready on a
// fresh loopback address.
func (f *fixture) setRunning(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	ip := loopback.Host()
	pod.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		PodIP:      ip,
		PodIPs:     []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	require.NoError(t, f.c.Status().Update(t.Context(), pod))
	return ip
}

// update applies change to the current version of obj, retrying on conflicts.
func update[T client.Object](t *testing.T, c client.Client, obj T, change func(T)) {
	t.Helper()
	require.Eventually(t, func() bool {
		if err := c.Get(t.Context(), client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Logf("get %s: %v", obj.GetName(), err)
			return false
		}
		change(obj)
		err := c.Update(t.Context(), obj)
		if err != nil && !apierrors.IsConflict(err) {
			t.Logf("update %s: %v", obj.GetName(), err)
		}
		return err == nil
	}, wait, tick)
}

// dataplane reads the Pod's Dataplane: nil when there is none.
func (f *fixture) dataplane(t *testing.T, pod *corev1.Pod) *v1alpha1.Dataplane {
	t.Helper()
	var dp v1alpha1.Dataplane
	err := f.c.Get(t.Context(), client.ObjectKeyFromObject(pod), &dp)
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(t, err)
	return &dp
}

// awaitDataplane polls until the Pod's Dataplane exists and check accepts
// it (as a control-plane resource); it returns the custom resource.
func (f *fixture) awaitDataplane(t *testing.T, pod *corev1.Pod, check func(*resource.Object) error) *v1alpha1.Dataplane {
	t.Helper()
	var last error
	var out *v1alpha1.Dataplane
	ok := assert.Eventually(t, func() bool {
		dp := f.dataplane(t, pod)
		if dp == nil {
			last = errors.New("no Dataplane")
			return false
		}
		obj, err := names.ToObject(dp)
		if err != nil {
			last = err
			return false
		}
		if last = check(obj); last != nil {
			return false
		}
		out = dp
		return true
	}, wait, tick)
	if !ok {
		t.Fatalf("Dataplane of Pod %s: %v", pod.Name, last)
	}
	return out
}

func (f *fixture) awaitNoDataplane(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	require.Eventually(t, func() bool { return f.dataplane(t, pod) == nil }, wait, tick, "the Dataplane of Pod %s stays", pod.Name)
}

// guideMesh is the guide's mesh with metrics on.
func guideMesh() *resource.Object {
	m := resource.New("", "default", &resource.MeshSpec{Metrics: &resource.Metrics{EnabledBackend: "prometheus-1",
		Backends: []resource.MetricsBackend{{Name: "prometheus-1", Type: "prometheus"}}}})
	resource.ApplyDefaults(m)
	return m
}

// TestGuidePod follows a Pod of the guide's kuma-example namespace through
// its life: no IP, running, its Service changing, a bad annotation, its
// namespace leaving and rejoining the mesh, deletion.
func TestGuidePod(t *testing.T) {
	f := startController(t)
	ctx := t.Context()
	const ns = "kuma-example"
	f.ensureNamespace(t, ns, map[string]string{podcontroller.SidecarInjection: "enabled"})
	t.Cleanup(func() {
		// Leave the namespace in the mesh for the next test run (namespaces
		// are never deleted: no namespace controller runs).
		var n corev1.Namespace
		if err := f.c.Get(context.Background(), client.ObjectKey{Name: ns}, &n); err == nil {
			n.Labels = map[string]string{podcontroller.SidecarInjection: "enabled"}
			_ = f.c.Update(context.Background(), &n)
		}
	})

	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "kuma-tcp-echo-",
			Annotations: map[string]string{"8000.service.kuma.io/protocol": "http"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "kuma-tcp-echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8000, TargetPort: intstr.FromString("http")}},
		},
	}
	require.NoError(t, f.c.Create(ctx, svc))
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), svc) })

	pod := f.newPod(t, ns, "kuma-tcp-echo", map[string]string{"app": "kuma-tcp-echo", "version": "v1"}, map[string]string{
		podcontroller.MetricsPort: "1234",
		podcontroller.MetricsPath: "/non-standard-path",
	})
	podKey := client.ObjectKeyFromObject(pod)

	ip := f.setRunning(t, pod)
	dataplaneName := pod.Name + "." + ns
	tags := func(port string) map[string]string {
		return map[string]string{
			"app": "kuma-tcp-echo", "version": "v1",
			resource.ServiceTag:          svc.Name + "_kuma-example_svc_" + port,
			podcontroller.NamespaceTag:   ns,
			podcontroller.ServiceNameTag: svc.Name,
			podcontroller.ServicePortTag: port,
			resource.ProtocolTag:         map[string]string{"8000": "http", "8080": "tcp"}[port],
		}
	}
	var guide *resource.Object
	cr := f.awaitDataplane(t, pod, func(o *resource.Object) error {
		guide = o
		return nil
	})
	assert.Equal(t, "default", cr.Mesh)
	assert.Equal(t, dataplaneName, guide.Meta.Name)
	assert.Equal(t, "default", guide.Meta.Mesh)
	spec := guide.Dataplane()
	assert.Equal(t, ip, spec.Networking.Address)
	assert.Equal(t, []resource.Inbound{{Port: 9000, Tags: tags("8000")}}, spec.Networking.Inbound)
	require.NotNil(t, spec.Metrics)
	require.NotNil(t, spec.Metrics.Conf.Port)
	assert.Equal(t, uint32(1234), *spec.Metrics.Conf.Port)
	assert.Equal(t, "/non-standard-path", spec.Metrics.Conf.Path)
	require.Len(t, cr.OwnerReferences, 1)
	owner := cr.OwnerReferences[0]
	assert.Equal(t, metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
		Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true)}, owner)

	// What Prometheus is told through MADS about this Dataplane, as the
	// control plane reads it from its Kubernetes store.
	st, err := kubestore.New(ctx, k8stest.Get(t).Config(), kubestore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	var target *observabilityv1.MonitoringAssignment_Target
	require.Eventually(t, func() bool {
		target = madsTarget(t, st, dataplaneName)
		return target != nil
	}, wait, tick, "the Dataplane in the store")
	assert.Equal(t, ip+":1234", target.Address)
	assert.Equal(t, "/non-standard-path", target.MetricsPath)
	assert.Equal(t, pod.Name, target.Labels[mads.K8sNameLabel])
	assert.Equal(t, ns, target.Labels[mads.K8sNamespaceLabel])

	t.Run("a Service port change is reflected", func(t *testing.T) {
		update(t, f.c, svc, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}}
		})
		f.awaitDataplane(t, pod, func(o *resource.Object) error {
			if got := o.Dataplane().Networking.Inbound; !assert.ObjectsAreEqual([]resource.Inbound{{Port: 9000, Tags: tags("8080")}}, got) {
				return fmt.Errorf("inbounds %+v", got)
			}
			return nil
		})
	})

	t.Run("a bad annotation leaves the Dataplane and makes one Event", func(t *testing.T) {
		before := f.dataplane(t, pod)
		require.NotNil(t, before)
		update(t, f.c, pod, func(p *corev1.Pod) { p.Annotations[podcontroller.MetricsPort] = "12x4" })
		const text = `annotation "prometheus.metrics.kuma.io/port": "12x4" is not a port number (1-65535)`
		require.Eventually(t, func() bool { return hasEvent(t, f.c, pod, "InvalidAnnotation", text) }, wait, tick,
			"an Event on the Pod naming the annotation")
		// The broken Pod reconciled again (each change of it is): no more Events.
		for i := range 3 {
			invalid := f.reconciles(t, "invalid")
			update(t, f.c, pod, func(p *corev1.Pod) { p.Annotations["touched"] = fmt.Sprint(i) })
			require.Eventually(t, func() bool { return f.reconciles(t, "invalid") > invalid }, wait, tick)
		}
		assert.Equal(t, 1, f.events.count(podKey, "InvalidAnnotation", text))
		after := f.dataplane(t, pod)
		require.NotNil(t, after)
		assert.Equal(t, before.ResourceVersion, after.ResourceVersion, "the Dataplane was written")
		assert.JSONEq(t, string(before.Spec), string(after.Spec))

		update(t, f.c, pod, func(p *corev1.Pod) { p.Annotations[podcontroller.MetricsPort] = "4321" })
		f.awaitDataplane(t, pod, func(o *resource.Object) error {
			if p := o.Dataplane().Metrics.Conf.Port; p == nil || *p != 4321 {
				return fmt.Errorf("metrics port %v", p)
			}
			return nil
		})
	})

	t.Run("the namespace leaves and rejoins the mesh", func(t *testing.T) {
		f.ensureNamespace(t, ns, map[string]string{podcontroller.SidecarInjection: "disabled"})
		f.awaitNoDataplane(t, pod)
		f.ensureNamespace(t, ns, map[string]string{podcontroller.SidecarInjection: "enabled"})
		f.awaitDataplane(t, pod, func(*resource.Object) error { return nil })
	})

	t.Run("deleting the Pod deletes its Dataplane", func(t *testing.T) {
		require.NoError(t, f.c.Delete(ctx, pod, client.GracePeriodSeconds(0)))
		f.awaitNoDataplane(t, pod)
		require.Eventually(t, func() bool { return madsTarget(t, st, dataplaneName) == nil }, wait, tick,
			"the MADS target of the deleted Pod stays")
	})
}

// madsTarget is the MADS target of a Dataplane of mesh default as the
// control plane computes it from the store (metrics on in the guide's mesh):
// nil when there is none.
func madsTarget(t *testing.T, st store.Store, dataplane string) *observabilityv1.MonitoringAssignment_Target {
	t.Helper()
	list, err := st.List(t.Context(), resource.KindDataplane, store.ListOptions{Mesh: "default"})
	require.NoError(t, err)
	for _, a := range mads.Assignments([]*resource.Object{guideMesh()}, list.Items) {
		if a.Targets[0].Name == dataplane {
			return a.Targets[0]
		}
	}
	return nil
}

// hasEvent tells whether an Event on the Pod has the reason and a note containing text.
func hasEvent(t *testing.T, c client.Client, pod *corev1.Pod, reason, text string) bool {
	t.Helper()
	var list eventsv1.EventList
	if err := c.List(t.Context(), &list, client.InNamespace(pod.Namespace)); err != nil {
		t.Logf("list Events: %v", err)
		return false
	}
	for _, e := range list.Items {
		if e.Regarding.UID == pod.UID && e.Reason == reason && e.Type == corev1.EventTypeWarning && strings.Contains(e.Note, text) {
			return true
		}
	}
	return false
}

func ptrTo[T any](v T) *T { return &v }

// TestDataplaneKeptInStep: a Dataplane deleted or changed by hand is made
// again; a Service that stops selecting a Pod takes its inbound away, and
// with the last one the Dataplane (an Event says why).
func TestDataplaneKeptInStep(t *testing.T) {
	f := startController(t)
	ctx := t.Context()
	env := k8stest.Get(t)
	ns := env.Namespace(t, "instep", map[string]string{podcontroller.SidecarInjection: "enabled"})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "a"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	require.NoError(t, f.c.Create(ctx, svc))
	a := f.newPod(t, ns, "a", map[string]string{"app": "a"}, nil)
	b := f.newPod(t, ns, "b", map[string]string{"app": "b"}, nil)
	f.setRunning(t, a)
	f.setRunning(t, b)
	first := f.awaitDataplane(t, a, func(*resource.Object) error { return nil })

	require.NoError(t, f.c.Delete(ctx, first))
	f.awaitDataplane(t, a, func(*resource.Object) error { return nil })

	update(t, f.c, f.dataplane(t, a), func(dp *v1alpha1.Dataplane) {
		dp.Spec = []byte(`{"networking":{"address":"127.0.0.1","inbound":[{"port":1,"tags":{"kuma.io/service":"forged"}}]}}`)
	})
	f.awaitDataplane(t, a, func(o *resource.Object) error {
		if got := o.Dataplane().Networking.Inbound[0].Tags[resource.ServiceTag]; got != "web_"+ns+"_svc_80" {
			return fmt.Errorf("service %q", got)
		}
		return nil
	})

	update(t, f.c, svc, func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "b"} })
	f.awaitNoDataplane(t, a)
	f.awaitDataplane(t, b, func(*resource.Object) error { return nil })
	require.Eventually(t, func() bool { return hasEvent(t, f.c, a, "NoService", "no Service selects this Pod") }, wait, tick)
}

// TestTransparentPodGetsVIPs: a Pod annotated kuma.io/transparent-proxying
// (as the injector does) gets a Dataplane custom resource with
// networking.transparentProxying and, as its inbound's vip, the ClusterIP
// the API server gave its Service, with the Service's port (defaults
// applied, as to any stored Dataplane): the fields
// survive the CRD's schema and the round trip through the API server.
func TestTransparentPodGetsVIPs(t *testing.T) {
	f := startController(t)
	ctx := t.Context()
	const ns = "tproxy-example"
	f.ensureNamespace(t, ns, map[string]string{podcontroller.SidecarInjection: "enabled"})
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "echo-"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	require.NoError(t, f.c.Create(ctx, svc))
	t.Cleanup(func() { _ = f.c.Delete(context.Background(), svc) })
	require.NotEmpty(t, svc.Spec.ClusterIP, "the API server allocates a ClusterIP")
	vip := net.JoinHostPort(svc.Spec.ClusterIP, "80")

	pod := f.newPod(t, ns, "echo", map[string]string{"app": "echo"}, map[string]string{
		podcontroller.TransparentProxying: "enabled", podcontroller.TransparentProxyingOutboundPort: "15002",
	})
	f.setRunning(t, pod)
	f.awaitDataplane(t, pod, func(obj *resource.Object) error {
		nw := obj.Dataplane().Networking
		if nw.TransparentProxying == nil {
			return errors.New("no transparentProxying")
		}
		if got := *nw.TransparentProxying; got != (resource.TransparentProxying{RedirectPortInbound: 15006, RedirectPortOutbound: 15002}) {
			return fmt.Errorf("transparentProxying %+v", got)
		}
		if len(nw.Inbound) != 1 || !slices.Equal(nw.Inbound[0].VIPs, []string{vip}) {
			return fmt.Errorf("inbounds %+v, want one with vips [%s]", nw.Inbound, vip)
		}
		return nil
	})

	// Without the annotation the Dataplane loses both.
	update(t, f.c, pod, func(p *corev1.Pod) { delete(p.Annotations, podcontroller.TransparentProxying) })
	f.awaitDataplane(t, pod, func(obj *resource.Object) error {
		nw := obj.Dataplane().Networking
		if nw.TransparentProxying != nil || len(nw.Inbound[0].VIPs) > 0 {
			return fmt.Errorf("still transparent: %+v, vips %v", nw.TransparentProxying, nw.Inbound[0].VIPs)
		}
		return nil
	})
}
