package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

const guideDir = "../../resource/testdata/guide"

// newStore is a store with the default mesh, as a control plane starts.
func newStore(t *testing.T) (store.Store, *manager.Manager) {
	t.Helper()
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	return st, mgr
}

// asServerObject is doc (YAML) as the API server sends it to a webhook:
// JSON, with the fields the server fills into metadata.
func asServerObject(t *testing.T, doc string) (raw []byte, kind, name, namespace string) {
	t.Helper()
	var obj map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	name, _ = meta["name"].(string)
	namespace, _ = meta["namespace"].(string)
	kind, _ = obj["kind"].(string)
	meta["uid"] = "5f0c1e9a-2b1d-4c55-9d0e-0a4b6c8e7f21"
	meta["resourceVersion"] = "4711"
	meta["generation"] = 1
	meta["creationTimestamp"] = "2026-12-06T10:00:00Z"
	meta["annotations"] = map[string]any{"kubectl.kubernetes.io/last-applied-configuration": doc}
	meta["managedFields"] = []any{map[string]any{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "kuma.io/v1alpha1"}}
	raw, err := json.Marshal(obj)
	require.NoError(t, err)
	return raw, kind, name, namespace
}

// request is the API server's admission request for op on doc (and old, on
// an update).
func request(t *testing.T, op admissionv1.Operation, doc, old string) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, kind, name, namespace := asServerObject(t, doc)
	req := &admissionv1.AdmissionRequest{
		UID:       types.UID("req-" + name),
		Kind:      metav1.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: kind},
		Resource:  metav1.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: strings.ToLower(kind) + "s"},
		Name:      name,
		Namespace: namespace,
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}
	if old != "" {
		req.OldObject.Raw, _, _, _ = asServerObject(t, old)
	}
	return req
}

func guideDocs(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(guideDir, file))
	require.NoError(t, err)
	var docs []string
	for _, d := range resource.SplitYAML(data) {
		docs = append(docs, string(d.Body))
	}
	require.NotEmpty(t, docs)
	return docs
}

func TestTheGuidesResourcesAreAllowed(t *testing.T) {
	st, _ := newStore(t)
	v := &webhook.Validator{Meshes: st}
	for _, file := range []string{"mesh-kubernetes-short.yaml", "mesh-kubernetes-full.yaml", "mesh-kubernetes-mtls.yaml", "trafficpermissions-kubernetes.yaml"} {
		for _, doc := range guideDocs(t, file) {
			for _, op := range []admissionv1.Operation{admissionv1.Create, admissionv1.Update} {
				req := request(t, op, doc, "")
				resp := v.Review(context.Background(), req)
				require.True(t, resp.Allowed, "%s %s: %+v", file, op, resp.Result)
				require.Equal(t, req.UID, resp.UID)
				require.Nil(t, resp.Result)
			}
		}
	}
}

// universal rewrites a Kubernetes-form document as the REST API's JSON:
// type, name, mesh, then the spec's fields.
func universal(t *testing.T, doc string) (body []byte, path string) {
	t.Helper()
	var obj map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
	out := map[string]any{}
	if spec, ok := obj["spec"].(map[string]any); ok {
		for k, v := range spec {
			out[k] = v
		}
	}
	kind := obj["kind"].(string)
	meta := obj["metadata"].(map[string]any)
	name := meta["name"].(string)
	if ns, ok := meta["namespace"].(string); ok {
		name += "." + ns
	}
	out["type"], out["name"] = kind, name
	d, err := resource.Describe(resource.Kind(kind))
	require.NoError(t, err)
	path = "/meshes/" + name
	if d.Scoped {
		mesh, _ := obj["mesh"].(string)
		if mesh == "" {
			mesh = resource.DefaultMesh
		}
		out["mesh"] = mesh
		path = "/meshes/" + mesh + "/" + d.Plural + "/" + name
	}
	body, err = json.Marshal(out)
	require.NoError(t, err)
	return body, path
}

