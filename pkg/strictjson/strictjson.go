// Package strictjson decodes JSON into Go structs strictly: an unknown field,
// a value of the wrong type or an out-of-range number is an error that names
// the field path (for example `metrics.backends[0].conf.port`), and every such
// error in a document is reported, not only the first.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// FieldError is one problem at one field path.
type FieldError struct {
	Path    string
	Message string
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// Errors is the list of every field problem found while decoding.
type Errors []FieldError

func (e Errors) Error() string {
	parts := make([]string, len(e))
	for i, fe := range e {
		parts[i] = fe.Error()
	}
	return strings.Join(parts, "; ")
}

// SyntaxError is malformed JSON, located by line and column.
type SyntaxError struct {
	Line, Column int
	Msg          string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Parse reads one JSON value into generic form (objects as map[string]any,
// numbers as json.Number). Trailing data after the value is an error.
func Parse(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, syntaxError(data, dec, err)
	}
	if _, err := dec.Token(); err == nil {
		line, col := position(data, dec.InputOffset())
		return nil, &SyntaxError{Line: line, Column: col, Msg: "unexpected data after the JSON value"}
	}
	return v, nil
}

func syntaxError(data []byte, dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	off := dec.InputOffset()
	if errors.As(err, &se) {
		off = se.Offset
	}
	msg := err.Error()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		msg = "unexpected end of input"
	}
	line, col := position(data, off)
	return &SyntaxError{Line: line, Column: col, Msg: msg}
}

func position(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line, col = 1, 1
	for _, b := range data[:off] {
		if b == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// Decode parses data and decodes it strictly into v (a non-nil pointer).
func Decode(data []byte, v any) error {
	raw, err := Parse(data)
	if err != nil {
		return err
	}
	return DecodeValue(raw, v, "")
}

// DecodeValue decodes an already parsed generic value into v, prefixing
// every reported path with base.
func DecodeValue(raw any, v any, base string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson: decode target must be a non-nil pointer, got %T", v)
	}
	d := &decoder{}
	d.value(base, raw, rv.Elem())
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

type decoder struct {
	errs Errors
}

func (d *decoder) fail(path, format string, args ...any) {
	d.errs = append(d.errs, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

var (
	timeType        = reflect.TypeFor[time.Time]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

func (d *decoder) value(path string, raw any, dst reflect.Value) {
	if raw == nil {
		// JSON null leaves the destination at its zero value, as encoding/json does.
		dst.SetZero()
		return
	}
	if dst.CanAddr() && dst.Addr().Type().Implements(unmarshalerType) && dst.Type() != timeType {
		b, _ := json.Marshal(raw)
		if err := dst.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
			d.fail(path, "%s", err.Error())
		}
		return
	}
	switch dst.Kind() {
	case reflect.Pointer:
		elem := reflect.New(dst.Type().Elem())
		d.value(path, raw, elem.Elem())
		dst.Set(elem)
	case reflect.Interface:
		dst.Set(reflect.ValueOf(raw))
	case reflect.Struct:
		if dst.Type() == timeType {
			s, ok := raw.(string)
			if !ok {
				d.fail(path, "must be a timestamp string (RFC 3339)")
				return
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				d.fail(path, "must be a timestamp in RFC 3339 form: %q", s)
				return
			}
			dst.Set(reflect.ValueOf(t))
			return
		}
		d.object(path, raw, dst)
	case reflect.Map:
		obj, ok := raw.(map[string]any)
		if !ok {
			d.fail(path, "must be an object, got %s", describe(raw))
			return
		}
		if dst.Type().Key().Kind() != reflect.String {
			d.fail(path, "unsupported map key type %s", dst.Type().Key())
			return
		}
		m := reflect.MakeMapWithSize(dst.Type(), len(obj))
		for _, k := range sortedKeys(obj) {
			ev := reflect.New(dst.Type().Elem()).Elem()
			d.value(path+"["+strconv.Quote(k)+"]", obj[k], ev)
			m.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), ev)
		}
		dst.Set(m)
	case reflect.Slice:
		list, ok := raw.([]any)
		if !ok {
			d.fail(path, "must be a list, got %s", describe(raw))
			return
		}
		s := reflect.MakeSlice(dst.Type(), len(list), len(list))
		for i, item := range list {
			d.value(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i))
		}
		dst.Set(s)
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.fail(path, "must be a string, got %s", describe(raw))
			return
		}
		dst.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.fail(path, "must be a boolean (true or false), got %s", describe(raw))
			return
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := raw.(json.Number)
		if !ok {
			d.fail(path, "must be an integer, got %s", describe(raw))
			return
		}
		i, err := strconv.ParseInt(n.String(), 10, dst.Type().Bits())
		if err != nil {
			lo := -(int64(1) << (dst.Type().Bits() - 1))
			hi := int64(1)<<(dst.Type().Bits()-1) - 1
			d.fail(path, "must be an integer in the range %d to %d, got %s", lo, hi, n)
			return
		}
		dst.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := raw.(json.Number)
		if !ok {
			d.fail(path, "must be a non-negative integer, got %s", describe(raw))
			return
		}
		u, err := strconv.ParseUint(n.String(), 10, dst.Type().Bits())
		if err != nil {
			var hi uint64 = math.MaxUint64 >> (64 - dst.Type().Bits())
			d.fail(path, "must be an integer in the range 0 to %d, got %s", hi, n)
			return
		}
		dst.SetUint(u)
	case reflect.Float32, reflect.Float64:
		n, ok := raw.(json.Number)
		if !ok {
			d.fail(path, "must be a number, got %s", describe(raw))
			return
		}
		f, err := strconv.ParseFloat(n.String(), dst.Type().Bits())
		if err != nil {
			d.fail(path, "must be a number, got %s", n)
			return
		}
		dst.SetFloat(f)
	default:
		d.fail(path, "unsupported destination type %s", dst.Type())
	}
}

func (d *decoder) object(path string, raw any, dst reflect.Value) {
	obj, ok := raw.(map[string]any)
	if !ok {
		d.fail(path, "must be an object, got %s", describe(raw))
		return
	}
	fields := fieldsOf(dst.Type())
	for _, k := range sortedKeys(obj) {
		idx, ok := fields[k]
		fp := join(path, k)
		if !ok {
			d.fail(fp, "unknown field")
			continue
		}
		d.value(fp, obj[k], dst.Field(idx))
	}
}

// fieldsOf maps JSON names to struct field indexes.
func fieldsOf(t reflect.Type) map[string]int {
	out := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		out[name] = i
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func describe(raw any) string {
	switch v := raw.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case json.Number:
		return "number " + v.String()
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", raw)
	}
}
