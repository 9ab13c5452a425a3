package mads

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/kumametrics/mesh/pkg/resource"
)

// FuzzFetchRequest feeds arbitrary request bodies and fetch-timeout values
// to the long-poll handler. Whatever arrives, the answer is one of the
// documented ones: 200 with a DiscoveryResponse, 304, or a JSON error body
// (400, 413) that says what is wrong; nothing panics. A timeout that would
// hold the request is replaced by 0s, so every call answers at once.
func FuzzFetchRequest(f *testing.F) {
	h := start(f, nil)
	h.addDataplane(f, "web-1", "192.168.0.1")
	version := h.waitAssignments(f, 1).Version()

	for _, seed := range []struct{ body, timeout string }{
		{requestBody(""), "0s"},
		{requestBody(version), "0s"},
		{requestBody("stale"), ""},
		{`{"version_info": `, "0s"},
		{`{"version_info": 7}`, "0s"},
		{`{"node": {"id": "p", "metadata": {"a": [1, {"b": null}]}}, "resource_names": ["x"], "error_detail": {"code": 3, "message": "m"}}`, "0s"},
		{`{"unknown_field": 1}`, "0s"},
		{`{"typeUrl": "type.googleapis.com/other", "versionInfo": "` + version + `"}`, "0ms"},
		{`[]`, "1d"},
		{`null`, "-1s"},
		{"\xff\xfe", "soon"},
		{"", "0"},
	} {
		f.Add([]byte(seed.body), seed.timeout)
	}
	f.Fuzz(func(t *testing.T, body []byte, timeout string) {
		if d, err := resource.ParseDuration(timeout); err == nil && d > 0 {
			timeout = "0s"
		}
		req := httptest.NewRequest(http.MethodPost, FetchPath+"?fetch-timeout="+url.QueryEscape(timeout), bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.srv.handleFetch(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var resp discoveryv3.DiscoveryResponse
			if err := protojson.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("200 with a body that is not a DiscoveryResponse: %v", err)
			}
			if resp.GetVersionInfo() != version || len(resp.GetResources()) != 1 {
				t.Fatalf("200 with version %q and %d resources, want %q and 1", resp.GetVersionInfo(), len(resp.GetResources()), version)
			}
		case http.StatusNotModified:
			if rec.Body.Len() != 0 {
				t.Fatalf("304 with a body: %q", rec.Body.String())
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Title == "" || e.Details == "" {
				t.Fatalf("%d without a JSON error that says what is wrong: %q (%v)", rec.Code, rec.Body.String(), err)
			}
		default:
			t.Fatalf("unexpected status %d: %q", rec.Code, rec.Body.String())
		}
	})
}
