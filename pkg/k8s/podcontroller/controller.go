package podcontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Options configure the pod controller.
type Options struct {
	// Log receives the controller's log lines (slog.Default() when nil).
	Log *slog.Logger
	// Registerer receives the controller's metrics (none when nil).
	Registerer prometheus.Registerer
	// Workers is how many Pods are reconciled at once (default 4).
	Workers int
	// EventSource is the component named in the Events on Pods (default
	// kuma-control-plane).
	EventSource string
	// Recorder records the Events on Pods (default: the manager's, for
	// EventSource).
	Recorder Recorder
}

// ConflictRetry is how soon a Pod is reconciled again when its Dataplane
// changed between the controller's read and its write (its cache was behind).
const ConflictRetry = 100 * time.Millisecond

// eventAction is the action the controller's Events on Pods are about.
const eventAction = "GenerateDataplane"

// Recorder records Events (events.k8s.io); the manager's
// GetEventRecorder gives one.
type Recorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Reconciler keeps the Dataplane custom resource of every Pod as Convert
// computes it: one reconcile per Pod, triggered by the Pod, the Services
// selecting it (before and after a change), its Namespace's labels and
// annotations, and its Dataplane.
//
// The Dataplane is owned by its Pod (controller reference, blockOwnerDeletion),
// so Kubernetes' garbage collector removes it with the Pod. The controller
// does not rely on that: it deletes the Dataplane itself when the Pod is
// gone or stops qualifying, which is what makes a deleted Pod's MADS target
// disappear at once (and where no garbage collector runs, as in the tests,
// at all).
type Reconciler struct {
	client   client.Client
	recorder Recorder
	reported *reportedProblems
	metrics  *controllerMetrics
	log      *slog.Logger
}

// Setup adds the pod controller to mgr. The manager's scheme must know the
// core kinds and kuma.io/v1alpha1, and the Dataplane CRD must be installed.
func Setup(mgr ctrl.Manager, opts Options) error {
	for _, obj := range []client.Object{&corev1.Pod{}, &v1alpha1.Dataplane{}} {
		if _, err := apiutil.GVKForObject(obj, mgr.GetScheme()); err != nil {
			return fmt.Errorf("pod controller: the manager's scheme lacks a kind: %w", err)
		}
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.EventSource == "" {
		opts.EventSource = "kuma-control-plane"
	}
	m, err := newControllerMetrics(opts.Registerer)
	if err != nil {
		return err
	}
	if opts.Recorder == nil {
		opts.Recorder = mgr.GetEventRecorder(opts.EventSource)
	}
	r := newReconciler(mgr.GetClient(), opts.Recorder, m, opts.Log)
	return ctrl.NewControllerManagedBy(mgr).
		Named("pod-controller").
		For(&corev1.Pod{}).
		Owns(&v1alpha1.Dataplane{}).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.podsOfService)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.podsOfNamespace),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(event.CreateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
				UpdateFunc:  namespaceChanged,
			})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.Workers,
			// Several managers may run in one process (tests); the name only
			// labels controller-runtime's own metrics.
			SkipNameValidation: ptr.To(true),
		}).
		Complete(r)
}

func newReconciler(c client.Client, rec Recorder, m *controllerMetrics, log *slog.Logger) *Reconciler {
	return &Reconciler{
		client:   c,
		recorder: rec,
		reported: newReportedProblems(),
		metrics:  m,
		log:      log.With("component", "pod-controller"),
	}
}

// namespaceChanged: only labels and annotations of a Namespace matter
// (kuma.io/sidecar-injection, kuma.io/mesh).
func namespaceChanged(e event.UpdateEvent) bool {
	return !equalMaps(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
		!equalMaps(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations())
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// podsOfService maps a Service (each of its versions, on an update) to the
// Pods its selector selects.
func (r *Reconciler) podsOfService(ctx context.Context, obj client.Object) []reconcile.Request {
	svc, ok := obj.(*corev1.Service)
	if !ok || len(svc.Spec.Selector) == 0 {
		return nil
	}
	return r.podRequests(ctx, client.InNamespace(svc.Namespace), client.MatchingLabels(svc.Spec.Selector))
}

// podsOfNamespace maps a Namespace to all its Pods.
func (r *Reconciler) podsOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.podRequests(ctx, client.InNamespace(obj.GetName()))
}

func (r *Reconciler) podRequests(ctx context.Context, opts ...client.ListOption) []reconcile.Request {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, opts...); err != nil {
		r.log.Error("list Pods to reconcile", "error", err)
		return nil
	}
	reqs := make([]reconcile.Request, len(pods.Items))
	for i := range pods.Items {
		reqs[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pods.Items[i].Namespace, Name: pods.Items[i].Name}}
	}
	return reqs
}

