package v1alpha1_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/util/jsonpath"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/crds"
	"github.com/kumametrics/mesh/pkg/resource"
)

var names = v1alpha1.Names{SystemNamespace: "kuma-system"}

const guideDir = "../../../resource/testdata/guide"

// guideDocs returns the documents of the guide's snippets of one form.
func guideDocs(t *testing.T, form string) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(guideDir, "*-"+form+"*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, doc := range resource.SplitYAML(data) {
			out[filepath.Base(f)+"#"+string(rune('0'+i))] = doc.Body
		}
	}
	return out
}

// TestGuideKubernetesSnippets: every Kubernetes snippet of the guide decodes
// through the custom resource types to the resource the REST API stores for
// it, and converts back to the same custom resource body.
func TestGuideKubernetesSnippets(t *testing.T) {
	docs := guideDocs(t, "kubernetes")
	require.Len(t, docs, 5, "three Mesh snippets, two TrafficPermissions")
	for name, doc := range docs {
		t.Run(name, func(t *testing.T) {
			want, err := resource.DecodeYAML(doc, 1)
			require.NoError(t, err)

			cr, err := v1alpha1.Decode(doc)
			require.NoError(t, err)
			got, err := names.ToObject(cr)
			require.NoError(t, err)
			require.Equal(t, want.Meta.Kind, got.Meta.Kind)
			require.Equal(t, want.Meta.Mesh, got.Meta.Mesh)
			require.Equal(t, want.Meta.Name, got.Meta.Name)
			require.Equal(t, want.Spec, got.Spec)
			require.NoError(t, resource.Validate(got))
			require.Equal(t, map[string]string{resource.K8sNameExtension: want.Meta.Name}, got.Meta.NameExtensions)

			back, err := names.FromObject(got)
			require.NoError(t, err)
			require.Equal(t, cr.GetName(), back.GetName())
			require.Equal(t, cr.GetMesh(), back.GetMesh())
			require.JSONEq(t, string(cr.Body()), string(back.Body()), "the body survives the round trip")
			again, err := names.ToObject(back)
			require.NoError(t, err)
			require.Equal(t, got.Spec, again.Spec)
		})
	}
}

// TestUniversalObjectsRoundTrip: the guide's Universal resources (and the
// kinds the control plane writes) convert to custom resources and back.
func TestUniversalObjectsRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 123, time.UTC)
	objs := []*resource.Object{
		resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{StartTime: at, HeartbeatTime: at.Add(time.Second), Stopped: true}),
		resource.New("default", "web-1.apps", &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{{
			ID: "s1", ControlPlaneInstanceID: "cp-1", ConnectTime: at, DisconnectTime: &at,
			Status: resource.SubStatus{Total: resource.Totals{ResponsesSent: 3}}, ConfigVersion: "v1",
		}}}),
	}
	for name, doc := range guideDocs(t, "universal") {
		obj, err := resource.DecodeYAML(doc, 1)
		require.NoError(t, err, name)
		objs = append(objs, obj)
	}
	for _, obj := range objs {
		cr, err := names.FromObject(obj)
		require.NoError(t, err)
		require.Equal(t, v1alpha1.KindOf(cr).GroupVersionKind(), cr.GetObjectKind().GroupVersionKind())
		js, err := json.Marshal(cr)
		require.NoError(t, err)
		decoded, err := v1alpha1.Decode(js)
		require.NoError(t, err, "%s", js)
		got, err := names.ToObject(decoded)
		require.NoError(t, err)
		require.Equal(t, obj.Meta.Key(), got.Meta.Key())
		require.Equal(t, obj.Spec, got.Spec)
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct{ name, k8sName, namespace string }{
		{"backend-5c89f4d995-85znn.my-namespace", "backend-5c89f4d995-85znn", "my-namespace"},
		{"pod.with.dots.ns", "pod.with.dots", "ns"},
		{"backend-1", "backend-1", "kuma-system"},
	} {
		n, ns, err := names.Split(tc.name)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.k8sName, n)
		require.Equal(t, tc.namespace, ns)
		require.Equal(t, tc.name, names.Join(n, ns), "Join undoes Split")
	}
	for name, want := range map[string]string{
		"web.kuma-system": `named without the suffix: "web"`,
		"web.":            "<name>.<namespace>",
		".ns":             "<name>.<namespace>",
	} {
		_, _, err := names.Split(name)
		require.ErrorContains(t, err, want, name)
	}
	dp := &resource.Object{Meta: resource.Meta{Kind: resource.KindDataplane, Mesh: "default", Name: "web.kuma-system"}, Spec: &resource.DataplaneSpec{}}
	_, err := names.FromObject(dp)
	require.ErrorContains(t, err, `Dataplane "default/web.kuma-system"`)
}

