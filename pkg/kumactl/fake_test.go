package kumactl_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/kumactl"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/resource"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// now is the fixed clock of every test.
var now = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeCP is a control plane API on an httptest server. Each endpoint is a
// func field; a request to an endpoint whose field is nil fails the test.
type fakeCP struct {
	t   *testing.T
	srv *httptest.Server

	Index           func(w http.ResponseWriter, r *http.Request)
	List            func(w http.ResponseWriter, r *http.Request, d resource.Descriptor, mesh string)
	Get             func(w http.ResponseWriter, r *http.Request, d resource.Descriptor, mesh, name string)
	Put             func(w http.ResponseWriter, r *http.Request, obj *resource.Object)
	Delete          func(w http.ResponseWriter, r *http.Request, d resource.Descriptor, mesh, name string)
	Overviews       func(w http.ResponseWriter, r *http.Request, mesh string)
	ServiceInsights func(w http.ResponseWriter, r *http.Request, mesh string)
	Zones           func(w http.ResponseWriter, r *http.Request)
	DataplaneToken  func(w http.ResponseWriter, r *http.Request, body map[string]any)
	UserToken       func(w http.ResponseWriter, r *http.Request, body map[string]any)

	mu       sync.Mutex
	requests []string
	// auths are the Authorization headers of the requests, in order.
	auths []string
	// peers are the common names of the client certificates of the
	// requests, in order ("" without one).
	peers []string
}

// newFakeCP serves a fake API over plain HTTP, or over HTTPS with tlsConfig.
func newFakeCP(t *testing.T, tlsConfig ...*tls.Config) *fakeCP {
	f := &fakeCP{t: t}
	mux := http.NewServeMux()
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) bool) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if !h(w, r) {
				t.Errorf("unexpected request %s %s", r.Method, r.URL)
				writeError(w, http.StatusTeapot, "unexpected request", "", nil)
			}
		})
	}
	handle("GET /{$}", func(w http.ResponseWriter, r *http.Request) bool {
		return f.Index != nil && call(func() { f.Index(w, r) })
	})
	for _, d := range resource.Descriptors() {
		item := "/" + d.Plural + "/{name}"
		if d.Scoped {
			item = "/meshes/{mesh}/" + d.Plural + "/{name}"
			handle("GET /meshes/{mesh}/"+d.Plural, func(w http.ResponseWriter, r *http.Request) bool {
				return f.List != nil && call(func() { f.List(w, r, d, r.PathValue("mesh")) })
			})
		}
		handle("GET /"+d.Plural, func(w http.ResponseWriter, r *http.Request) bool {
			return f.List != nil && call(func() { f.List(w, r, d, "") })
		})
		handle("GET "+item, func(w http.ResponseWriter, r *http.Request) bool {
			return f.Get != nil && call(func() { f.Get(w, r, d, r.PathValue("mesh"), r.PathValue("name")) })
		})
		handle("DELETE "+item, func(w http.ResponseWriter, r *http.Request) bool {
			return f.Delete != nil && call(func() { f.Delete(w, r, d, r.PathValue("mesh"), r.PathValue("name")) })
		})
		handle("PUT "+item, func(w http.ResponseWriter, r *http.Request) bool {
			if f.Put == nil {
				return false
			}
			body, _ := io.ReadAll(r.Body)
			obj, err := resource.DecodeJSON(body)
			if err != nil {
				t.Errorf("kumactl sent a resource the API cannot read: %v: %s", err, body)
				writeError(w, http.StatusBadRequest, "bad resource", err.Error(), nil)
				return true
			}
			if obj.Meta.Kind != d.Kind || obj.Meta.Name != r.PathValue("name") || obj.Meta.Mesh != r.PathValue("mesh") {
				t.Errorf("PUT %s carries %s %s", r.URL.Path, obj.Meta.Kind, obj.Meta.Key())
			}
			f.Put(w, r, obj)
			return true
		})
	}
	handle("GET /meshes/{mesh}/dataplanes+insights", func(w http.ResponseWriter, r *http.Request) bool {
		return f.Overviews != nil && call(func() { f.Overviews(w, r, r.PathValue("mesh")) })
	})
	handle("GET /meshes/{mesh}/service-insights", func(w http.ResponseWriter, r *http.Request) bool {
		return f.ServiceInsights != nil && call(func() { f.ServiceInsights(w, r, r.PathValue("mesh")) })
	})
	handle("GET /zones", func(w http.ResponseWriter, r *http.Request) bool {
		return f.Zones != nil && call(func() { f.Zones(w, r) })
	})
	tokenBody := func(r *http.Request) map[string]any {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("kumactl sent a token request that is not JSON: %v", err)
		}
		return body
	}
	handle("POST /tokens/dataplane", func(w http.ResponseWriter, r *http.Request) bool {
		return f.DataplaneToken != nil && call(func() { f.DataplaneToken(w, r, tokenBody(r)) })
	})
	handle("POST /tokens/user", func(w http.ResponseWriter, r *http.Request) bool {
		return f.UserToken != nil && call(func() { f.UserToken(w, r, tokenBody(r)) })
	})
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			peer = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		f.peers = append(f.peers, peer)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	if len(tlsConfig) > 0 {
		f.srv.TLS = tlsConfig[0]
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func call(fn func()) bool { fn(); return true }

func (f *fakeCP) URL() string { return f.srv.URL }

func (f *fakeCP) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func (f *fakeCP) clientCertificates() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.peers...)
}

