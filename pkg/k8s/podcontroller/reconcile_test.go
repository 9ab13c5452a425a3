package podcontroller

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
)

// These tests drive one reconcile at a time on controller-runtime's
// in-memory client, for the cases a real API server cannot order
// deterministically; controller_test.go runs the controller against a real
// one.

type recordedEvent struct{ regarding, reason, note string }

type eventLog struct {
	mu     sync.Mutex
	events []recordedEvent
}

func (l *eventLog) Eventf(regarding, _ runtime.Object, _, reason, _, note string, args ...any) {
	m := regarding.(metav1.Object)
	l.mu.Lock()
	l.events = append(l.events, recordedEvent{m.GetNamespace() + "/" + m.GetName(), reason, fmt.Sprintf(note, args...)})
	l.mu.Unlock()
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	require.NoError(t, clientgoscheme.AddToScheme(s))
	require.NoError(t, v1alpha1.AddToScheme(s))
	return s
}

type reconcileFixture struct {
	c      client.Client
	r      *Reconciler
	m      *controllerMetrics
	events *eventLog
}

func newReconcileFixture(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) *reconcileFixture {
	b := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	m, err := newControllerMetrics(nil)
	require.NoError(t, err)
	events := &eventLog{}
	return &reconcileFixture{c: c, r: newReconciler(c, events, m, slog.New(slog.DiscardHandler)), m: m, events: events}
}

func (f *reconcileFixture) reconcile(t *testing.T, key types.NamespacedName) reconcile.Result {
	t.Helper()
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key})
	require.NoError(t, err)
	return res
}

func (f *reconcileFixture) count(result string) float64 {
	return testutil.ToFloat64(f.m.reconciles.WithLabelValues(result))
}

func (f *reconcileFixture) dataplane(t *testing.T, key types.NamespacedName) *v1alpha1.Dataplane {
	t.Helper()
	var dp v1alpha1.Dataplane
	err := f.c.Get(context.Background(), key, &dp)
	if apierrors.IsNotFound(err) {
		return nil
	}
	require.NoError(t, err)
	return &dp
}

func runningPod(uid types.UID, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := testPod(mods...)
	p.UID = uid
	return p
}

func storedDataplane(owner *metav1.OwnerReference) *v1alpha1.Dataplane {
	dp := &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "echo-1"},
		Mesh:       "default",
		Spec:       []byte(`{"networking":{"address":"127.0.0.1","inbound":[{"port":1,"tags":{"kuma.io/service":"old"}}]}}`),
	}
	if owner != nil {
		dp.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	return dp
}

func podOwner(uid types.UID) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: "echo-1", UID: uid, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}
}

var podKey = types.NamespacedName{Namespace: testNS, Name: "echo-1"}

func echoService() *corev1.Service { s := testService("echo"); return &s }

func TestReconcileCreatesThenLeavesUnchanged(t *testing.T) {
	f := newReconcileFixture(t, nil, enabledNS(), echoService(), runningPod("u1"))
	f.reconcile(t, podKey)
	assert.Equal(t, 1.0, f.count(resultCreated))
	dp := f.dataplane(t, podKey)
	require.NotNil(t, dp)
	assert.Equal(t, []metav1.OwnerReference{*podOwner("u1")}, dp.OwnerReferences)

	f.reconcile(t, podKey)
	assert.Equal(t, 1.0, f.count(resultUnchanged))
	assert.Equal(t, dp.ResourceVersion, f.dataplane(t, podKey).ResourceVersion, "an unchanged Dataplane is not written")
}

func TestReconcileAdoptsTheDataplaneOfAFormerPod(t *testing.T) {
	f := newReconcileFixture(t, nil, enabledNS(), echoService(), runningPod("new"), storedDataplane(podOwner("old")))
	f.reconcile(t, podKey)
	assert.Equal(t, 1.0, f.count(resultUpdated))
	dp := f.dataplane(t, podKey)
	assert.Equal(t, []metav1.OwnerReference{*podOwner("new")}, dp.OwnerReferences)
	assert.Contains(t, string(dp.Spec), "echo_kuma-example_svc_80")
}