func TestToObjectFieldErrors(t *testing.T) {
	cases := map[string]struct {
		cr    v1alpha1.Object
		field string
	}{
		"unknown field": {&v1alpha1.Dataplane{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}, Mesh: "default",
			Spec: json.RawMessage(`{"networking":{"adress":"10.0.0.1"}}`)}, "spec.networking.adress"},
		"wrong type": {&v1alpha1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "m"},
			Spec: json.RawMessage(`{"metrics":{"backends":[{"name":"p","conf":{"port":"80"}}]}}`)}, "spec.metrics.backends[0].conf.port"},
		"no mesh": {&v1alpha1.TrafficPermission{ObjectMeta: metav1.ObjectMeta{Name: "tp"}, Spec: json.RawMessage(`{}`)}, "mesh"},
		"status of an insight": {&v1alpha1.DataplaneInsight{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}, Mesh: "default",
			Status: json.RawMessage(`{"subscriptions":[{"connectTime":"yesterday"}]}`)}, "status.subscriptions[0].connectTime"},
		"body not an object": {&v1alpha1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "m"}, Spec: json.RawMessage(`[1]`)}, "spec"},
	}
	for name, tc := range cases {
		_, err := names.ToObject(tc.cr)
		var ve *resource.ValidationError
		require.True(t, errors.As(err, &ve), "%s: %v", name, err)
		var fields []string
		for _, c := range ve.Causes {
			fields = append(fields, c.Field)
		}
		require.Contains(t, fields, tc.field, name)
	}
}

func TestMeta(t *testing.T) {
	created := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	dp := &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "apps", ResourceVersion: "4711", CreationTimestamp: metav1.NewTime(created)},
		Mesh:       "default",
		Spec:       json.RawMessage(`{"networking":{"address":"10.0.0.1"}}`),
	}
	obj, err := names.ToObject(dp)
	require.NoError(t, err)
	require.Equal(t, resource.Meta{
		Kind: resource.KindDataplane, Mesh: "default", Name: "web-1.apps", Version: 4711,
		CreationTime: created, ModificationTime: created,
		NameExtensions: map[string]string{resource.K8sNameExtension: "web-1", resource.K8sNamespaceExtension: "apps"},
	}, obj.Meta)

	// The control plane's writes carry nanoseconds in an annotation; others'
	// are dated by their managed fields; the newest wins.
	stamped := created.Add(1500 * time.Millisecond)
	v1alpha1.SetModificationTime(dp, stamped)
	_, mod := v1alpha1.Times(dp)
	require.True(t, mod.Equal(stamped))
	later := metav1.NewTime(created.Add(5 * time.Second))
	dp.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Time: &later}}
	_, mod = v1alpha1.Times(dp)
	require.True(t, mod.Equal(later.Time))

	dp.ResourceVersion = "not-a-number"
	_, err = names.ToObject(dp)
	require.ErrorContains(t, err, "etcd-backed")
	v, err := v1alpha1.ParseVersion("")
	require.NoError(t, err)
	require.Zero(t, v)
}

func TestDeepCopy(t *testing.T) {
	dp := &v1alpha1.Dataplane{ObjectMeta: metav1.ObjectMeta{Name: "a", Labels: map[string]string{"x": "y"}}, Mesh: "m", Spec: json.RawMessage(`{"a":1}`)}
	cp := dp.DeepCopyObject().(*v1alpha1.Dataplane)
	require.Equal(t, dp, cp)
	cp.Spec[5] = '2'
	cp.Labels["x"] = "z"
	require.Equal(t, `{"a":1}`, string(dp.Spec))
	require.Equal(t, "y", dp.Labels["x"])

	list := &v1alpha1.DataplaneList{Items: []v1alpha1.Dataplane{*dp}}
	lc := list.DeepCopyObject().(*v1alpha1.DataplaneList)
	lc.Items[0].Spec[5] = '3'
	require.Equal(t, `{"a":1}`, string(list.Items[0].Spec))
	for _, k := range v1alpha1.Kinds() {
		o := k.New()
		o.SetName("n")
		o.SetBody(json.RawMessage(`{}`))
		c := o.DeepCopyObject().(v1alpha1.Object)
		c.Body()[0] = '['
		require.Equal(t, "{}", string(o.Body()), k.Kind)
		require.Len(t, k.NewList().Objects(), 0)
	}
}

func TestScheme(t *testing.T) {
	s := runtime.NewScheme()
	require.NoError(t, v1alpha1.AddToScheme(s))
	for _, k := range v1alpha1.Kinds() {
		gvks, _, err := s.ObjectKinds(k.New())
		require.NoError(t, err, k.Kind)
		require.Equal(t, k.GroupVersionKind(), gvks[0])
		gvks, _, err = s.ObjectKinds(k.NewList())
		require.NoError(t, err)
		require.Equal(t, k.Kind+"List", gvks[0].Kind)
		require.Equal(t, k.Kind, v1alpha1.KindOf(k.New()).Kind)
	}
}

