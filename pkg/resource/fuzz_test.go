package resource

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode feeds arbitrary documents to both decoders. Whatever arrives,
// the decoder either returns a resource or one of its two error types with
// a message (never a panic); a resource it returns validates or is refused
// with field errors; a valid one stays valid with defaults applied and
// survives the round trip through the API's JSON and the Universal YAML
// unchanged.
func FuzzDecode(f *testing.F) {
	guide, err := filepath.Glob(filepath.Join("testdata", "guide", "*.yaml"))
	if err != nil || len(guide) == 0 {
		f.Fatalf("no guide snippets to seed from: %v", err)
	}
	for _, name := range guide {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for _, d := range SplitYAML(data) {
			f.Add(d.Body, true)
		}
	}
	for _, seed := range []string{
		`{"type":"Mesh","name":"m","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus","conf":{"port":1234,"envoy":{"filterRegex":"^cluster"}}}]}}`,
		`{"type":"Dataplane","mesh":"default","name":"d","networking":{"address":"10.0.0.1","inbound":[{"port":1,"servicePort":2,"tags":{"kuma.io/service":"s"}}],"outbound":[{"port":3,"tags":{"kuma.io/service":"t"}}]}}`,
		`{"type":"TrafficPermission","mesh":"default","name":"t","sources":[{"match":{"kuma.io/service":"*"}}],"destinations":[{"match":{"kuma.io/service":"*"}}]}`,
		`{"type":"Secret","mesh":"default","name":"s","data":"aGVsbG8="}`,
		`{"type":"Mesh","name":"m","unknown":1}`,
		`{"type":"Mesh","name":"m","metrics":{"backends":[{"conf":{"port":70000}}]}}`,
		`{"type":"Mesh","name":1e400}`,
		`{"type":"Mesh","type":"Mesh","name":"m"}`,
		`[]`,
		"type: Mesh\nname: m\nmtls:\n  enabledBackend: ca\n  backends:\n  - name: ca\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 1d\n",
		"apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec: {}\n",
		"a: [\n",
		"&a [*a]\n",
		"\xff",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, yamlForm bool) {
		var (
			o   *Object
			err error
		)
		if yamlForm {
			o, err = DecodeYAML(data, 1)
		} else {
			o, err = DecodeJSON(data)
		}
		if err != nil {
			if !IsDecodeError(err) || err.Error() == "" {
				t.Fatalf("a decode error of an unexpected kind %T: %v", err, err)
			}
			return
		}
		if o.Meta.Mesh == "" {
			o.Meta.Mesh = DefaultMesh // as the API does from the URL
			if d, _ := Describe(o.Meta.Kind); !d.Scoped {
				o.Meta.Mesh = ""
			}
		}
		if err := Validate(o); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Causes) == 0 {
				t.Fatalf("a validation error without causes: %v", err)
			}
			return
		}
		ApplyDefaults(o)
		if err := Validate(o); err != nil {
			t.Fatalf("valid before defaults, invalid after: %v", err)
		}
		want := mustJSON(t, o)

		var back Object
		if err := json.Unmarshal([]byte(want), &back); err != nil {
			t.Fatalf("the API's JSON of a valid resource does not decode: %v\n%s", err, want)
		}
		if got := mustJSON(t, &back); got != want {
			t.Fatalf("JSON round trip changed the resource:\n got %s\nwant %s", got, want)
		}
		y, err := MarshalYAML(o)
		if err != nil {
			t.Fatalf("a valid resource does not render as YAML: %v", err)
		}
		again, err := DecodeYAML(y, 1)
		if err != nil {
			t.Fatalf("the YAML of a valid resource does not decode: %v\n%s", err, y)
		}
		if got := mustJSON(t, again); got != want {
			t.Fatalf("YAML round trip changed the resource:\n got %s\nwant %s\nyaml:\n%s", got, want, y)
		}
	})
}

func mustJSON(t *testing.T, o *Object) string {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatalf("a decoded resource does not encode: %v", err)
	}
	return string(b)
}