// restCauses PUTs the Universal form of doc to a real REST API and returns
// the causes of its 400 answer.
func restCauses(t *testing.T, api *httptest.Server, doc string) []resource.Cause {
	t.Helper()
	body, path := universal(t, doc)
	req, err := http.NewRequest(http.MethodPut, api.URL+path, strings.NewReader(string(body)))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusBadRequest, res.StatusCode, string(b))
	var e struct {
		Causes []resource.Cause `json:"causes"`
	}
	require.NoError(t, json.Unmarshal(b, &e))
	require.NotEmpty(t, e.Causes, string(b))
	return e.Causes
}

func statusCauses(resp *admissionv1.AdmissionResponse) []resource.Cause {
	var out []resource.Cause
	for _, c := range resp.Result.Details.Causes {
		out = append(out, resource.Cause{Field: c.Field, Message: c.Message})
	}
	return out
}

func TestInvalidResourcesAreRefusedAsTheRESTAPIRefusesThem(t *testing.T) {
	st, mgr := newStore(t)
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	v := &webhook.Validator{Names: v1alpha1.Names{SystemNamespace: "kuma-system"}, Meshes: st}

	for _, tc := range []struct {
		name string
		doc  string
		// want are the causes of the webhook's refusal.
		want []resource.Cause
	}{
		{"metrics backend", `
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  metrics:
    enabledBackend: prometheus-2
    backends:
    - name: prometheus-1
      type: graphite
      conf:
        port: 70000
        path: metrics
`, []resource.Cause{
			{Field: "spec.metrics.backends[0].type", Message: `unknown backend type "graphite"; available types: prometheus`},
			{Field: "spec.metrics.backends[0].conf.port", Message: "must be in the range 1-65535"},
			{Field: "spec.metrics.backends[0].conf.path", Message: "must start with '/'"},
			{Field: "spec.metrics.enabledBackend", Message: "names no backend; defined backends: prometheus-1"},
		}},
		{"mesh name", `
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: Payments.EU
`, []resource.Cause{{Field: "metadata.name", Message: "must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"}}},
		{"mtls backend", `
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  mtls:
    enabledBackend: ca-1
    backends:
    - name: ca-1
      type: vault
      dpCert:
        rotation:
          expiration: soon
`, []resource.Cause{
			{Field: "spec.mtls.backends[0].type", Message: `unknown backend type "vault"; available types: builtin`},
			{Field: "spec.mtls.backends[0].dpCert.rotation.expiration", Message: `must be a duration such as 24h, 90d or 10y: cannot parse "soon"`},
		}},
		{"unknown field", `
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  metrics:
    enabledBackends: prometheus-1
`, []resource.Cause{{Field: "spec.metrics.enabledBackends", Message: "unknown field"}}},
		{"wrong type", `
apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: default
spec:
  metrics:
    backends:
    - name: prometheus-1
      type: prometheus
      conf:
        port: "5670"
`, []resource.Cause{{Field: "spec.metrics.backends[0].conf.port", Message: `must be a non-negative integer, got string "5670"`}}},
		{"traffic permission", `
apiVersion: kuma.io/v1alpha1
kind: TrafficPermission
mesh: default
metadata:
  name: metrics-permissions
spec:
  sources: []
  destinations:
  - match:
      kuma.io/service: "prometheus server"
`, []resource.Cause{
			{Field: "spec.sources", Message: "must have at least one selector"},
			{Field: `spec.destinations[0].match["kuma.io/service"]`, Message: resource.TagValueMessage},
		}},
		{"mesh does not exist", strings.Replace(tpDefault, "mesh: default", "mesh: payments", 1),
			[]resource.Cause{{Field: "mesh", Message: `mesh "payments" does not exist`}}},
		{"dataplane", `
apiVersion: kuma.io/v1alpha1
kind: Dataplane
mesh: default
metadata:
  name: backend-5c89f4d995-85znn
  namespace: kuma-example
spec:
  networking:
    address: 10.0.0.7
    inbound:
    - port: 0
      tags:
        kuma.io/protocol: smtp
`, []resource.Cause{
			{Field: "spec.networking.inbound[0].port", Message: "must be in the range 1-65535"},
			{Field: `spec.networking.inbound[0].tags["kuma.io/service"]`, Message: "tag is required"},
			{Field: `spec.networking.inbound[0].tags["kuma.io/protocol"]`, Message: "unknown protocol \"smtp\"; available protocols: tcp, http, http2, grpc"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, admissionv1.Create, tc.doc, "")
			resp := v.Review(context.Background(), req)
			require.False(t, resp.Allowed)
			require.Equal(t, req.UID, resp.UID)
			res := resp.Result
			require.Equal(t, metav1.StatusFailure, res.Status)
			require.Equal(t, metav1.StatusReasonInvalid, res.Reason)
			require.EqualValues(t, http.StatusUnprocessableEntity, res.Code)
			require.Equal(t, req.Kind.Kind, res.Details.Kind)
			require.Equal(t, "kuma.io", res.Details.Group)
			require.Equal(t, req.Name, res.Details.Name)
			require.Equal(t, tc.want, statusCauses(resp))
			// The REST API refuses the same resource with the same causes,
			// named in the Universal form.
			require.Equal(t, tc.want, resource.KubernetesCauses(restCauses(t, srv, tc.doc)))
			// The message lists them, for clients that show only it.
			for _, c := range tc.want {
				require.Contains(t, res.Message, c.Field+": "+c.Message)
			}
		})
	}
}

