package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
)

// MaxRequestBytes bounds an AdmissionReview: the object and the old object,
// each at most etcd's 1.5 MiB request limit, and their envelope.
const MaxRequestBytes = 4 << 20

// reviewKind is the apiVersion and kind of an admission.k8s.io/v1 review.
var reviewKind = admissionv1.SchemeGroupVersion.WithKind("AdmissionReview")

// Reviewer decides admission requests: the Validator, or the sidecar
// injector (pkg/k8s/injector), which answers with a patch.
type Reviewer interface {
	Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse
}

// Handler serves the validating webhook at Path (Serve of v).
func Handler(v *Validator, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Path, Serve(v, log))
	return mux
}

// Serve speaks the admission protocol for r, at whatever path it is
// mounted: it decodes an admission.k8s.io/v1 AdmissionReview, lets r review
// its request and answers the review. A body that is no such review answers
// 400 (a method other than POST 405, a content type other than JSON 415)
// with a plain-text reason: the API server then reports the webhook as
// failing, and the write is refused.
func Serve(r Reviewer, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		if hr.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "the admission webhook takes POST requests", http.StatusMethodNotAllowed)
			return
		}
		if ct, _, err := mime.ParseMediaType(hr.Header.Get("Content-Type")); err != nil || ct != "application/json" {
			http.Error(w, fmt.Sprintf("the admission webhook takes application/json, got %q", hr.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
			return
		}
		review, err := readReview(http.MaxBytesReader(w, hr.Body, MaxRequestBytes))
		if err != nil {
			log.Warn("bad admission review", "remote", hr.RemoteAddr, "path", hr.URL.Path, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := review.Request
		resp := r.Review(hr.Context(), req)
		if !resp.Allowed {
			msg := ""
			if resp.Result != nil {
				msg = resp.Result.Message
			}
			log.Info("admission refused", "path", hr.URL.Path, "kind", req.Kind.Kind, "name", req.Name, "namespace", req.Namespace,
				"operation", req.Operation, "user", req.UserInfo.Username, "reason", msg)
		}
		out, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
		if err != nil {
			log.Error("encode admission response", "err", err)
			http.Error(w, "could not encode the admission response", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

// readReview decodes an admission.k8s.io/v1 AdmissionReview that carries a
// request.
func readReview(body io.Reader) (*admissionv1.AdmissionReview, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, fmt.Errorf("the admission review is larger than %d bytes", tooLarge.Limit)
		}
		return nil, fmt.Errorf("reading the admission review: %w", err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &review); err != nil {
		return nil, fmt.Errorf("the body is not an AdmissionReview: %w", err)
	}
	if gvk := review.GroupVersionKind(); gvk != reviewKind {
		return nil, fmt.Errorf("the body is a %q of %q, want an AdmissionReview of %q (admissionReviewVersions: [v1])",
			gvk.Kind, gvk.GroupVersion().String(), reviewKind.GroupVersion().String())
	}
	if review.Request == nil {
		return nil, errors.New("the AdmissionReview carries no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("the AdmissionReview's request has no uid")
	}
	return &review, nil
}
