package plugin

import (
	"encoding/json"
	"net/http"

	"github.com/grafana/grafana-plugin-sdk-go/backend"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/kumaapi"
)

// named is an item of the meshes and zones drop-downs.
type named struct {
	Name string `json:"name"`
}

// service is an item of the services drop-down.
type service struct {
	Name    string `json:"name"`
	Mesh    string `json:"mesh"`
	Status  string `json:"status"`
	Online  int    `json:"online"`
	Offline int    `json:"offline"`
	Total   int    `json:"total"`
}

// resourceMux serves the resources of CONTRACT.md: GET /meshes, /zones and
// /services?mesh=.
func (d *Datasource) resourceMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /meshes", func(w http.ResponseWriter, r *http.Request) {
		ms, err := d.cp.Meshes(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		out := make([]named, 0, len(ms))
		for _, m := range ms {
			out = append(out, named{m.Name})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /zones", func(w http.ResponseWriter, r *http.Request) {
		zs, err := d.cp.Zones(r.Context())
		if err != nil {
			writeError(w, err)
			return
		}
		out := make([]named, 0, len(zs))
		for _, z := range zs {
			out = append(out, named{z.Name})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /services", func(w http.ResponseWriter, r *http.Request) {
		mesh := r.URL.Query().Get("mesh")
		if mesh == "" {
			writeJSON(w, http.StatusBadRequest, message("mesh: the query parameter is required"))
			return
		}
		ss, err := d.services(r.Context(), mesh)
		if err != nil {
			writeError(w, err)
			return
		}
		out := make([]service, 0, len(ss))
		for _, s := range ss {
			out = append(out, service{s.Name, s.Mesh, s.Status, s.Dataplanes.Online, s.Dataplanes.Offline, s.Dataplanes.Total})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, message("no resource "+r.Method+" "+r.URL.Path+"; there are GET meshes, zones and services?mesh="))
	})
	return mux
}

func message(m string) map[string]string { return map[string]string{"message": m} }

// writeError answers a failed call to the control plane: 404 when the mesh
// does not exist, 502 otherwise.
func writeError(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	if kumaapi.IsNotFound(err) {
		status = http.StatusNotFound
	}
	backend.Logger.Warn("resource call failed", "error", err)
	writeJSON(w, status, message(err.Error()))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// jsonResponse is a CallResource answer outside the mux.
func jsonResponse(status int, v any) *backend.CallResourceResponse {
	b, _ := json.Marshal(v)
	return &backend.CallResourceResponse{Status: status, Headers: map[string][]string{"Content-Type": {"application/json"}}, Body: b}
}