func TestFieldsOutsideTheSchema(t *testing.T) {
	// The API server prunes what the CRD's schema does not know before a
	// webhook sees it; should something slip through, it is refused, not
	// ignored.
	resp := (&webhook.Validator{}).Review(context.Background(), request(t, admissionv1.Create, `
apiVersion: kuma.io/v1alpha1
kind: Mesh
mesh: default
metadata:
  name: payments
`, ""))
	require.False(t, resp.Allowed)
	require.EqualValues(t, http.StatusBadRequest, resp.Result.Code)
	require.Contains(t, resp.Result.Message, `unknown field "mesh"`)

	resp = (&webhook.Validator{}).Review(context.Background(), request(t, admissionv1.Create, strings.Replace(tpDefault, "mesh: default\n", "", 1), ""))
	require.False(t, resp.Allowed)
	require.Equal(t, []resource.Cause{{Field: "mesh", Message: "must name the mesh of the TrafficPermission"}}, statusCauses(resp))
}

func TestResources(t *testing.T) {
	require.Equal(t, []string{"meshes", "trafficpermissions", "dataplanes"}, webhook.Resources())
}

const tpDefault = `
apiVersion: kuma.io/v1alpha1
kind: TrafficPermission
mesh: default
metadata:
  name: grafana-to-prometheus
  labels: {team: observability}
spec:
  sources:
  - match:
      kuma.io/service: grafana_kuma-metrics_svc_80
  destinations:
  - match:
      kuma.io/service: prometheus-server_kuma-metrics_svc_80
`

func TestUpdates(t *testing.T) {
	st, _ := newStore(t)
	v := &webhook.Validator{Meshes: st}
	review := func(doc, old string) *admissionv1.AdmissionResponse {
		return v.Review(context.Background(), request(t, admissionv1.Update, doc, old))
	}

	// Moving a resource to another mesh is refused: the mesh is part of its
	// identity.
	moved := strings.Replace(tpDefault, "mesh: default", "mesh: payments", 1)
	resp := review(moved, tpDefault)
	require.False(t, resp.Allowed)
	require.Equal(t, []resource.Cause{{Field: "mesh", Message: `cannot be changed from "default": delete the TrafficPermission and create it in mesh "payments"`}}, statusCauses(resp))

	// A spec made invalid is refused.
	broken := strings.Replace(tpDefault, "kuma.io/service: grafana_kuma-metrics_svc_80", `kuma.io/service: ""`, 1)
	resp = review(broken, tpDefault)
	require.False(t, resp.Allowed)
	require.Equal(t, []resource.Cause{{Field: `spec.sources[0].match["kuma.io/service"]`, Message: "tag value must not be empty"}}, statusCauses(resp))

	// An update that leaves the mesh and the spec alone (a label, an owner,
	// a finalizer) is allowed even when the stored spec is invalid (stored
	// before the webhook ran, or judged by older rules): the garbage
	// collector and other controllers must be able to update metadata.
	relabelled := strings.Replace(broken, "team: observability", "team: platform", 1)
	resp = review(relabelled, broken)
	require.True(t, resp.Allowed, "%+v", resp.Result)

	// A valid change is allowed; an update does not look the mesh up (it
	// was checked on create; the control plane deletes a mesh's resources
	// with it).
	resp = (&webhook.Validator{Meshes: failingMeshes{}}).Review(context.Background(), request(t, admissionv1.Update, tpDefault, broken))
	require.True(t, resp.Allowed, "%+v", resp.Result)
}

