package resource

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func decodeFile(t *testing.T, name string) []*Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "guide", name))
	require.NoError(t, err)
	var out []*Object
	for _, d := range SplitYAML(data) {
		o, err := DecodeYAML(d.Body, d.Line)
		require.NoError(t, err, name)
		require.NoError(t, Validate(o), name)
		out = append(out, o)
	}
	return out
}

func specJSON(t *testing.T, o *Object) string {
	t.Helper()
	b, err := json.Marshal(o)
	require.NoError(t, err)
	return string(b)
}

func TestGuideSnippetsDecodeToTheSameResource(t *testing.T) {
	tests := []struct {
		name      string
		universal string
		k8s       string
		skipDiff  bool
	}{
		{name: "short mesh forms differ only in skipMTLS", universal: "mesh-universal-short.yaml", k8s: "mesh-kubernetes-short.yaml", skipDiff: true},
		{name: "full mesh forms differ only in skipMTLS", universal: "mesh-universal-full.yaml", k8s: "mesh-kubernetes-full.yaml", skipDiff: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := decodeFile(t, tc.universal)[0]
			k := decodeFile(t, tc.k8s)[0]
			require.Equal(t, KindMesh, u.Meta.Kind)
			require.Equal(t, u.Meta, k.Meta)
			// The guide's Universal snippets set skipMTLS: true, the Kubernetes
			// ones do not; everything else is the same once defaults are in.
			for _, o := range []*Object{u, k} {
				ApplyDefaults(o)
				o.Mesh().Metrics.Backends[0].Conf.SkipMTLS = nil
				o.Mesh().Metrics.Backends[0].Conf.TLS = nil
			}
			require.Equal(t, specJSON(t, u), specJSON(t, k))
		})
	}
}

func TestShortcutMeshEqualsItsExpansionAfterDefaults(t *testing.T) {
	for _, pair := range [][2]string{
		{"mesh-universal-short.yaml", "mesh-universal-full.yaml"},
		{"mesh-kubernetes-short.yaml", "mesh-kubernetes-full.yaml"},
	} {
		t.Run(pair[0], func(t *testing.T) {
			short := decodeFile(t, pair[0])[0]
			full := decodeFile(t, pair[1])[0]
			ApplyDefaults(short)
			ApplyDefaults(full)
			// The Kubernetes expansion writes skipMTLS: false explicitly.
			full.Mesh().Metrics.Backends[0].Conf.SkipMTLS = short.Mesh().Metrics.Backends[0].Conf.SkipMTLS
			require.Equal(t, specJSON(t, full), specJSON(t, short))
		})
	}
}

func TestKubernetesTrafficPermissionsEqualUniversal(t *testing.T) {
	k := decodeFile(t, "trafficpermissions-kubernetes.yaml")
	require.Len(t, k, 2)
	universal := `type: TrafficPermission
mesh: default
name: grafana-to-prometheus
sources:
- match:
    kuma.io/service: grafana_kuma-metrics_svc_80
destinations:
- match:
    kuma.io/service: prometheus-server_kuma-metrics_svc_80
`
	u, err := DecodeYAML([]byte(universal), 1)
	require.NoError(t, err)
	require.Equal(t, specJSON(t, u), specJSON(t, k[1]))
	require.Equal(t, "default", k[0].Meta.Mesh)
	require.Len(t, k[0].TrafficPermission().Destinations, 5)
}