// Reconcile brings the Dataplane of one Pod in line with Convert.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req)
	switch {
	case err != nil && ctx.Err() != nil:
		// The controller is stopping: the Pod is reconciled at the next start.
		return reconcile.Result{}, nil
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		// Our cache has not seen a write yet: read again shortly.
		r.metrics.reconciles.WithLabelValues(resultConflict).Inc()
		r.log.Debug("Dataplane changed meanwhile, retrying", "pod", req.NamespacedName, "error", err)
		return reconcile.Result{RequeueAfter: ConflictRetry}, nil
	case err != nil:
		r.metrics.reconciles.WithLabelValues(resultError).Inc()
		return reconcile.Result{}, fmt.Errorf("reconcile Pod %s: %w", req.NamespacedName, err)
	}
	r.metrics.reconciles.WithLabelValues(res).Inc()
	return reconcile.Result{}, nil
}

// Results of a reconcile, as counted.
const (
	resultCreated   = "created"
	resultUpdated   = "updated"
	resultUnchanged = "unchanged"
	resultDeleted   = "deleted"
	resultNone      = "none" // no Dataplane, none stored
	resultInvalid   = "invalid"
	resultConflict  = "conflict"
	resultError     = "error"
)

func (r *Reconciler) reconcile(ctx context.Context, req reconcile.Request) (string, error) {
	var pod corev1.Pod
	if err := r.client.Get(ctx, req.NamespacedName, &pod); err != nil {
		if !apierrors.IsNotFound(err) {
			return "", fmt.Errorf("get Pod: %w", err)
		}
		r.reported.forget(req.NamespacedName)
		return r.deleteDataplane(ctx, req.NamespacedName, "", "the Pod is gone")
	}
	var ns *corev1.Namespace
	var nsObj corev1.Namespace
	switch err := r.client.Get(ctx, types.NamespacedName{Name: pod.Namespace}, &nsObj); {
	case err == nil:
		ns = &nsObj
	case !apierrors.IsNotFound(err):
		return "", fmt.Errorf("get Namespace %s: %w", pod.Namespace, err)
	}
	var services corev1.ServiceList
	if err := r.client.List(ctx, &services, client.InNamespace(pod.Namespace)); err != nil {
		return "", fmt.Errorf("list Services of namespace %s: %w", pod.Namespace, err)
	}

	out := Convert(&pod, services.Items, ns)
	r.report(&pod, out)
	switch {
	case len(out.Problems) > 0:
		return resultInvalid, nil
	case out.Dataplane == nil:
		return r.deleteDataplane(ctx, req.NamespacedName, pod.UID, out.Skip)
	}
	return r.applyDataplane(ctx, &pod, out.Dataplane)
}

// report records an Event on the Pod for every problem and warning it has
// not been told of yet.
func (r *Reconciler) report(pod *corev1.Pod, out Result) {
	all := make([]Problem, 0, len(out.Problems)+len(out.Warnings))
	all = append(all, out.Problems...)
	all = append(all, out.Warnings...)
	for _, p := range r.reported.news(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, pod.UID, all) {
		msg := p.Error()
		if p.Reason != ReasonNoService && p.Reason != ReasonPortConflict {
			msg += "; the Pod's Dataplane is left as it was"
		}
		r.log.Warn("Pod cannot be turned into a Dataplane as it is", "pod", pod.Namespace+"/"+pod.Name, "reason", p.Reason, "problem", p.Error())
		r.recorder.Eventf(pod, nil, corev1.EventTypeWarning, p.Reason, eventAction, "%s", msg)
	}
}