// crd returns the embedded CRD of a kind.
func crd(t *testing.T, k v1alpha1.Kind) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	for _, m := range crds.Manifests() {
		var c apiextensionsv1.CustomResourceDefinition
		require.NoError(t, yaml.UnmarshalStrict(m.YAML, &c), m.File)
		if c.Spec.Names.Kind == k.Kind {
			require.Equal(t, "kuma.io_"+k.Plural+".yaml", m.File)
			return &c
		}
	}
	t.Fatalf("no CRD for %s", k.Kind)
	return nil
}

// TestCRDsMatchTypes: every kind has its CRD, with the same names and scope.
func TestCRDsMatchTypes(t *testing.T) {
	require.Len(t, crds.Manifests(), len(v1alpha1.Kinds()))
	require.Equal(t, len(crds.Manifests())-1, strings.Count(string(crds.YAML()), "\n---\n"))
	for _, k := range v1alpha1.Kinds() {
		c := crd(t, k)
		require.Equal(t, k.Plural+"."+v1alpha1.Group, c.Name)
		require.Equal(t, v1alpha1.Group, c.Spec.Group)
		require.Equal(t, k.Plural, c.Spec.Names.Plural)
		require.Equal(t, k.Singular, c.Spec.Names.Singular)
		require.Equal(t, k.Kind+"List", c.Spec.Names.ListKind)
		scope := apiextensionsv1.ClusterScoped
		if k.Namespaced {
			scope = apiextensionsv1.NamespaceScoped
		}
		require.Equal(t, scope, c.Spec.Scope, k.Kind)
		require.Len(t, c.Spec.Versions, 1)
		v := c.Spec.Versions[0]
		require.Equal(t, v1alpha1.Version, v.Name)
		props := v.Schema.OpenAPIV3Schema.Properties
		require.Contains(t, props, k.BodyField, "%s keeps its body in %s", k.Kind, k.BodyField)
		d, err := resource.Describe(k.Resource)
		require.NoError(t, err)
		if d.Scoped {
			require.Contains(t, props, "mesh")
			require.Contains(t, v.Schema.OpenAPIV3Schema.Required, "mesh", "%s: a mesh-scoped kind needs its mesh", k.Kind)
		} else {
			require.NotContains(t, props, "mesh")
		}
	}
}

// printerColumns evaluates a CRD's printer columns on an object.
func printerColumns(t *testing.T, k v1alpha1.Kind, cr v1alpha1.Object) map[string]string {
	t.Helper()
	js, err := json.Marshal(cr)
	require.NoError(t, err)
	var generic map[string]any
	require.NoError(t, json.Unmarshal(js, &generic))
	out := map[string]string{}
	for _, col := range crd(t, k).Spec.Versions[0].AdditionalPrinterColumns {
		jp := jsonpath.New(col.Name).AllowMissingKeys(true)
		require.NoError(t, jp.Parse("{"+col.JSONPath+"}"), col.Name)
		var b strings.Builder
		require.NoError(t, jp.Execute(&b, generic))
		out[col.Name] = b.String()
	}
	return out
}

func TestPrinterColumns(t *testing.T) {
	read := func(file string, i int) v1alpha1.Object {
		data, err := os.ReadFile(filepath.Join(guideDir, file))
		require.NoError(t, err)
		cr, err := v1alpha1.Decode(resource.SplitYAML(data)[i].Body)
		require.NoError(t, err)
		return cr
	}
	mesh := read("mesh-kubernetes-mtls.yaml", 0)
	mesh.SetCreationTimestamp(metav1.NewTime(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)))
	require.Equal(t, map[string]string{"mTLS": "ca-1", "Metrics": "prometheus-1", "Age": "2026-12-06T10:00:00Z"},
		printerColumns(t, v1alpha1.KindOf(mesh), mesh))
	short := read("mesh-kubernetes-short.yaml", 0)
	require.Equal(t, map[string]string{"mTLS": "", "Metrics": "prometheus-1", "Age": ""}, printerColumns(t, v1alpha1.KindOf(short), short))
	tp := read("trafficpermissions-kubernetes.yaml", 1)
	require.Equal(t, "default", printerColumns(t, v1alpha1.KindOf(tp), tp)["Mesh"])

	dp, err := names.FromObject(resource.New("default", "web-1.apps", &resource.DataplaneSpec{Networking: &resource.Networking{Address: "10.0.0.7"}}))
	require.NoError(t, err)
	cols := printerColumns(t, v1alpha1.KindOf(dp), dp)
	require.Equal(t, "default", cols["Mesh"])
	require.Equal(t, "10.0.0.7", cols["Address"])
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	cpi, err := names.FromObject(resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{StartTime: at, HeartbeatTime: at.Add(time.Minute)}))
	require.NoError(t, err)
	require.Equal(t, "2026-12-06T10:01:00Z", printerColumns(t, v1alpha1.KindOf(cpi), cpi)["Heartbeat"])
}
