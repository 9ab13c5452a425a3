package apiserver

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

type dataplaneOverview struct {
	Type             string                   `json:"type"`
	Mesh             string                   `json:"mesh"`
	Name             string                   `json:"name"`
	CreationTime     time.Time                `json:"creationTime"`
	ModificationTime time.Time                `json:"modificationTime"`
	Dataplane        json.RawMessage          `json:"dataplane"`
	DataplaneInsight insight.DataplaneInsight `json:"dataplaneInsight"`
	Status           string                   `json:"status"`
}

func (s *Server) overview(dp *resource.Object) (dataplaneOverview, error) {
	spec, err := json.Marshal(dp.Spec)
	if err != nil {
		return dataplaneOverview{}, err
	}
	in := s.opts.Insights.Get(dp.Meta.Key())
	if in.Subscriptions == nil {
		in.Subscriptions = []insight.Subscription{}
	}
	return dataplaneOverview{
		Type: "DataplaneOverview", Mesh: dp.Meta.Mesh, Name: dp.Meta.Name,
		CreationTime: dp.Meta.CreationTime.UTC(), ModificationTime: dp.Meta.ModificationTime.UTC(),
		Dataplane: spec, DataplaneInsight: in, Status: in.Status(),
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
	items := make([]dataplaneOverview, 0, len(res.Items))
	for _, dp := range res.Items {
		o, err := s.overview(dp)
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
	o, err := s.overview(dp)
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
	all, err := s.opts.Reader.List(r.Context(), resource.KindDataplane, store.ListOptions{Mesh: mesh})
	if err != nil {
		s.storeError(w, err)
		return
	}
	services := insight.Services(all.Items, func(k resource.Key) bool { return s.opts.Insights.Get(k).Online() })
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
