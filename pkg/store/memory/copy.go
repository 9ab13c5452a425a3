package memory

import (
	"reflect"
	"sync"

	"github.com/kumametrics/mesh/pkg/resource"
)

// copySpec returns a deep copy of a spec. Specs are trees of plain structs,
// pointers, slices and maps, so a reflective copy keeps up with new fields
// without a hand-written copy per type; nil and empty slices and maps stay
// as they were. Unexported struct fields are copied shallowly (they belong
// to value types such as time.Time).
func copySpec(s resource.Spec) resource.Spec {
	if s == nil {
		return nil
	}
	v := reflect.ValueOf(s)
	dst := reflect.New(v.Type()).Elem()
	copyInto(dst, v)
	return dst.Interface().(resource.Spec)
}

// copyInto sets dst, which is settable and of src's type, to a deep copy of src.
func copyInto(dst, src reflect.Value) {
	if !hasRefs(src.Type()) {
		dst.Set(src)
		return
	}
	switch src.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		n := reflect.New(src.Type().Elem())
		copyInto(n.Elem(), src.Elem())
		dst.Set(n)
	case reflect.Interface:
		if src.IsNil() {
			return
		}
		e := src.Elem()
		n := reflect.New(e.Type()).Elem()
		copyInto(n, e)
		dst.Set(n)
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		n := reflect.MakeSlice(src.Type(), src.Len(), src.Len())
		for i := range src.Len() {
			copyInto(n.Index(i), src.Index(i))
		}
		dst.Set(n)
	case reflect.Array:
		for i := range src.Len() {
			copyInto(dst.Index(i), src.Index(i))
		}
	case reflect.Map:
		if src.IsNil() {
			return
		}
		t := src.Type()
		n := reflect.MakeMapWithSize(t, src.Len())
		flatKey, flatElem := !hasRefs(t.Key()), !hasRefs(t.Elem())
		var k, e reflect.Value
		if !flatKey {
			k = reflect.New(t.Key()).Elem()
		}
		if !flatElem {
			e = reflect.New(t.Elem()).Elem()
		}
		for it := src.MapRange(); it.Next(); {
			key, elem := it.Key(), it.Value()
			if !flatKey {
				k.SetZero()
				copyInto(k, key)
				key = k
			}
			if !flatElem {
				e.SetZero()
				copyInto(e, elem)
				elem = e
			}
			n.SetMapIndex(key, elem)
		}
		dst.Set(n)
	case reflect.Struct:
		dst.Set(src) // values and unexported fields
		t := src.Type()
		for i := range src.NumField() {
			if f := t.Field(i); f.IsExported() && hasRefs(f.Type) {
				copyInto(dst.Field(i), src.Field(i))
			}
		}
	default:
		// Funcs, channels and unsafe pointers have no place in a spec;
		// they are shared as they are.
		dst.Set(src)
	}
}

var refsCache sync.Map // reflect.Type → bool

// hasRefs tells whether values of t can share memory (pointers, slices,
// maps, interfaces, ...), so that copying them takes more than assignment.
func hasRefs(t reflect.Type) bool {
	if v, ok := refsCache.Load(t); ok {
		return v.(bool)
	}
	r := computeRefs(t)
	refsCache.Store(t, r)
	return r
}

func computeRefs(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return false
	case reflect.Array:
		return computeRefs(t.Elem())
	case reflect.Struct:
		// A struct cannot contain itself by value, so this terminates.
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && computeRefs(f.Type) {
				return true
			}
		}
		return false
	default:
		return true
	}
}
