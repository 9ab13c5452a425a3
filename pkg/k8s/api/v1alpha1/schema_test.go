package v1alpha1_test

import (
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// TestCRDSchemasCoverEveryField: the API server prunes what a structural
// schema does not list, so every JSON field of a kind's spec type must be in
// its CRD (or under a schema that keeps unknown fields); a field added to a
// type and forgotten in the CRD would be silently dropped on Kubernetes.
func TestCRDSchemasCoverEveryField(t *testing.T) {
	for _, k := range v1alpha1.Kinds() {
		d, err := resource.Describe(k.Resource)
		if err != nil {
			t.Fatal(err)
		}
		body := crd(t, k).Spec.Versions[0].Schema.OpenAPIV3Schema.Properties[k.BodyField]
		for _, missing := range uncovered(reflect.TypeOf(d.NewSpec()), &body, k.BodyField) {
			t.Errorf("%s: %s is not in the CRD's schema", k.Kind, missing)
		}
	}
}

// uncovered lists the JSON paths of typ that schema does not describe.
func uncovered(typ reflect.Type, schema *apiextensionsv1.JSONSchemaProps, path string) []string {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if schema.XPreserveUnknownFields != nil && *schema.XPreserveUnknownFields {
		return nil
	}
	switch typ.Kind() {
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Uint8 || schema.Items == nil || schema.Items.Schema == nil {
			return nil
		}
		return uncovered(typ.Elem(), schema.Items.Schema, path+"[]")
	case reflect.Map:
		if schema.AdditionalProperties == nil || schema.AdditionalProperties.Schema == nil {
			return []string{path + "{}"}
		}
		return uncovered(typ.Elem(), schema.AdditionalProperties.Schema, path+"{}")
	case reflect.Struct:
	default:
		return nil
	}
	if typ.PkgPath() != reflect.TypeOf(resource.MeshSpec{}).PkgPath() {
		return nil // e.g. time.Time: a string in JSON
	}
	var out []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		sub, ok := schema.Properties[name]
		if !ok {
			out = append(out, path+"."+name)
			continue
		}
		out = append(out, uncovered(f.Type, &sub, path+"."+name)...)
	}
	return out
}
