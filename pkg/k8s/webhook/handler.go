package webhook

import (
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

// Handler serves the webhook at Path: it decodes an admission.k8s.io/v1
// AdmissionReview, lets v review its request and answers the review. A
// body that is no such review answers 400 (a method other than POST 405, a
// content type other than JSON 415) with a plain-text reason: the API
// server then reports the webhook as failing, and the write is refused.
func Handler(v *Validator, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "the admission webhook takes POST requests", http.StatusMethodNotAllowed)
			return
		}
		if ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || ct != "application/json" {
			http.Error(w, fmt.Sprintf("the admission webhook takes application/json, got %q", r.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
			return
		}
		review, err := readReview(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
		if err != nil {
			log.Warn("bad admission review", "remote", r.RemoteAddr, "err", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := review.Request
		resp := v.Review(r.Context(), req)
		if !resp.Allowed {
			log.Info("admission refused", "kind", req.Kind.Kind, "name", req.Name, "namespace", req.Namespace,
				"operation", req.Operation, "user", req.UserInfo.Username, "reason", resp.Result.Message)
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
	return mux
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