// applyDataplane creates or updates the Pod's Dataplane, writing only when
// its mesh, spec or owner differ.
func (r *Reconciler) applyDataplane(ctx context.Context, pod *corev1.Pod, obj *resource.Object) (string, error) {
	spec, err := json.Marshal(obj.Spec)
	if err != nil {
		return "", fmt.Errorf("marshal the Dataplane of Pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	owner := metav1.OwnerReference{
		APIVersion:         "v1",
		Kind:               "Pod",
		Name:               pod.Name,
		UID:                pod.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
	var stored v1alpha1.Dataplane
	err = r.client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}, &stored)
	switch {
	case apierrors.IsNotFound(err):
		dp := &v1alpha1.Dataplane{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, OwnerReferences: []metav1.OwnerReference{owner}},
			Mesh:       obj.Meta.Mesh,
			Spec:       spec,
		}
		if err := r.client.Create(ctx, dp); err != nil {
			return "", fmt.Errorf("create Dataplane: %w", err)
		}
		r.log.Info("Dataplane created", "pod", pod.Namespace+"/"+pod.Name, "mesh", obj.Meta.Mesh, "dataplane", obj.Meta.Name)
		return resultCreated, nil
	case err != nil:
		return "", fmt.Errorf("get Dataplane: %w", err)
	}
	owners := withController(stored.OwnerReferences, owner)
	sameSpec, err := sameJSON(stored.Spec, spec)
	if err != nil {
		return "", err
	}
	if sameSpec && stored.Mesh == obj.Meta.Mesh && owners == nil {
		return resultUnchanged, nil
	}
	updated := stored.DeepCopy()
	updated.Mesh = obj.Meta.Mesh
	updated.Spec = spec
	if owners != nil {
		updated.OwnerReferences = owners
	}
	// The update carries the resourceVersion read: a concurrent change
	// makes it fail with a conflict, and the Pod is reconciled again.
	if err := r.client.Update(ctx, updated); err != nil {
		return "", fmt.Errorf("update Dataplane: %w", err)
	}
	r.log.Info("Dataplane updated", "pod", pod.Namespace+"/"+pod.Name, "mesh", obj.Meta.Mesh, "dataplane", obj.Meta.Name)
	return resultUpdated, nil
}

// withController returns refs with owner as their only controller, or nil
// when refs already are so.
func withController(refs []metav1.OwnerReference, owner metav1.OwnerReference) []metav1.OwnerReference {
	found := false
	out := make([]metav1.OwnerReference, 0, len(refs)+1)
	for _, ref := range refs {
		if ref.Controller == nil || !*ref.Controller {
			out = append(out, ref)
			continue
		}
		if ref.UID == owner.UID && ref.APIVersion == owner.APIVersion && ref.Kind == owner.Kind && ref.Name == owner.Name &&
			ref.BlockOwnerDeletion != nil && *ref.BlockOwnerDeletion && !found {
			found = true
			out = append(out, ref)
		}
	}
	if found && len(out) == len(refs) {
		return nil
	}
	if !found {
		out = append(out, owner)
	}
	return out
}

// sameJSON compares two JSON documents by content, not bytes (the API server
// may store keys in another order).
func sameJSON(a, b []byte) (bool, error) {
	if bytes.Equal(a, b) {
		return true, nil
	}
	var x, y any
	if len(a) > 0 {
		if err := json.Unmarshal(a, &x); err != nil {
			// A stored spec that is not JSON is simply different.
			return false, nil
		}
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return false, fmt.Errorf("compare Dataplane specs: %w", err)
	}
	ca, _ := json.Marshal(x)
	cb, _ := json.Marshal(y)
	return bytes.Equal(ca, cb), nil
}

// deleteDataplane removes the Dataplane of the Pod at key, if the Pod (of uid,
// or any Pod of that name when uid is empty) controls it: a Dataplane
// someone else made under that name is not the controller's to delete.
func (r *Reconciler) deleteDataplane(ctx context.Context, key types.NamespacedName, uid types.UID, why string) (string, error) {
	var stored v1alpha1.Dataplane
	if err := r.client.Get(ctx, key, &stored); err != nil {
		if apierrors.IsNotFound(err) {
			return resultNone, nil
		}
		return "", fmt.Errorf("get Dataplane: %w", err)
	}
	ref := metav1.GetControllerOf(&stored)
	if ref == nil || ref.Kind != "Pod" || ref.APIVersion != "v1" || ref.Name != key.Name || (uid != "" && ref.UID != uid) {
		return resultNone, nil
	}
	err := r.client.Delete(ctx, &stored, client.Preconditions{UID: &stored.UID, ResourceVersion: &stored.ResourceVersion})
	switch {
	case apierrors.IsNotFound(err):
		return resultNone, nil
	case err != nil:
		return "", fmt.Errorf("delete Dataplane: %w", err)
	}
	r.log.Info("Dataplane deleted", "pod", key.String(), "why", why)
	return resultDeleted, nil
}

type controllerMetrics struct {
	reconciles *prometheus.CounterVec
}

func newControllerMetrics(reg prometheus.Registerer) (*controllerMetrics, error) {
	m := &controllerMetrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "k8s_pod_controller_reconciles_total",
			Help: "Reconciles of Pods into Dataplanes by result: created, updated, unchanged, deleted, none (no Dataplane, none stored), invalid (an annotation the Pod's Dataplane cannot be made from), conflict (retried), error.",
		}, []string{"result"}),
	}
	for _, r := range []string{resultCreated, resultUpdated, resultUnchanged, resultDeleted, resultNone, resultInvalid, resultConflict, resultError} {
		m.reconciles.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(m.reconciles); err != nil {
			return nil, fmt.Errorf("pod controller metrics: %w", err)
		}
	}
	return m, nil
}
