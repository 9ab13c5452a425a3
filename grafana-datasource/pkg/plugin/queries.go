package plugin

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/frames"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/kumaapi"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/meshgraph"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/query"
)

// QueryData answers each query on its own: a bad query or a failed call
// fails that query only, with an error naming what is wrong.
func (d *Datasource) QueryData(ctx context.Context, req *backend.QueryDataRequest) (*backend.QueryDataResponse, error) {
	answers := make([]backend.DataResponse, len(req.Queries))
	parallel(len(req.Queries), func(i int) { answers[i] = d.query(ctx, req.Queries[i]) })
	resp := backend.NewQueryDataResponse()
	for i, q := range req.Queries {
		for _, f := range answers[i].Frames {
			f.RefID = q.RefID
		}
		resp.Responses[q.RefID] = answers[i]
	}
	return resp, nil
}

func (d *Datasource) query(ctx context.Context, dq backend.DataQuery) backend.DataResponse {
	if d.settingsErr != nil {
		return downstream(backend.StatusBadRequest, d.settingsError())
	}
	q, err := query.Parse(dq.QueryType, dq.JSON)
	if err != nil {
		return downstream(backend.StatusBadRequest, err)
	}
	var fs data.Frames
	switch q.Type {
	case query.MeshGraph:
		fs, err = d.meshGraph(ctx, q, dq)
	case query.Meshes:
		var ms []kumaapi.Mesh
		if ms, err = d.cp.Meshes(ctx); err == nil {
			fs = data.Frames{frames.Meshes(ms)}
		}
	case query.Zones:
		var zs []kumaapi.Zone
		if zs, err = d.cp.Zones(ctx); err == nil {
			fs = data.Frames{frames.Zones(zs)}
		}
	case query.Services:
		var ss []kumaapi.ServiceInsight
		if ss, err = d.services(ctx, q.Mesh); err == nil {
			fs = data.Frames{frames.Services(ss)}
		}
	}
	if err != nil {
		backend.Logger.Warn("query failed", "queryType", q.Type, "refId", dq.RefID, "error", err)
		return downstream(statusOf(err), err)
	}
	return backend.DataResponse{Frames: fs}
}

// meshGraph runs the graph's PromQL queries and reads the mesh and its
// services, all at once (bounded), then computes the graph.
func (d *Datasource) meshGraph(ctx context.Context, q query.Query, dq backend.DataQuery) (data.Frames, error) {
	at := dq.TimeRange.To
	if at.IsZero() {
		at = d.now()
	}
	queries := meshgraph.Queries(meshgraph.Params{Mesh: q.Mesh, Zone: q.Zone, Window: meshgraph.Window(dq.Interval)})
	in := meshgraph.Input{Results: map[meshgraph.Metric][]meshgraph.Sample{}, Rollup: q.Rollup}
	errs := make([]error, len(queries)+2)
	results := make([][]meshgraph.Sample, len(queries))
	var mesh kumaapi.Mesh
	var services []kumaapi.ServiceInsight
	parallel(len(queries)+2, func(i int) {
		switch i {
		case len(queries):
			mesh, errs[i] = d.cp.Mesh(ctx, q.Mesh)
		case len(queries) + 1:
			services, errs[i] = d.cp.ServiceInsights(ctx, q.Mesh)
		default:
			samples, err := d.prom.Query(ctx, queries[i].PromQL, at)
			if err != nil {
				errs[i] = fmt.Errorf("%s: %w", queries[i].Metric, err)
				return
			}
			for _, s := range samples {
				results[i] = append(results[i], meshgraph.Sample{Labels: s.Labels, Value: s.Value})
			}
		}
	})
	// The control plane's errors first: a missing mesh says more than the
	// queries about it.
	for _, err := range slices.Concat(errs[len(queries):], errs[:len(queries)]) {
		if err != nil {
			return nil, err
		}
	}
	for i, qr := range queries {
		in.Results[qr.Metric] = results[i]
	}
	in.MeshMTLS = mesh.MTLS != nil && mesh.MTLS.EnabledBackend != ""
	for _, s := range services {
		in.Services = append(in.Services, meshgraph.Service{
			Name: s.Name, Online: s.Dataplanes.Online, Offline: s.Dataplanes.Offline, Total: s.Dataplanes.Total,
		})
	}
	nodes, edges := frames.Graph(meshgraph.Compute(in))
	return data.Frames{nodes, edges}, nil
}

// services lists the services of a mesh, or of every mesh when mesh is "",
// sorted by mesh and name.
func (d *Datasource) services(ctx context.Context, mesh string) ([]kumaapi.ServiceInsight, error) {
	meshes := []string{mesh}
	if mesh == "" {
		ms, err := d.cp.Meshes(ctx)
		if err != nil {
			return nil, err
		}
		meshes = meshes[:0]
		for _, m := range ms {
			meshes = append(meshes, m.Name)
		}
	}
	lists := make([][]kumaapi.ServiceInsight, len(meshes))
	errs := make([]error, len(meshes))
	parallel(len(meshes), func(i int) {
		lists[i], errs[i] = d.cp.ServiceInsights(ctx, meshes[i])
	})
	var all []kumaapi.ServiceInsight
	for i := range meshes {
		if errs[i] != nil {
			return nil, errs[i]
		}
		for _, s := range lists[i] {
			s.Mesh = meshes[i]
			all = append(all, s)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Mesh != all[j].Mesh {
			return all[i].Mesh < all[j].Mesh
		}
		return all[i].Name < all[j].Name
	})
	return all, nil
}