func (f *fakeCP) authorizations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auths...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, title, details string, causes []resource.Cause) {
	writeJSON(w, status, map[string]any{"title": title, "details": details, "causes": causes})
}

func writeNotFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "Could not find a resource", "resource not found", nil)
}

// writePage answers a collection in one page.
func writePage[T any](w http.ResponseWriter, items []T) {
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": len(items), "items": items, "next": nil})
}

func indexHandler(version string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"hostname": "cp-0", "tagline": "Kuma", "version": version, "instanceId": "cp-0-a1b2"})
	}
}

// env runs kumactl against a fake control plane, with a config file in a
// temporary directory naming it.
type env struct {
	t       *testing.T
	cp      *fakeCP
	cfgFile string
	stdin   string
	// newClient replaces kumactl's API client factory when set.
	newClient func(address string, timeout time.Duration, opts ...apiclient.Option) (*apiclient.Client, error)
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, cp: newFakeCP(t), cfgFile: filepath.Join(t.TempDir(), ".kumactl", "config")}
	cfg := config.Default()
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "test", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: e.cp.URL()}}}, false))
	require.NoError(t, config.Save(e.cfgFile, cfg))
	return e
}

type result struct {
	stdout, stderr string
	code           int
}

// String is the golden form of a run.
func (r result) String() string {
	return fmt.Sprintf("exit code: %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

func (e *env) run(args ...string) result {
	var stdout, stderr bytes.Buffer
	rc := &kumactl.RootContext{
		Stdin:     strings.NewReader(e.stdin),
		Stdout:    &stdout,
		Stderr:    &stderr,
		Now:       func() time.Time { return now },
		Version:   "1.2.3-test",
		NewClient: e.newClient,
	}
	args = append([]string{"--config-file", e.cfgFile}, args...)
	code := kumactl.Execute(context.Background(), rc, args)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// golden compares got with testdata/NAME.golden, after replacing the
// variable parts (server addresses) with placeholders given as pairs.
func golden(t *testing.T, name, got string, replace ...string) {
	t.Helper()
	if len(replace) > 0 {
		got = strings.NewReplacer(replace...).Replace(got)
	}
	path := filepath.Join("testdata", strings.ReplaceAll(name, " ", "-")+".golden")
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file; run go test with -update")
	require.Equal(t, string(want), got, "golden file %s (run go test with -update after checking the change)", path)
}

// Fixtures.

func ptr[T any](v T) *T { return &v }

func stored(o *resource.Object, created time.Time) *resource.Object {
	o.Meta.CreationTime = created
	o.Meta.ModificationTime = created
	return o
}

func fixtureMeshes() []*resource.Object {
	return []*resource.Object{
		stored(resource.New("", "default", &resource.MeshSpec{
			MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}},
			Metrics: &resource.Metrics{EnabledBackend: "prometheus-1", Backends: []resource.MetricsBackend{
				{Name: "prometheus-1", Type: "prometheus", Conf: &resource.PrometheusConf{Port: ptr(uint32(5670)), Path: "/metrics"}},
			}},
		}), now.Add(-5*24*time.Hour)),
		stored(resource.New("", "demo", &resource.MeshSpec{
			MTLS: &resource.MTLS{Backends: []resource.CertificateAuthorityBackend{{Name: "ca-1", Type: "builtin"}}},
		}), now.Add(-4*time.Hour)),
		stored(resource.New("", "empty", &resource.MeshSpec{}), now.Add(-45*time.Second)),
	}
}

func fixtureDataplanes() []*resource.Object {
	return []*resource.Object{
		stored(resource.New("default", "backend-1", &resource.DataplaneSpec{Networking: &resource.Networking{
			Address: "10.0.0.1",
			Inbound: []resource.Inbound{
				{Port: 8080, Tags: map[string]string{"kuma.io/service": "backend", "version": "v1"}},
				{Port: 8081, Tags: map[string]string{"kuma.io/service": "backend-admin", "version": "v1"}},
			},
		}}), now.Add(-3*time.Minute)),
		stored(resource.New("default", "web-1", &resource.DataplaneSpec{Networking: &resource.Networking{
			Address: "10.0.0.2",
			Inbound: []resource.Inbound{{Port: 80, Tags: map[string]string{"kuma.io/service": "web", "kuma.io/protocol": "http"}}},
		}}), now.Add(-26*time.Hour)),
		stored(resource.New("demo", "api-1", &resource.DataplaneSpec{Networking: &resource.Networking{
			Address: "10.1.0.1",
			Inbound: []resource.Inbound{{Port: 9090, Tags: map[string]string{"kuma.io/service": "api"}}},
		}}), now.Add(-90*time.Second)),
	}
}

func fixtureTrafficPermissions() []*resource.Object {
	return []*resource.Object{
		stored(resource.New("default", "allow-all", &resource.TrafficPermissionSpec{
			Sources:      []resource.Selector{{Match: map[string]string{"kuma.io/service": "*"}}},
			Destinations: []resource.Selector{{Match: map[string]string{"kuma.io/service": "*"}}},
		}), now.Add(-400*24*time.Hour)),
	}
}
