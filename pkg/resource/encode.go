package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	yamlv2 "go.yaml.in/yaml/v2"
)

// MarshalYAML renders an object in the Universal YAML form, keys in the
// order of the JSON shape (type, mesh, name, times, spec).
func MarshalYAML(o *Object) ([]byte, error) {
	js, err := o.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return JSONToOrderedYAML(js)
}

// JSONToOrderedYAML converts JSON to YAML keeping the order of object keys.
func JSONToOrderedYAML(js []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	v, err := orderedValue(dec)
	if err != nil {
		return nil, fmt.Errorf("convert JSON to YAML: %w", err)
	}
	return yamlv2.Marshal(v)
}

func orderedValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			ms := yamlv2.MapSlice{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				val, err := orderedValue(dec)
				if err != nil {
					return nil, err
				}
				ms = append(ms, yamlv2.MapItem{Key: kt, Value: val})
			}
			_, err := dec.Token()
			return ms, err
		case '[':
			list := []any{}
			for dec.More() {
				val, err := orderedValue(dec)
				if err != nil {
					return nil, err
				}
				list = append(list, val)
			}
			_, err := dec.Token()
			return list, err
		}
		return nil, io.ErrUnexpectedEOF
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i, nil
		}
		f, err := t.Float64()
		return f, err
	default:
		return t, nil
	}
}
