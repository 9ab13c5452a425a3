package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

type dataplaneOverview struct {
	Type             string                        `json:"type"`
	Mesh             string                        `json:"mesh"`
	Name             string                        `json:"name"`
	CreationTime     time.Time                     `json:"creationTime"`
	ModificationTime time.Time                     `json:"modificationTime"`
	Dataplane        json.RawMessage               `json:"dataplane"`
	DataplaneInsight resource.DataplaneInsightSpec `json:"dataplaneInsight"`
	Status           string                        `json:"status"`
}

// instances reads the heartbeats that tell whether subscriptions are live.
func (s *Server) instances(ctx context.Context) (insight.Instances, error) {
	res, err := s.opts.Reader.List(ctx, resource.KindControlPlaneInstance, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	return insight.InstancesOf(res.Items), nil
}

// insightOf reads the insight of a dataplane; empty when it never connected.
func (s *Server) insightOf(ctx context.Context, key resource.Key) (*resource.DataplaneInsightSpec, error) {
	in, err := s.opts.Reader.Get(ctx, resource.KindDataplaneInsight, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{}}, nil
	case err != nil:
		return nil, err
	}
	spec := in.DataplaneInsight()
	if spec.Subscriptions == nil {
		spec.Subscriptions = []resource.Subscription{}
	}
	return spec, nil
}

func (s *Server) overview(ctx context.Context, dp *resource.Object, instances insight.Instances, now time.Time) (dataplaneOverview, error) {
	spec, err := json.Marshal(dp.Spec)
	if err != nil {
		return dataplaneOverview{}, err
	}
	in, err := s.insightOf(ctx, dp.Meta.Key())
	if err != nil {
		return dataplaneOverview{}, err
	}
	return dataplaneOverview{
		Type: "DataplaneOverview", Mesh: dp.Meta.Mesh, Name: dp.Meta.Name,
		CreationTime: dp.Meta.CreationTime.UTC(), ModificationTime: dp.Meta.ModificationTime.UTC(),
		Dataplane: spec, DataplaneInsight: *in, Status: insight.Status(in, instances, now),
	}, nil
}

func (s *Server) dataplaneOverviews(w http.ResponseWriter, r *http.Request) {
	size, offset, err := page(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Bad request", err.Error(), nil)
		return
	}
	mesh := r.PathValue("mesh")
	if _, err := s.opts.Reader.Get(r.Context(), resource.KindMesh, resource.Key{Name: mesh}); err != nil {
		s.storeError(w, err)
		return
	}
	res, err := s.opts.Reader.List(r.Context(), resource.KindDataplane, store.ListOptions{Mesh: mesh, Limit: size, Offset: offset})
	if err != nil {
		s.storeError(w, err)
		return
	}
	instances, err := s.instances(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	now := s.opts.Now()
	items := make([]dataplaneOverview, 0, len(res.Items))
	for _, dp := range res.Items {
		o, err := s.overview(r.Context(), dp, instances, now)
		if err != nil {
			s.storeError(w, err)
			return
		}
		items = append(items, o)
	}
	writeJSON(w, http.StatusOK, listBody[dataplaneOverview]{Total: res.Total, Items: items, Next: nextURL(r, res.NextOffset, size)})
}

func (s *Server) dataplaneOverview(w http.ResponseWriter, r *http.Request) {
	dp, err := s.opts.Reader.Get(r.Context(), resource.KindDataplane, resource.Key{Mesh: r.PathValue("mesh"), Name: r.PathValue("name")})
	if err != nil {
		s.storeError(w, err)
		return
	}
	instances, err := s.instances(r.Context())
	if err != nil {
		s.storeError(w, err)
		return
	}
	o, err := s.overview(r.Context(), dp, instances, s.opts.Now())
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

type serviceInsight struct {
	Type       string         `json:"type"`
	Mesh       string         `json:"mesh"`
	Name       string         `json:"name"`
	Status     string         `json:"status"`
	Dataplanes dataplaneCount `json:"dataplanes"`
}

type dataplaneCount struct {
	Online  int `json:"online"`
	Offline int `json:"offline"`
	Total   int `json:"total"`
}

func (s *Server) serviceInsights(w http.ResponseWriter, r *http.Request) {
	size, offset, err := page(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "Bad request", err.Error(), nil)
		return
	}
	mesh := r.PathValue("mesh")
	if _, err := s.opts.Reader.Get(r.Context(), resource.KindMesh, resource.Key{Name: mesh}); err != nil {
		s.storeError(w, err)
		return
	}
	services, err := s.services(r.Context(), mesh)
	if err != nil {
		s.storeError(w, err)
		return
	}
	total := len(services)
	next := -1
	if offset > total {
		offset = total
	}
	end := offset + size
	if end < total {
		next = end
	} else {
		end = total
	}
	items := make([]serviceInsight, 0, end-offset)
	for _, si := range services[offset:end] {
		items = append(items, serviceInsight{
			Type: "ServiceInsight", Mesh: mesh, Name: si.Name, Status: si.Status,
			Dataplanes: dataplaneCount{Online: si.Online, Offline: si.Offline, Total: si.Total},
		})
	}
	writeJSON(w, http.StatusOK, listBody[serviceInsight]{Total: total, Items: items, Next: nextURL(r, next, size)})
}

// services summarizes the dataplanes of a mesh by service, with their status.
func (s *Server) services(ctx context.Context, mesh string) ([]insight.ServiceInsight, error) {
	all, err := s.opts.Reader.List(ctx, resource.KindDataplane, store.ListOptions{Mesh: mesh})
	if err != nil {
		return nil, err
	}
	insights, err := s.opts.Reader.List(ctx, resource.KindDataplaneInsight, store.ListOptions{Mesh: mesh})
	if err != nil {
		return nil, err
	}
	instances, err := s.instances(ctx)
	if err != nil {
		return nil, err
	}
	latest := make(map[resource.Key]*resource.Subscription, len(insights.Items))
	for _, in := range insights.Items {
		latest[in.Meta.Key()] = in.DataplaneInsight().Latest()
	}
	now := s.opts.Now()
	return insight.Services(all.Items, func(k resource.Key) bool { return insight.Online(latest[k], instances, now) }), nil
}
