package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kumametrics/mesh/pkg/k8s/webhook"
)

func serveWebhook(t *testing.T) *httptest.Server {
	t.Helper()
	st, _ := newStore(t)
	srv := httptest.NewServer(webhook.Handler(&webhook.Validator{Meshes: st}, nil))
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, srv *httptest.Server, method, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+webhook.Path, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, b
}

func reviewOf(t *testing.T, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  req,
	})
	require.NoError(t, err)
	return b
}

func TestAdmissionReviewRoundTrip(t *testing.T) {
	srv := serveWebhook(t)
	for _, tc := range []struct {
		name    string
		doc     string
		allowed bool
	}{
		{"allowed", tpDefault, true},
		{"refused", strings.Replace(tpDefault, "mesh: default", "mesh: payments", 1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, admissionv1.Create, tc.doc, "")
			code, body := post(t, srv, http.MethodPost, "application/json", reviewOf(t, req))
			require.Equal(t, http.StatusOK, code, string(body))
			// What the API server reads: an admission.k8s.io/v1 review with
			// the request's uid, and for a refusal its status.
			var got admissionv1.AdmissionReview
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(&got), string(body))
			require.Equal(t, "admission.k8s.io/v1", got.APIVersion)
			require.Equal(t, "AdmissionReview", got.Kind)
			require.Nil(t, got.Request)
			require.NotNil(t, got.Response)
			require.Equal(t, req.UID, got.Response.UID)
			require.Equal(t, tc.allowed, got.Response.Allowed)
			want := (&webhook.Validator{Meshes: mustStore(t)}).Review(context.Background(), req)
			require.Equal(t, want, got.Response)
		})
	}
}

func mustStore(t *testing.T) webhook.MeshReader {
	st, _ := newStore(t)
	return st
}

func TestBadAdmissionRequests(t *testing.T) {
	srv := serveWebhook(t)
	valid := reviewOf(t, request(t, admissionv1.Create, tpDefault, ""))
	withoutUID := request(t, admissionv1.Create, tpDefault, "")
	withoutUID.UID = ""
	for _, tc := range []struct {
		name, method, contentType string
		body                      []byte
		code                      int
		want                      string
	}{
		{"garbage", http.MethodPost, "application/json", []byte("\x00\xffnot json"), http.StatusBadRequest, "the body is not an AdmissionReview"},
		{"empty", http.MethodPost, "application/json", nil, http.StatusBadRequest, "the body is not an AdmissionReview"},
		{"a JSON array", http.MethodPost, "application/json", []byte(`[1,2]`), http.StatusBadRequest, "the body is not an AdmissionReview"},
		{"v1beta1", http.MethodPost, "application/json", bytes.Replace(valid, []byte(`"admission.k8s.io/v1"`), []byte(`"admission.k8s.io/v1beta1"`), 1),
			http.StatusBadRequest, `want an AdmissionReview of "admission.k8s.io/v1"`},
		{"another kind", http.MethodPost, "application/json", bytes.Replace(valid, []byte(`"AdmissionReview"`), []byte(`"ConversionReview"`), 1),
			http.StatusBadRequest, `the body is a "ConversionReview"`},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest, "carries no request"},
		{"no uid", http.MethodPost, "application/json", reviewOf(t, withoutUID), http.StatusBadRequest, "has no uid"},
		{"a wrongly typed field", http.MethodPost, "application/json", bytes.Replace(valid, []byte(`"operation":"CREATE"`), []byte(`"operation":7`), 1),
			http.StatusBadRequest, "the body is not an AdmissionReview"},
		{"too large", http.MethodPost, "application/json", append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), webhook.MaxRequestBytes)...), `"}`...),
			http.StatusBadRequest, "larger than 4194304 bytes"},
		{"GET", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "POST"},
		{"YAML", http.MethodPost, "application/yaml", valid, http.StatusUnsupportedMediaType, "application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, srv, tc.method, tc.contentType, tc.body)
			require.Equal(t, tc.code, code, string(body))
			require.Contains(t, string(body), tc.want)
		})
	}
	// The server still answers.
	code, body := post(t, srv, http.MethodPost, "application/json; charset=utf-8", valid)
	require.Equal(t, http.StatusOK, code, string(body))
}

// FuzzReview: whatever object a request carries, the review answers and
// never panics; a refusal always says why.
func FuzzReview(f *testing.F) {
	for _, doc := range []string{tpDefault, `{"apiVersion":"kuma.io/v1alpha1","kind":"Mesh","metadata":{"name":"x"},"spec":{"metrics":{"backends":[{"conf":{"port":0}}]}}}`, `{}`, `null`, `[]`} {
		f.Add("TrafficPermission", []byte(doc))
		f.Add("Mesh", []byte(doc))
		f.Add("Dataplane", []byte(doc))
	}
	f.Fuzz(func(t *testing.T, kind string, raw []byte) {
		req := &admissionv1.AdmissionRequest{
			UID: "u", Operation: admissionv1.Create, Name: "n", Namespace: "ns",
			Kind: metav1.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: kind},
		}
		req.Object.Raw = raw
		req.OldObject.Raw = raw
		for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
			req.Operation = op
			resp := (&webhook.Validator{}).Review(context.Background(), req)
			if !resp.Allowed && (resp.Result == nil || resp.Result.Message == "") {
				t.Fatalf("refused without a reason: %+v", resp)
			}
		}
	})
}
