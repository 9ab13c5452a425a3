// Package query is the datasource's query model: the JSON a panel, a
// variable or an alert rule sends (queryType, mesh, zone, rollup), checked
// field by field.
package query

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/jsonfield"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/meshgraph"
)

// Type is what a query asks for.
type Type string

// The query types.
const (
	MeshGraph Type = "mesh-graph"
	Meshes    Type = "meshes"
	Zones     Type = "zones"
	Services  Type = "services"
)

// Types are the query types, in the order messages list them.
var Types = []Type{MeshGraph, Meshes, Zones, Services}

// DefaultZone matches every zone, and proxies without one.
const DefaultZone = ".*"

// Query is a checked query.
type Query struct {
	Type Type
	// Mesh is required for MeshGraph; for Services "" is every mesh.
	Mesh string
	// Zone is the zone regular expression (MeshGraph), as given.
	Zone string
	// Rollup folds service names into nodes (MeshGraph); nil is none.
	Rollup *regexp.Regexp
}

// Parse checks a query's JSON. queryType is Grafana's own field of the
// query (the same as the JSON's "queryType"); it wins when not empty. The
// error names the field at fault.
func Parse(queryType string, raw []byte) (Query, error) {
	o, err := jsonfield.Parse("", raw)
	if err != nil {
		return Query{}, fmt.Errorf("query: %w", err)
	}
	var q Query
	t, err := o.String("queryType")
	if err != nil {
		return Query{}, err
	}
	if queryType != "" {
		t = queryType
	}
	q.Type = Type(t)
	switch q.Type {
	case MeshGraph, Meshes, Zones, Services:
	case "":
		return Query{}, o.Errorf("queryType", "required; use one of %s", typeList())
	default:
		return Query{}, o.Errorf("queryType", "unknown query type %q; use one of %s", t, typeList())
	}
	if q.Mesh, err = o.String("mesh"); err != nil {
		return Query{}, err
	}
	if q.Type == MeshGraph && q.Mesh == "" {
		return Query{}, o.Errorf("mesh", "required for %s", MeshGraph)
	}
	if q.Zone, err = o.String("zone"); err != nil {
		return Query{}, err
	}
	if q.Zone == "" {
		q.Zone = DefaultZone
	}
	if _, err := regexp.Compile("^(?:" + q.Zone + ")$"); err != nil {
		return Query{}, o.Errorf("zone", "invalid regular expression: %v", err)
	}
	rollup := meshgraph.DefaultRollup
	if o.Has("rollup") {
		if rollup, err = o.String("rollup"); err != nil {
			return Query{}, err
		}
	}
	if q.Rollup, err = meshgraph.CompileRollup(rollup); err != nil {
		return Query{}, o.Errorf("rollup", "%v", err)
	}
	return q, nil
}

func typeList() string {
	names := make([]string, len(Types))
	for i, t := range Types {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}
