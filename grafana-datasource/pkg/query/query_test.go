package query

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/meshgraph"
)

func TestParse(t *testing.T) {
	q, err := Parse("", []byte(`{"refId":"A","datasource":{"uid":"kuma"},"intervalMs":15000,"queryType":"mesh-graph","mesh":"default"}`))
	require.NoError(t, err)
	require.Equal(t, MeshGraph, q.Type)
	require.Equal(t, "default", q.Mesh)
	require.Equal(t, DefaultZone, q.Zone)
	require.NotNil(t, q.Rollup, "the default roll-up")
	require.Equal(t, "backend_ns", meshgraph.Rollup(q.Rollup, "backend_ns_svc_80"))

	// Grafana's own queryType wins; an empty rollup is none.
	q, err = Parse("services", []byte(`{"queryType":"meshes","rollup":"","zone":"z-(1|2)"}`))
	require.NoError(t, err)
	require.Equal(t, Services, q.Type)
	require.Nil(t, q.Rollup)
	require.Equal(t, "z-(1|2)", q.Zone)
	require.Equal(t, "", q.Mesh, "every mesh")

	for _, typ := range []string{"meshes", "zones"} {
		q, err = Parse(typ, nil)
		require.NoError(t, err)
		require.Equal(t, Type(typ), q.Type)
	}
	// null is absent
	q, err = Parse("", []byte(`{"queryType":"mesh-graph","mesh":"m","rollup":null,"zone":null}`))
	require.NoError(t, err)
	require.NotNil(t, q.Rollup)
	require.Equal(t, DefaultZone, q.Zone)
}

// Bad query JSON: an error naming the field.
func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		queryType, json, err string
	}{
		"not an object":     {"", `[1]`, "query: must be a JSON object, got an array"},
		"not JSON":          {"", `{"mesh":`, "query: not valid JSON"},
		"no type":           {"", `{"mesh":"m"}`, "queryType: required; use one of mesh-graph, meshes, zones, services"},
		"unknown type":      {"", `{"queryType":"graph"}`, `queryType: unknown query type "graph"; use one of mesh-graph, meshes, zones, services`},
		"type not a string": {"", `{"queryType":3}`, "queryType: must be a string, got a number"},
		"mesh not a string": {"", `{"queryType":"mesh-graph","mesh":42}`, "mesh: must be a string, got a number"},
		"mesh required":     {"mesh-graph", `{}`, "mesh: required for mesh-graph"},
		"zone type":         {"services", `{"zone":{"a":1}}`, "zone: must be a string, got an object"},
		"zone regexp":       {"mesh-graph", `{"mesh":"m","zone":"(a"}`, "zone: invalid regular expression"},
		"rollup type":       {"mesh-graph", `{"mesh":"m","rollup":true}`, "rollup: must be a string, got a boolean"},
		"rollup regexp":     {"mesh-graph", `{"mesh":"m","rollup":"[a"}`, "rollup: invalid regular expression"},
		"rollup group":      {"mesh-graph", `{"mesh":"m","rollup":".*_svc"}`, "rollup: \".*_svc\" has no capture group"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.queryType, []byte(tc.json))
			require.ErrorContains(t, err, tc.err)
		})
	}
}
