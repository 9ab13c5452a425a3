// Package webhook is the control plane's validating admission webhook for
// the kuma.io resources on Kubernetes: the API server sends it every create
// and update of a Mesh, TrafficPermission or Dataplane (admission.k8s.io/v1
// AdmissionReview over HTTPS), and it refuses what the REST API would refuse,
// with the same messages at the same fields (in the Kubernetes form: `spec.`
// before a spec field, `metadata.name` for the name), so that nothing invalid
// is stored whoever writes it. Review is the decision; Serve speaks the
// admission protocol for any Reviewer (the Validator, the sidecar injector
// of pkg/k8s/injector) and Handler mounts the Validator at Path;
// CertDirTLS serves a mounted Secret's certificate; the control plane runs
// the HTTPS server (its admission server).
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// Path is where the webhook is served (the reference system's path).
const Path = "/validate-kuma-io-v1alpha1"

// Resources are the kinds the webhook is registered for, by their plural:
// those with a spec, which users write (the control plane alone writes the
// status-only DataplaneInsights and ControlPlaneInstances).
func Resources() []string {
	var out []string
	for _, k := range v1alpha1.Kinds() {
		if k.BodyField == "spec" {
			out = append(out, k.Plural)
		}
	}
	return out
}

// MeshReader reads meshes (a store.Store is one): a mesh-scoped resource is
// refused when its mesh does not exist, as the REST API refuses it.
type MeshReader interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
}

// Validator decides admission requests.
type Validator struct {
	// Names names namespaced resources as the Kubernetes store does (the
	// control plane's namespace).
	Names v1alpha1.Names
	// Meshes is where a new mesh-scoped resource's mesh is looked up:
	// APIMeshes on Kubernetes (a cache may not have seen a Mesh created a
	// moment before).
	Meshes MeshReader
}

// Review answers one admission request: allowed, or refused with the
// REST API's causes. Deletes, kinds of other groups and kinds the control
// plane does not know are allowed: they are not the webhook's to judge. An
// update that changes neither the mesh nor the spec (labels, annotations,
// owners, finalizers) is allowed as is; one that moves the resource to
// another mesh is refused (the mesh is part of its identity, as in the REST
// API's paths). A create is refused when its mesh does not exist.
func (v *Validator) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	obj, resp := v.Check(req)
	if resp != nil || obj == nil || req.Operation != admissionv1.Create || obj.Meta.Mesh == "" || v.Meshes == nil {
		return withUID(req, resp)
	}
	_, err := v.Meshes.Get(ctx, resource.KindMesh, resource.Key{Name: obj.Meta.Mesh})
	switch {
	case errors.Is(err, store.ErrNotFound):
		// The manager's cause, so that kubectl and the REST API say the same.
		return withUID(req, deny(req, []resource.Cause{{Field: "mesh", Message: fmt.Sprintf("mesh %q does not exist", obj.Meta.Mesh)}}))
	case err != nil:
		return withUID(req, &admissionv1.AdmissionResponse{Result: &metav1.Status{
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonServiceUnavailable, Code: http.StatusServiceUnavailable,
			Message: fmt.Sprintf("could not check that mesh %q exists: %v", obj.Meta.Mesh, err),
		}})
	}
	return withUID(req, nil)
}

func withUID(req *admissionv1.AdmissionRequest, resp *admissionv1.AdmissionResponse) *admissionv1.AdmissionResponse {
	if resp == nil {
		resp = &admissionv1.AdmissionResponse{Allowed: true}
	}
	resp.UID = req.UID
	return resp
}

// Check is the pure part of Review: everything but the mesh's existence.
// It returns the request's resource (nil when there is none to judge) and
// nil to allow, or a refusal.
func (v *Validator) Check(req *admissionv1.AdmissionRequest) (*resource.Object, *admissionv1.AdmissionResponse) {
	switch req.Operation {
	case admissionv1.Create, admissionv1.Update:
	default:
		return nil, nil
	}
	if req.Kind.Group != v1alpha1.Group || req.SubResource != "" {
		return nil, nil
	}
	k, ok := kindOf(req.Kind.Kind)
	if !ok {
		return nil, nil
	}
	if len(req.Object.Raw) == 0 {
		return nil, badRequest(fmt.Sprintf("the %s request carries no object", req.Operation))
	}
	obj, err := v.decode(k, req.Object.Raw)
	if err != nil {
		return nil, refuse(req, err)
	}
	if req.Operation == admissionv1.Update && len(req.OldObject.Raw) > 0 {
		old, err := v.decode(k, req.OldObject.Raw)
		if err == nil && old.Meta.Mesh != obj.Meta.Mesh {
			return nil, deny(req, []resource.Cause{{Field: "mesh", Message: fmt.Sprintf("cannot be changed from %q: delete the %s and create it in mesh %q", old.Meta.Mesh, k.Kind, obj.Meta.Mesh)}})
		}
		if err == nil && sameSpec(old, obj) {
			return nil, nil
		}
	}
	if err := resource.Validate(obj); err != nil {
		return nil, refuse(req, err)
	}
	return obj, nil
}

// sameSpec tells whether two resources of one kind have equal specs.
func sameSpec(a, b *resource.Object) bool {
	ja, errA := a.MarshalJSON()
	jb, errB := b.MarshalJSON()
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// refuse turns a decoding or validation error into a refusal.
func refuse(req *admissionv1.AdmissionRequest, err error) *admissionv1.AdmissionResponse {
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		return deny(req, ve.Causes)
	}
	return badRequest(err.Error())
}

// deny refuses a request as invalid: the causes name the fields of the
// Kubernetes form, and the message lists them (kubectl shows either).
func deny(req *admissionv1.AdmissionRequest, causes []resource.Cause) *admissionv1.AdmissionResponse {
	causes = resource.KubernetesCauses(causes)
	details := &metav1.StatusDetails{Name: req.Name, Group: req.Kind.Group, Kind: req.Kind.Kind}
	parts := make([]string, len(causes))
	for i, c := range causes {
		details.Causes = append(details.Causes, metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: c.Field, Message: c.Message})
		if c.Field == "" {
			parts[i] = c.Message
		} else {
			parts[i] = c.Field + ": " + c.Message
		}
	}
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Reason: metav1.StatusReasonInvalid, Code: http.StatusUnprocessableEntity,
		Message: strings.Join(parts, "; "), Details: details,
	}}
}

func badRequest(msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{
		Status: metav1.StatusFailure, Reason: metav1.StatusReasonBadRequest, Code: http.StatusBadRequest, Message: msg,
	}}
}