func TestDataplaneOverrideDecodes(t *testing.T) {
	dp := decodeFile(t, "dataplane-override-universal.yaml")[0]
	require.Equal(t, Meta{Kind: KindDataplane, Mesh: "default", Name: "example"}, dp.Meta)
	c := dp.Dataplane().Metrics.Conf
	require.Equal(t, uint32(1234), *c.Port)
	require.Equal(t, "/non-standard-path", c.Path)
	require.True(t, *c.SkipMTLS)
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name   string
		yaml   string
		line   int
		fields []string
		msg    string
	}{
		{
			name:   "unknown field deep inside",
			yaml:   "type: Mesh\nname: m\nmetrics:\n  backends:\n  - name: p\n    type: prometheus\n    conf:\n      prot: 1\n",
			fields: []string{"metrics.backends[0].conf.prot"},
			msg:    "unknown field",
		},
		{
			name:   "unknown top-level field in the kubernetes form",
			yaml:   "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec:\n  metrix: {}\n",
			fields: []string{"spec.metrix"},
			msg:    "unknown field",
		},
		{
			name:   "wrong type",
			yaml:   "type: Dataplane\nname: d\nnetworking:\n  address: 1.1.1.1\n  inbound:\n  - port: eighty\n",
			fields: []string{"networking.inbound[0].port"},
			msg:    "must be a non-negative integer",
		},
		{
			name:   "negative port",
			yaml:   "type: Mesh\nname: m\nmetrics:\n  backends:\n  - name: p\n    type: prometheus\n    conf:\n      port: -1\n",
			fields: []string{"metrics.backends[0].conf.port"},
			msg:    "range 0 to 4294967295",
		},
		{
			name:   "tag value not a string",
			yaml:   "type: Dataplane\nname: d\nnetworking:\n  inbound:\n  - port: 1\n    tags:\n      version: 2\n",
			fields: []string{`networking.inbound[0].tags["version"]`},
			msg:    "must be a string",
		},
		{
			name:   "several errors are all reported",
			yaml:   "type: Mesh\nname: m\nfoo: 1\nbar: 2\n",
			fields: []string{"bar", "foo"},
			msg:    "unknown field",
		},
		{
			name:   "missing type",
			yaml:   "name: m\n",
			fields: []string{"type"},
			msg:    "must be set",
		},
		{
			name:   "unknown type",
			yaml:   "type: Meshh\nname: m\n",
			fields: []string{"type"},
			msg:    "unknown resource type",
		},
		{
			name:   "wrong apiVersion",
			yaml:   "apiVersion: kuma.io/v1\nkind: Mesh\nmetadata:\n  name: m\n",
			fields: []string{"apiVersion"},
			msg:    "kuma.io/v1alpha1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeYAML([]byte(tc.yaml), 1)
			var ve *ValidationError
			require.True(t, errors.As(err, &ve), "got %v", err)
			var fields []string
			for _, c := range ve.Causes {
				fields = append(fields, c.Field)
				require.Contains(t, c.Message, tc.msg)
			}
			require.Equal(t, tc.fields, fields)
		})
	}
}

func TestYAMLSyntaxErrorHasTheFileLine(t *testing.T) {
	file := "type: Mesh\nname: a\n---\n# second\ntype: Mesh\nname: b\nmetrics:\n  enabledBackend: [x\n"
	docs := SplitYAML([]byte(file))
	require.Len(t, docs, 2)
	require.Equal(t, 4, docs[1].Line)
	_, err := DecodeYAML(docs[1].Body, docs[1].Line)
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Msg, "line 8")
}

func TestJSONSyntaxErrorHasLineAndColumn(t *testing.T) {
	_, err := DecodeJSON([]byte("{\n  \"type\": \"Mesh\",\n  \"name\": \"m\"\n  \"x\": 1}"))
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Msg, "line 4")
}

func TestJSONRoundTrip(t *testing.T) {
	dp := decodeFile(t, "dataplane-override-universal.yaml")[0]
	b, err := json.Marshal(dp)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(b), `{"type":"Dataplane","mesh":"default","name":"example",`), string(b))
	var back Object
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, dp.Meta, back.Meta)
	require.Equal(t, specJSON(t, dp), specJSON(t, &back))

	y, err := MarshalYAML(dp)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(y), "type: Dataplane\nmesh: default\nname: example\n"), string(y))
	again, err := DecodeYAML(y, 1)
	require.NoError(t, err)
	require.Equal(t, specJSON(t, dp), specJSON(t, again))
}

func TestSplitYAMLSkipsEmptyDocuments(t *testing.T) {
	docs := SplitYAML([]byte("---\n# only a comment\n---\ntype: Mesh\nname: a\n---\n\n"))
	require.Len(t, docs, 1)
	require.Equal(t, 4, docs[0].Line)
}

func TestSecretRoundTrip(t *testing.T) {
	o, err := DecodeYAML([]byte("type: Secret\nmesh: default\nname: s1\ndata: aGVsbG8=\n"), 1)
	require.NoError(t, err)
	require.NoError(t, Validate(o))
	b, err := o.Secret().Bytes()
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))
	require.Equal(t, NewSecret("default", "s1", []byte("hello")).Spec, o.Spec)
}

func TestDecodeSpec(t *testing.T) {
	spec, err := DecodeSpec(KindDataplane, []byte(`{"networking":{"address":"10.0.0.1","inbound":[{"port":"x"}]},"extra":1}`), "spec")
	require.Nil(t, spec)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	var fields []string
	for _, c := range ve.Causes {
		fields = append(fields, c.Field)
	}
	require.ElementsMatch(t, []string{"spec.networking.inbound[0].port", "spec.extra"}, fields)

	for _, empty := range []string{"", "null", " "} {
		spec, err = DecodeSpec(KindMesh, []byte(empty), "spec")
		require.NoError(t, err)
		require.Equal(t, &MeshSpec{}, spec)
	}
	_, err = DecodeSpec(KindMesh, []byte(`{`), "spec")
	var se *SyntaxError
	require.ErrorAs(t, err, &se)
	_, err = DecodeSpec("Nope", []byte(`{}`), "spec")
	require.ErrorContains(t, err, "unknown resource type")
}
