package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/strictjson"
)

// DefaultMesh is the mesh a mesh-scoped resource belongs to when it names none.
const DefaultMesh = "default"

// KubernetesAPIVersion is the apiVersion of the Kubernetes form.
const KubernetesAPIVersion = "kuma.io/v1alpha1"

// SyntaxError is a document that is not well-formed YAML or JSON.
type SyntaxError struct {
	// Msg is the whole message, with the line when known.
	Msg string
	// Line is the line of the problem in its file (0 when unknown).
	Line int
	// Reason is the message without the line.
	Reason string
}

func (e *SyntaxError) Error() string { return e.Msg }

// IsDecodeError tells whether err came from decoding or validating input
// (a *SyntaxError or a *ValidationError).
func IsDecodeError(err error) bool {
	var se *SyntaxError
	var ve *ValidationError
	return errors.As(err, &se) || errors.As(err, &ve)
}

// DecodeJSON decodes a resource in the REST API's JSON shape (the Universal
// form). A mesh-scoped resource that names no mesh is left with an empty
// Meta.Mesh, for the caller to fill in (the API takes it from the URL).
func DecodeJSON(data []byte) (*Object, error) {
	raw, err := strictjson.Parse(data)
	if err != nil {
		return nil, &SyntaxError{Msg: err.Error()}
	}
	return decodeUniversal(raw, "")
}

// DecodeYAML decodes one YAML document in either form: Universal
// (`type: Mesh`, `name`, spec fields at the top level) or Kubernetes
// (`apiVersion: kuma.io/v1alpha1`, `kind`, `metadata.name`, `spec`).
// firstLine is the document's first line in its file, to make line numbers
// in errors point into the file.
func DecodeYAML(data []byte, firstLine int) (*Object, error) {
	js, err := yamlToJSON(data)
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			if firstLine > 1 {
				se.Line += firstLine - 1
			}
			se.Msg = fmt.Sprintf("invalid YAML: line %d: %s", se.Line, se.Reason)
			return nil, se
		}
		return nil, &SyntaxError{Msg: "invalid YAML: " + err.Error(), Reason: err.Error()}
	}
	raw, err := strictjson.Parse(js)
	if err != nil {
		return nil, &SyntaxError{Msg: err.Error()}
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, invalid("", "a resource must be a mapping")
	}
	if _, k8s := obj["apiVersion"]; k8s {
		return decodeKubernetes(obj)
	}
	if _, k8s := obj["kind"]; k8s {
		return decodeKubernetes(obj)
	}
	return decodeUniversal(raw, DefaultMesh)
}

// yamlToJSON converts one YAML document to JSON, refusing duplicate keys.
func yamlToJSON(data []byte) ([]byte, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, yamlSyntaxError(strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "), lastLine(data))
	}
	return js, nil
}

var yamlErrRe = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlSyntaxError locates a YAML syntax error on a 1-based line, at most
// last. The YAML library reports scanner errors with their 1-based line, but
// parser errors ("did not find expected …") with the 0-based line of the
// unexpected token, and leaves the line out when it is 0.
func yamlSyntaxError(msg string, last int) *SyntaxError {
	m := yamlErrRe.FindStringSubmatch(msg)
	if m == nil {
		return &SyntaxError{Msg: msg, Reason: msg}
	}
	line := 1
	if m[1] != "" {
		line, _ = strconv.Atoi(m[1])
		if strings.HasPrefix(m[2], "did not find expected") {
			line++
		}
	}
	if line > last {
		line = last
	}
	return &SyntaxError{Line: line, Reason: m[2], Msg: fmt.Sprintf("line %d: %s", line, m[2])}
}

// lastLine is the number of the last line of data that is not blank.
func lastLine(data []byte) int {
	last := 1
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) != "" {
			last = i + 1
		}
	}
	return last
}

func invalid(field, msg string) error {
	return &ValidationError{Causes: []Cause{{Field: field, Message: msg}}}
}

func fromStrict(err error) error {
	var fe strictjson.Errors
	if errors.As(err, &fe) {
		ve := &ValidationError{}
		for _, e := range fe {
			ve.Causes = append(ve.Causes, Cause{Field: e.Path, Message: e.Message})
		}
		return ve
	}
	return err
}

func stringField(obj map[string]any, key string) (string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid(key, "must be a string")
	}
	return s, nil
}

func decodeUniversal(raw any, defaultMesh string) (*Object, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, invalid("", "a resource must be an object")
	}
	typ, err := stringField(obj, "type")
	if err != nil {
		return nil, err
	}
	if typ == "" {
		return nil, invalid("type", "must be set (one of Mesh, Dataplane, TrafficPermission, Secret, GlobalSecret)")
	}
	d, err := Describe(Kind(typ))
	if err != nil {
		return nil, invalid("type", err.Error())
	}
	o := &Object{Meta: Meta{Kind: d.Kind}, Spec: d.NewSpec()}
	causes := &verr{}
	if o.Meta.Name, err = stringField(obj, "name"); err != nil {
		causes.add("name", "must be a string")
	}
	if d.Scoped {
		if o.Meta.Mesh, err = stringField(obj, "mesh"); err != nil {
			causes.add("mesh", "must be a string")
		}
		if o.Meta.Mesh == "" {
			o.Meta.Mesh = defaultMesh
		}
	}
	spec := map[string]any{}
	for k, v := range obj {
		switch k {
		case "type", "name", "creationTime", "modificationTime":
			continue
		case "mesh":
			if d.Scoped {
				continue
			}
		}
		spec[k] = v
	}
	if err := strictjson.DecodeValue(spec, o.Spec, ""); err != nil {
		if ve, ok := fromStrict(err).(*ValidationError); ok {
			causes.causes = append(causes.causes, ve.Causes...)
		} else {
			return nil, err
		}
	}
	if err := causes.err(); err != nil {
		return nil, err
	}
	return o, nil
}