func TestReconcileDeletesOnlyItsOwnDataplanes(t *testing.T) {
	rs := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "echo-1", UID: "rs", Controller: ptr.To(true)}
	cases := []struct {
		name    string
		objs    []client.Object
		deleted bool
	}{
		{"Pod gone, its Dataplane goes", []client.Object{storedDataplane(podOwner("u1"))}, true},
		{"Pod gone, a Dataplane of no owner stays", []client.Object{storedDataplane(nil)}, false},
		{"Pod gone, a Dataplane of another controller stays", []client.Object{storedDataplane(rs)}, false},
		{"Pod left the mesh, its Dataplane goes", []client.Object{namespace(nil, nil), runningPod("u1"), storedDataplane(podOwner("u1"))}, true},
		{"Pod out of the mesh, a Dataplane of no owner stays", []client.Object{namespace(nil, nil), runningPod("u1"), storedDataplane(nil)}, false},
		{"Pod out of the mesh, the Dataplane of a former Pod stays", []client.Object{namespace(nil, nil), runningPod("u2"), storedDataplane(podOwner("u1"))}, false},
		{"Pod lost its IP", []client.Object{enabledNS(), runningPod("u1", func(p *corev1.Pod) { p.Status.PodIP = "" }), storedDataplane(podOwner("u1"))}, true},
		{"Pod has no Service any more", []client.Object{enabledNS(), runningPod("u1"), storedDataplane(podOwner("u1"))}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newReconcileFixture(t, nil, c.objs...)
			f.reconcile(t, podKey)
			if c.deleted {
				assert.Nil(t, f.dataplane(t, podKey))
				assert.Equal(t, 1.0, f.count(resultDeleted))
			} else {
				assert.NotNil(t, f.dataplane(t, podKey))
				assert.Equal(t, 1.0, f.count(resultNone))
			}
		})
	}
}

func TestReconcileProblemsKeepTheStoredDataplane(t *testing.T) {
	pod := runningPod("u1", withAnnotations(MetricsPort, "http"))
	stored := storedDataplane(podOwner("u1"))
	f := newReconcileFixture(t, nil, enabledNS(), echoService(), pod, stored)
	for range 3 {
		f.reconcile(t, podKey)
	}
	assert.Equal(t, 3.0, f.count(resultInvalid))
	dp := f.dataplane(t, podKey)
	assert.JSONEq(t, string(stored.Spec), string(dp.Spec))
	assert.Equal(t, []recordedEvent{{testNS + "/echo-1", ReasonInvalidAnnotation,
		`annotation "prometheus.metrics.kuma.io/port": "http" is not a port number (1-65535); the Pod's Dataplane is left as it was`}},
		f.events.events, "one Event however many reconciles")
}

func TestReconcileConflictRetries(t *testing.T) {
	conflicts := 0
	funcs := &interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
		if conflicts == 0 {
			conflicts++
			return apierrors.NewConflict(schema.GroupResource{Group: "kuma.io", Resource: "dataplanes"}, obj.GetName(), fmt.Errorf("the object has been modified"))
		}
		return c.Update(ctx, obj, opts...)
	}}
	f := newReconcileFixture(t, funcs, enabledNS(), echoService(), runningPod("u1"), storedDataplane(podOwner("u1")))
	res := f.reconcile(t, podKey)
	assert.Equal(t, reconcile.Result{RequeueAfter: ConflictRetry}, res)
	assert.Equal(t, 1.0, f.count(resultConflict))
	f.reconcile(t, podKey)
	assert.Equal(t, 1.0, f.count(resultUpdated))
}

func TestReconcileErrorsAreCounted(t *testing.T) {
	funcs := &interceptor.Funcs{List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
		return apierrors.NewServiceUnavailable("etcd is away")
	}}
	f := newReconcileFixture(t, funcs, enabledNS(), runningPod("u1"))
	_, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: podKey})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "list Services of namespace kuma-example")
	assert.Equal(t, 1.0, f.count(resultError))
}
