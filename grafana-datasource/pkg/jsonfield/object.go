// Package jsonfield reads the fields of a JSON object one by one, so that
// every error names its field: `mesh: must be a string, got number`. The
// datasource's settings and queries are JSON objects Grafana fills with keys
// of its own too; unknown keys are not errors.
package jsonfield

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Object is a decoded JSON object.
type Object struct {
	prefix string
	fields map[string]json.RawMessage
}

// Parse decodes raw, a JSON object; empty or null is an empty object.
// Errors name prefix (e.g. "jsonData."), and so do the errors of the
// object's fields.
func Parse(prefix string, raw []byte) (*Object, error) {
	o := &Object{prefix: prefix, fields: map[string]json.RawMessage{}}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return o, nil
	}
	if raw[0] != '{' {
		return nil, fmt.Errorf("%smust be a JSON object, got %s", where(prefix), kind(raw))
	}
	if err := json.Unmarshal(raw, &o.fields); err != nil {
		return nil, fmt.Errorf("%snot valid JSON: %w", where(prefix), err)
	}
	return o, nil
}

// where is the start of an error about the whole object.
func where(prefix string) string {
	if prefix == "" {
		return ""
	}
	return prefix[:len(prefix)-1] + ": "
}

// Has tells whether the object has the field, null counting as absent.
func (o *Object) Has(name string) bool {
	v, ok := o.fields[name]
	return ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// String reads a string field; "" when absent.
func (o *Object) String(name string) (string, error) {
	var s string
	err := o.decode(name, "a string", &s)
	return s, err
}

// Bool reads a boolean field; false when absent.
func (o *Object) Bool(name string) (bool, error) {
	var b bool
	err := o.decode(name, "true or false", &b)
	return b, err
}

// Number reads a number field; 0 when absent.
func (o *Object) Number(name string) (float64, error) {
	var f float64
	err := o.decode(name, "a number", &f)
	return f, err
}

func (o *Object) decode(name, want string, out any) error {
	if !o.Has(name) {
		return nil
	}
	raw := o.fields[name]
	if err := json.Unmarshal(raw, out); err != nil {
		return o.Errorf(name, "must be %s, got %s", want, kind(raw))
	}
	return nil
}

// Errorf is an error about a field: "<prefix><name>: <message>".
func (o *Object) Errorf(name, format string, args ...any) error {
	return fmt.Errorf("%s%s: %s", o.prefix, name, fmt.Sprintf(format, args...))
}

// kind names the JSON type of a value, for messages.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
