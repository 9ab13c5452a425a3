package kumactl_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
)

// serveFixtures makes the fake control plane answer lists and gets from the
// fixtures; the meshes "default", "demo" and "empty" exist.
func serveFixtures(f *fakeCP) {
	all := map[resource.Kind][]*resource.Object{
		resource.KindMesh:              fixtureMeshes(),
		resource.KindDataplane:         fixtureDataplanes(),
		resource.KindTrafficPermission: fixtureTrafficPermissions(),
		resource.KindGlobalSecret: {
			stored(resource.NewGlobalSecret("user-token-signing-key-1", []byte("key")), now.Add(-2*time.Hour)),
		},
	}
	meshExists := func(mesh string) bool {
		for _, m := range all[resource.KindMesh] {
			if m.Meta.Name == mesh {
				return true
			}
		}
		return false
	}
	f.List = func(w http.ResponseWriter, _ *http.Request, d resource.Descriptor, mesh string) {
		if mesh != "" && !meshExists(mesh) {
			writeNotFound(w)
			return
		}
		var out []*resource.Object
		for _, o := range all[d.Kind] {
			if mesh == "" || o.Meta.Mesh == mesh {
				out = append(out, o)
			}
		}
		writePage(w, out)
	}
	f.Get = func(w http.ResponseWriter, _ *http.Request, d resource.Descriptor, mesh, name string) {
		for _, o := range all[d.Kind] {
			if o.Meta.Name == name && o.Meta.Mesh == mesh {
				w.Header().Set("ETag", `"4"`)
				writeJSON(w, http.StatusOK, o)
				return
			}
		}
		writeNotFound(w)
	}
	f.Zones = func(w http.ResponseWriter, _ *http.Request) {
		writePage(w, []map[string]any{{"type": "Zone", "name": "Standalone", "enabled": true}})
	}
}

func TestGet(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"meshes table", []string{"get", "meshes"}},
		{"meshes yaml", []string{"get", "meshes", "-o", "yaml"}},
		{"meshes json", []string{"get", "meshes", "-o", "json"}},
		{"mesh table", []string{"get", "mesh", "default"}},
		{"mesh yaml", []string{"get", "mesh", "default", "-o", "yaml"}},
		{"mesh json", []string{"get", "mesh", "default", "--output=json"}},
		{"meshes with a name", []string{"get", "meshes", "demo"}},
		{"mesh not found", []string{"get", "mesh", "nope"}},
		{"mesh without a name", []string{"get", "mesh"}},
		{"dataplanes table", []string{"get", "dataplanes"}},
		{"dataplanes of every mesh", []string{"get", "dataplanes", "--mesh="}},
		{"dataplanes yaml", []string{"get", "dataplanes", "-o", "yaml"}},
		{"dataplanes of an empty mesh", []string{"get", "dataplanes", "-m", "empty"}},
		{"dataplanes of an empty mesh json", []string{"get", "dataplanes", "-m", "empty", "-o", "json"}},
		{"dataplanes of a missing mesh", []string{"get", "dataplanes", "-m", "nope"}},
		{"dataplane table", []string{"get", "dataplane", "web-1"}},
		{"dataplane not found", []string{"get", "dataplane", "web-1", "-m", "demo"}},
		{"traffic-permissions table", []string{"get", "traffic-permissions"}},
		{"traffic-permission yaml", []string{"get", "traffic-permission", "allow-all", "-o", "yaml"}},
		{"global-secrets table", []string{"get", "global-secrets"}},
		{"global-secret yaml", []string{"get", "global-secret", "user-token-signing-key-1", "-o", "yaml"}},
		{"zones table", []string{"get", "zones"}},
		{"zones json", []string{"get", "zones", "-o", "json"}},
		{"unknown kind", []string{"get", "services"}},
		{"unknown output", []string{"get", "meshes", "-o", "xml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			serveFixtures(e.cp)
			golden(t, "get/"+tc.name, e.run(tc.args...).String())
		})
	}
}

func TestGetPagesThroughEverything(t *testing.T) {
	e := newEnv(t)
	e.cp.List = func(w http.ResponseWriter, r *http.Request, _ resource.Descriptor, _ string) {
		meshes := fixtureMeshes()
		if r.URL.Query().Get("offset") == "" {
			writeJSON(w, http.StatusOK, map[string]any{"total": 3, "items": meshes[:2], "next": "http://elsewhere:5681/meshes?offset=2&size=2"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"total": 3, "items": meshes[2:], "next": nil})
	}
	res := e.run("get", "meshes")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, []string{"GET /meshes", "GET /meshes?offset=2&size=2"}, e.cp.seen())
	require.Contains(t, res.stdout, "empty")
}

func TestServerErrorIsPrinted(t *testing.T) {
	e := newEnv(t)
	e.cp.List = func(w http.ResponseWriter, _ *http.Request, _ resource.Descriptor, _ string) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>\n"))
	}
	golden(t, "get/proxy error", e.run("get", "meshes").String(), e.cp.URL(), "{{SERVER}}")
}
