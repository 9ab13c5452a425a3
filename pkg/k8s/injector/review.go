package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// NamespaceReader reads a Namespace (a controller-runtime client is one).
type NamespaceReader interface {
	Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error
}

// MeshReader reads meshes (a store.Store, or webhook.APIMeshes).
type MeshReader interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
}

// Injector answers the admission requests of Pod creations: allowed with
// the injection's JSON patch, allowed as is, or refused naming the
// annotation at fault. Serve it with webhook.Serve.
type Injector struct {
	Settings Settings
	// CACertFile, when set, is read at every review for Settings.CACert:
	// the dataplane server's CA may be generated after the admission server
	// starts, and a mounted Secret may be renewed.
	CACertFile string
	Namespaces NamespaceReader
	Meshes     MeshReader
}

// Review implements webhook.Reviewer. Anything but the creation of a v1
// Pod is allowed unchanged. A Pod whose Namespace or Mesh cannot be read is
// refused as unavailable: the webhook fails closed, and the Pod's
// controller retries.
func (i *Injector) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := i.review(ctx, req)
	resp.UID = req.UID
	return resp
}

func (i *Injector) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create || req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return status(http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("sidecar injection: the request's object is not a Pod: %v", err))
	}
	inp := Input{Pod: &pod, Namespace: req.Namespace}
	if inp.Namespace == "" {
		inp.Namespace = pod.Namespace
	}
	var ns corev1.Namespace
	switch err := i.Namespaces.Get(ctx, client.ObjectKey{Name: inp.Namespace}, &ns); {
	case err == nil:
		inp.NamespaceObject = &ns
	case apierrors.IsNotFound(err):
	default:
		return status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("sidecar injection: could not read Namespace %q: %v", inp.Namespace, err))
	}
	if mesh := MeshName(inp); mesh != "" {
		switch m, err := i.Meshes.Get(ctx, resource.KindMesh, resource.Key{Name: mesh}); {
		case err == nil:
			inp.Mesh = m.Mesh()
		case errors.Is(err, store.ErrNotFound):
		default:
			return status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
				fmt.Sprintf("sidecar injection: could not read Mesh %q: %v", mesh, err))
		}
	}
	s := i.Settings
	if i.CACertFile != "" {
		ca, err := os.ReadFile(i.CACertFile)
		if err == nil {
			_, err = pki.ParseCertificates(ca)
		}
		if err != nil {
			return status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
				fmt.Sprintf("sidecar injection: the control plane's CA for proxies (runtime.kubernetes.injector.caCertFile): %v", err))
		}
		s.CACert = ca
	}
	r := Inject(inp, s)
	switch {
	case len(r.Problems) > 0:
		return refuse(req.Name, r.Problems)
	case r.Pod == nil:
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	patch, err := Patch(&pod, r.Pod)
	if err != nil {
		return status(http.StatusInternalServerError, metav1.StatusReasonInternalError, "sidecar injection: "+err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt,
		AuditAnnotations: map[string]string{"injected": "kuma-sidecar"}}
}

// refuse turns a Pod's problems into a refusal that names each annotation
// or label (kubectl prints the message).
func refuse(pod string, problems []podcontroller.Problem) *admissionv1.AdmissionResponse {
	msgs := make([]string, len(problems))
	details := &metav1.StatusDetails{Kind: "Pod", Name: pod}
	for i, p := range problems {
		msgs[i] = p.Error()
		field := ""
		switch {
		case p.Key != "" && p.Object == "" && p.Label:
			field = "metadata.labels[" + p.Key + "]"
		case p.Key != "" && p.Object == "":
			field = "metadata.annotations[" + p.Key + "]"
		}
		details.Causes = append(details.Causes, metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: field, Message: p.Error()})
	}
	resp := status(http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "sidecar injection: "+strings.Join(msgs, "; "))
	resp.Result.Details = details
	return resp
}

func status(code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{Status: metav1.StatusFailure, Reason: reason, Code: code, Message: msg}}
}