type failingMeshes struct{}

func (failingMeshes) Get(context.Context, resource.Kind, resource.Key) (*resource.Object, error) {
	return nil, errors.New("connection refused")
}

func TestMeshLookupFailure(t *testing.T) {
	resp := (&webhook.Validator{Meshes: failingMeshes{}}).Review(context.Background(), request(t, admissionv1.Create, tpDefault, ""))
	require.False(t, resp.Allowed)
	require.EqualValues(t, http.StatusServiceUnavailable, resp.Result.Code)
	require.Equal(t, `could not check that mesh "default" exists: connection refused`, resp.Result.Message)
}

func TestNotTheWebhooksToJudge(t *testing.T) {
	v := &webhook.Validator{Meshes: failingMeshes{}}
	invalid := strings.Replace(tpDefault, "sources:", "sources: []\n  x:", 1)

	del := request(t, admissionv1.Delete, tpDefault, "")
	del.OldObject, del.Object = del.Object, runtime.RawExtension{}
	other := request(t, admissionv1.Create, invalid, "")
	other.Kind.Group = "apps"
	unknown := request(t, admissionv1.Create, strings.Replace(invalid, "TrafficPermission", "FaultInjection", 1), "")
	status := request(t, admissionv1.Update, invalid, "")
	status.SubResource = "status"
	connect := request(t, admissionv1.Connect, invalid, "")
	for name, req := range map[string]*admissionv1.AdmissionRequest{
		"delete": del, "another group": other, "an unknown kind": unknown, "a subresource": status, "connect": connect,
	} {
		resp := v.Review(context.Background(), req)
		require.True(t, resp.Allowed, "%s: %+v", name, resp.Result)
		require.Equal(t, req.UID, resp.UID, name)
	}
}

func TestMalformedRequests(t *testing.T) {
	v := &webhook.Validator{}
	for _, tc := range []struct {
		name string
		edit func(*admissionv1.AdmissionRequest)
		want string
	}{
		{"no object", func(r *admissionv1.AdmissionRequest) { r.Object = runtime.RawExtension{} }, "the CREATE request carries no object"},
		{"not an object", func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`["a"]`) }, "the TrafficPermission in the request cannot be read"},
		{"not JSON", func(r *admissionv1.AdmissionRequest) { r.Object.Raw = []byte(`{"kind":`) }, "the TrafficPermission in the request cannot be read"},
		{"another kind", func(r *admissionv1.AdmissionRequest) { r.Kind.Kind = "Dataplane" }, "the request is for a Dataplane but carries a TrafficPermission"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, admissionv1.Create, tpDefault, "")
			tc.edit(req)
			resp := v.Review(context.Background(), req)
			require.False(t, resp.Allowed)
			require.EqualValues(t, http.StatusBadRequest, resp.Result.Code)
			require.Contains(t, resp.Result.Message, tc.want)
		})
	}
}

func TestAPIMeshesReadsMeshesOnly(t *testing.T) {
	_, err := webhook.APIMeshes{}.Get(context.Background(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "x"})
	require.ErrorContains(t, err, "APIMeshes reads Meshes, not Dataplane")
}