// DecodeSpec decodes the spec of a kind from its JSON shape (the body of a
// Kubernetes custom resource), strictly: every problem is a *ValidationError
// cause whose field path starts with prefix (e.g. "spec"), malformed JSON a
// *SyntaxError. Empty data or null is an empty spec.
func DecodeSpec(kind Kind, data []byte, prefix string) (Spec, error) {
	d, err := Describe(kind)
	if err != nil {
		return nil, err
	}
	spec := d.NewSpec()
	if len(bytes.TrimSpace(data)) == 0 {
		return spec, nil
	}
	raw, err := strictjson.Parse(data)
	if err != nil {
		return nil, &SyntaxError{Msg: fmt.Sprintf("%s: %s", prefix, err.Error()), Reason: err.Error()}
	}
	if raw == nil {
		return spec, nil
	}
	if _, ok := raw.(map[string]any); !ok {
		return nil, invalid(prefix, "must be an object")
	}
	if err := strictjson.DecodeValue(raw, spec, prefix); err != nil {
		return nil, fromStrict(err)
	}
	return spec, nil
}

type kubernetesObject struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Mesh       string         `json:"mesh"`
	Metadata   kubernetesMeta `json:"metadata"`
	Spec       any            `json:"spec"`
}

type kubernetesMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	Labels            map[string]string `json:"labels"`
	Annotations       map[string]string `json:"annotations"`
	UID               string            `json:"uid"`
	ResourceVersion   string            `json:"resourceVersion"`
	Generation        int64             `json:"generation"`
	CreationTimestamp any               `json:"creationTimestamp"`
}

func decodeKubernetes(raw map[string]any) (*Object, error) {
	var k kubernetesObject
	if err := strictjson.DecodeValue(raw, &k, ""); err != nil {
		return nil, fromStrict(err)
	}
	causes := &verr{}
	if k.APIVersion != KubernetesAPIVersion {
		causes.add("apiVersion", "must be %s", KubernetesAPIVersion)
	}
	d, err := Describe(Kind(k.Kind))
	if err != nil {
		causes.add("kind", "%s", err.Error())
		return nil, causes.err()
	}
	o := &Object{Meta: Meta{Kind: d.Kind, Name: k.Metadata.Name}, Spec: d.NewSpec()}
	if d.Scoped {
		o.Meta.Mesh = k.Mesh
		if o.Meta.Mesh == "" {
			o.Meta.Mesh = DefaultMesh
		}
	} else if k.Mesh != "" {
		causes.add("mesh", "a Mesh does not belong to a mesh")
	}
	if k.Metadata.Name == "" {
		causes.add("metadata.name", "must not be empty")
	}
	if k.Spec != nil {
		if err := strictjson.DecodeValue(k.Spec, o.Spec, "spec"); err != nil {
			if ve, ok := fromStrict(err).(*ValidationError); ok {
				causes.causes = append(causes.causes, ve.Causes...)
			} else {
				return nil, err
			}
		}
	}
	if err := causes.err(); err != nil {
		return nil, err
	}
	return o, nil
}

// MarshalJSON renders the REST API shape: type, mesh, name, times, then the spec fields.
func (o *Object) MarshalJSON() ([]byte, error) {
	spec, err := json.Marshal(o.Spec)
	if err != nil {
		return nil, fmt.Errorf("marshal %s spec: %w", o.Meta.Kind, err)
	}
	var b bytes.Buffer
	b.WriteString(`{"type":`)
	writeJSONString(&b, string(o.Meta.Kind))
	if o.Meta.Mesh != "" {
		b.WriteString(`,"mesh":`)
		writeJSONString(&b, o.Meta.Mesh)
	}
	b.WriteString(`,"name":`)
	writeJSONString(&b, o.Meta.Name)
	if !o.Meta.CreationTime.IsZero() {
		b.WriteString(`,"creationTime":`)
		writeJSONString(&b, o.Meta.CreationTime.UTC().Format(time.RFC3339Nano))
	}
	if !o.Meta.ModificationTime.IsZero() {
		b.WriteString(`,"modificationTime":`)
		writeJSONString(&b, o.Meta.ModificationTime.UTC().Format(time.RFC3339Nano))
	}
	if len(spec) > 2 {
		b.WriteByte(',')
		b.Write(spec[1:])
	} else {
		b.WriteByte('}')
	}
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}

// UnmarshalJSON reads the REST API shape leniently: unknown fields are
// ignored, so a client keeps reading the answers of a newer control plane.
// User input goes through DecodeJSON or DecodeYAML, which are strict.
func (o *Object) UnmarshalJSON(data []byte) error {
	var meta struct {
		Type             Kind      `json:"type"`
		Mesh             string    `json:"mesh"`
		Name             string    `json:"name"`
		CreationTime     time.Time `json:"creationTime"`
		ModificationTime time.Time `json:"modificationTime"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		return fmt.Errorf("decode resource: %w", err)
	}
	d, err := Describe(meta.Type)
	if err != nil {
		return fmt.Errorf("decode resource: %w", err)
	}
	spec := d.NewSpec()
	if err := json.Unmarshal(data, spec); err != nil {
		return fmt.Errorf("decode %s %q: %w", meta.Type, meta.Name, err)
	}
	*o = Object{
		Meta: Meta{Kind: d.Kind, Mesh: meta.Mesh, Name: meta.Name, CreationTime: meta.CreationTime, ModificationTime: meta.ModificationTime},
		Spec: spec,
	}
	return nil
}
