package apiclient_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

// fakeAPI is an httptest control plane whose routes are handler funcs keyed
// by "METHOD /path" (the path as received, escaped). An unexpected request
// fails the test.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	routes map[string]http.HandlerFunc

	mu       sync.Mutex
	requests []string
}

func newFake(t *testing.T, routes map[string]http.HandlerFunc) *fakeAPI {
	f := &fakeAPI{t: t, routes: routes}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.EscapedPath()
		f.mu.Lock()
		f.requests = append(f.requests, key+queryOf(r))
		f.mu.Unlock()
		h, ok := f.routes[key]
		if !ok {
			t.Errorf("unexpected request %s", key)
			http.Error(w, "unexpected", http.StatusTeapot)
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func queryOf(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

func (f *fakeAPI) client(t *testing.T, opts ...apiclient.Option) *apiclient.Client {
	c, err := apiclient.New(f.srv.URL, opts...)
	require.NoError(t, err)
	return c
}

func (f *fakeAPI) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func respond(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, status, body) }
}

func TestIndex(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /": respond(200, `{"hostname":"cp-0","tagline":"Kuma","version":"0.1.0","instanceId":"cp-0-1234"}`),
	})
	idx, err := f.client(t).Index(context.Background())
	require.NoError(t, err)
	require.Equal(t, &apiclient.Index{Hostname: "cp-0", Tagline: "Kuma", Version: "0.1.0", InstanceID: "cp-0-1234"}, idx)
}

func TestBasePathPrefixIsKept(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /kuma/meshes/default": respond(200, `{"type":"Mesh","name":"default"}`),
	})
	c, err := apiclient.New(f.srv.URL + "/kuma/")
	require.NoError(t, err)
	_, err = c.Get(context.Background(), resource.KindMesh, "", "default")
	require.NoError(t, err)
}

func TestGet(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /meshes/default": func(w http.ResponseWriter, r *http.Request) {
			require.Equal(t, "application/json", r.Header.Get("Accept"))
			w.Header().Set("ETag", `"7"`)
			writeJSON(w, 200, `{"type":"Mesh","name":"default","creationTime":"2024-05-01T10:00:00Z","modificationTime":"2024-05-02T10:00:00Z","mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]}}`)
		},
		"GET /meshes/demo/dataplanes/dp%201":        respond(200, `{"type":"Dataplane","mesh":"demo","name":"dp 1","networking":{"address":"10.0.0.1"}}`),
		"GET /meshes/demo/traffic-permissions/nope": respond(404, `{"title":"Could not find a resource","details":"resource not found"}`),
	})
	c := f.client(t)
	ctx := context.Background()

	mesh, err := c.Get(ctx, resource.KindMesh, "ignored", "default")
	require.NoError(t, err)
	require.Equal(t, resource.KindMesh, mesh.Meta.Kind)
	require.Equal(t, int64(7), mesh.Meta.Version)
	require.Equal(t, time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), mesh.Meta.CreationTime)
	require.Equal(t, "ca-1", mesh.Mesh().MTLS.EnabledBackend)

	dp, err := c.Get(ctx, resource.KindDataplane, "demo", "dp 1")
	require.NoError(t, err)
	require.Equal(t, resource.Key{Mesh: "demo", Name: "dp 1"}, dp.Meta.Key())
	require.Equal(t, "10.0.0.1", dp.Dataplane().Networking.Address)

	_, err = c.Get(ctx, resource.KindTrafficPermission, "demo", "nope")
	require.True(t, apiclient.IsNotFound(err))
	require.EqualError(t, err, "Could not find a resource (404): resource not found")

	_, err = c.Get(ctx, resource.KindDataplane, "", "dp-1")
	require.EqualError(t, err, "a mesh is required")
	_, err = c.Get(ctx, resource.KindDataplane, "demo", "..")
	require.EqualError(t, err, `invalid name ".."`)
}

// page answers one page of a collection the way the API does: the next link
// names the host the control plane believes it has, not the test server's.
func page(total int, items []string, next string) string {
	n := "null"
	if next != "" {
		n = strconv.Quote("http://cp.internal:5681" + next)
	}
	return fmt.Sprintf(`{"total":%d,"items":[%s],"next":%s}`, total, strings.Join(items, ","), n)
}

func mesh(name string) string { return fmt.Sprintf(`{"type":"Mesh","name":%q}`, name) }

func TestListFollowsNext(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /meshes": func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("offset") {
			case "":
				writeJSON(w, 200, page(5, []string{mesh("a"), mesh("b")}, "/meshes?offset=2&size=2"))
			case "2":
				writeJSON(w, 200, page(5, []string{mesh("c"), mesh("d")}, "/meshes?offset=4&size=2"))
			case "4":
				writeJSON(w, 200, page(5, []string{mesh("e")}, ""))
			default:
				t.Errorf("unexpected offset %q", r.URL.RawQuery)
			}
		},
	})
	got, err := f.client(t, apiclient.WithPageSize(2)).List(context.Background(), resource.KindMesh, "")
	require.NoError(t, err)
	var names []string
	for _, o := range got {
		names = append(names, o.Meta.Name)
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, names)
	require.Equal(t, []string{"GET /meshes?size=2", "GET /meshes?offset=2&size=2", "GET /meshes?offset=4&size=2"}, f.seen())
}

func TestListPaths(t *testing.T) {
	dp := func(mesh, name string) string {
		return fmt.Sprintf(`{"type":"Dataplane","mesh":%q,"name":%q}`, mesh, name)
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /dataplanes":                   respond(200, page(2, []string{dp("a", "x"), dp("b", "y")}, "")),
		"GET /meshes/a/dataplanes":          respond(200, page(1, []string{dp("a", "x")}, "")),
		"GET /meshes/a/traffic-permissions": respond(200, page(0, nil, "")),
		"GET /meshes":                       respond(200, page(0, nil, "")),
	})
	c := f.client(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		kind  resource.Kind
		mesh  string
		count int
	}{
		{"all meshes", resource.KindDataplane, "", 2},
		{"one mesh", resource.KindDataplane, "a", 1},
		{"empty", resource.KindTrafficPermission, "a", 0},
		{"meshes ignore the mesh", resource.KindMesh, "a", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.List(ctx, tc.kind, tc.mesh)
			require.NoError(t, err)
			require.Len(t, got, tc.count)
			require.NotNil(t, got)
		})
	}
}

func TestListStopsWhenPagingDoesNotAdvance(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /meshes": respond(200, page(9, []string{mesh("a")}, "/meshes?offset=1&size=1")),
	})
	_, err := f.client(t).List(context.Background(), resource.KindMesh, "")
	require.ErrorContains(t, err, "paging does not advance")
	require.Len(t, f.seen(), 2)
}

func TestListItemFromNewerServer(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /meshes": respond(200, page(1, []string{`{"type":"Mesh","name":"a","futureField":1}`}, "")),
	})
	items, err := f.client(t).List(context.Background(), resource.KindMesh, "")
	require.NoError(t, err, "a newer control plane's extra fields are ignored")
	require.Len(t, items, 1)
	require.Equal(t, "a", items[0].Meta.Name)
}

func TestPut(t *testing.T) {
	var gotBody, gotIfMatch string
	f := newFake(t, map[string]http.HandlerFunc{
		"PUT /meshes/default/dataplanes/dp-1": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			gotBody, gotIfMatch = string(b), r.Header.Get("If-Match")
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			w.Header().Set("ETag", `"3"`)
			status := 200
			if gotIfMatch == "" {
				status = 201
			}
			writeJSON(w, status, `{"type":"Dataplane","mesh":"default","name":"dp-1","creationTime":"2024-05-01T10:00:00Z","modificationTime":"2024-05-01T10:00:00Z","networking":{"address":"10.0.0.1"}}`)
		},
		"PUT /meshes/bad": respond(400, `{"title":"Could not process a resource","details":"Resource is not valid","causes":[{"field":"metrics.backends[0].conf.port","message":"must be in the range 1-65535"},{"field":"","message":"whole resource"}]}`),
	})
	c := f.client(t)
	ctx := context.Background()
	obj := resource.New("default", "dp-1", &resource.DataplaneSpec{Networking: &resource.Networking{Address: "10.0.0.1"}})

	stored, created, err := c.Put(ctx, obj, 0)
	require.NoError(t, err)
	require.True(t, created)
	require.Empty(t, gotIfMatch)
	require.JSONEq(t, `{"type":"Dataplane","mesh":"default","name":"dp-1","networking":{"address":"10.0.0.1"}}`, gotBody)
	require.Equal(t, int64(3), stored.Meta.Version)
	require.False(t, stored.Meta.CreationTime.IsZero())

	_, created, err = c.Put(ctx, obj, 2)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, `"2"`, gotIfMatch)

	_, _, err = c.Put(ctx, resource.New("", "bad", &resource.MeshSpec{}), 0)
	require.Equal(t, 400, apiclient.StatusOf(err))
	require.EqualError(t, err, "Could not process a resource (400): Resource is not valid\n"+
		"* metrics.backends[0].conf.port: must be in the range 1-65535\n"+
		"* whole resource")
}

func TestDelete(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"DELETE /meshes/default/traffic-permissions/allow-all": respond(200, `{}`),
		"DELETE /meshes/gone": respond(404, `{"title":"Could not find a resource","details":"not found"}`),
	})
	c := f.client(t)
	require.NoError(t, c.Delete(context.Background(), resource.KindTrafficPermission, "default", "allow-all"))
	err := c.Delete(context.Background(), resource.KindMesh, "", "gone")
	require.True(t, apiclient.IsNotFound(err))
}

func TestErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		contentType string
		body        string
		want        string
	}{
		{
			name: "api error with causes", status: 400, contentType: "application/json",
			body: `{"title":"Resource is not valid","causes":[{"field":"name","message":"must not be empty"}]}`,
			want: "Resource is not valid (400)\n* name: must not be empty",
		},
		{
			name: "conflict", status: 409, contentType: "application/json",
			body: `{"title":"Could not write a resource","details":"version conflict"}`,
			want: "Could not write a resource (409): version conflict",
		},
		{
			name: "proxy html page", status: 502, contentType: "text/html; charset=utf-8",
			body: "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n</body>\n</html>\n",
			want: "Bad Gateway (502): GET {{URL}}/meshes answered with text/html, not with the control plane API's JSON (is a proxy or another server at this address?): " +
				"<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> </body> </html>",
		},
		{
			name: "empty body", status: 503, contentType: "",
			want: "Service Unavailable (503): GET {{URL}}/meshes answered with no Content-Type, not with the control plane API's JSON (is a proxy or another server at this address?)",
		},
		{
			name: "json that is not an api error", status: 500, contentType: "application/json", body: `{"message":"boom"}`,
			want: `Internal Server Error (500): GET {{URL}}/meshes answered with application/json, not with the control plane API's JSON (is a proxy or another server at this address?): {"message":"boom"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, map[string]http.HandlerFunc{
				"GET /meshes": func(w http.ResponseWriter, _ *http.Request) {
					if tc.contentType != "" {
						w.Header().Set("Content-Type", tc.contentType)
					}
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, tc.body)
				},
			})
			_, err := f.client(t).List(context.Background(), resource.KindMesh, "")
			require.Error(t, err)
			require.Equal(t, tc.status, apiclient.StatusOf(err))
			require.Equal(t, strings.ReplaceAll(tc.want, "{{URL}}", f.srv.URL), err.Error())
		})
	}
}

func TestSuccessThatIsNotJSON(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>login</html>")
		},
		"GET /meshes/m": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>login</html>")
		},
	})
	_, err := f.client(t).Index(context.Background())
	require.EqualError(t, err, "GET "+f.srv.URL+"/ answered with text/html, not with the control plane API's JSON (is a proxy or another server at this address?): <html>login</html>")
	_, err = f.client(t).Get(context.Background(), resource.KindMesh, "", "m")
	require.ErrorContains(t, err, "answered with text/html")
}

func TestTimeout(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /": func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
	})
	_, err := f.client(t, apiclient.WithTimeout(50*time.Millisecond)).Index(context.Background())
	require.EqualError(t, err, "GET "+f.srv.URL+"/: the control plane did not answer within 50ms")
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c, err := apiclient.New(addr)
	require.NoError(t, err)
	_, err = c.Index(context.Background())
	require.ErrorContains(t, err, "cannot reach the control plane at "+addr+" (GET "+addr+"/): ")
	require.Zero(t, apiclient.StatusOf(err))
}

type countingTransport struct {
	n  int
	ua string
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n++
	c.ua = r.Header.Get("User-Agent")
	return http.DefaultTransport.RoundTrip(r)
}

func TestInjectedHTTPClient(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{"GET /zones": respond(200, `{"total":1,"items":[{"type":"Zone","name":"Standalone","enabled":true}],"next":null}`)})
	tr := &countingTransport{}
	zones, err := f.client(t, apiclient.WithHTTPClient(&http.Client{Transport: tr}), apiclient.WithUserAgent("kumactl/test")).Zones(context.Background())
	require.NoError(t, err)
	require.Equal(t, []apiclient.Zone{{Name: "Standalone", Enabled: true}}, zones)
	require.Equal(t, 1, tr.n)
	require.Equal(t, "kumactl/test", tr.ua)
}

func TestInsights(t *testing.T) {
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /meshes/default/dataplanes+insights": respond(200, `{"total":1,"items":[{"type":"DataplaneOverview","mesh":"default","name":"dp-1",
			"creationTime":"2024-05-01T10:00:00Z","modificationTime":"2024-05-01T10:00:00Z",
			"dataplane":{"networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]}},
			"dataplaneInsight":{"subscriptions":[
				{"id":"s1","controlPlaneInstanceId":"cp-1","connectTime":"2024-05-01T10:00:00Z","disconnectTime":"2024-05-01T11:00:00Z","status":{"lastUpdateTime":"2024-05-01T10:30:00Z","total":{"responsesSent":4,"responsesAcknowledged":3,"responsesRejected":1}}},
				{"id":"s2","controlPlaneInstanceId":"cp-1","connectTime":"2024-05-01T11:00:01Z","status":{"total":{"responsesSent":2,"responsesAcknowledged":2,"responsesRejected":0}},"configVersion":"v9"}]},
			"status":"Online"}],"next":null}`),
		"GET /meshes/default/service-insights": respond(200, `{"total":1,"items":[{"type":"ServiceInsight","mesh":"default","name":"backend","status":"partially_degraded","dataplanes":{"online":2,"offline":1,"total":3}}],"next":null}`),
	})
	c := f.client(t)
	ctx := context.Background()
	dps, err := c.DataplaneOverviews(ctx, "default")
	require.NoError(t, err)
	require.Len(t, dps, 1)
	require.Equal(t, apiclient.StatusOnline, dps[0].Status)
	require.Equal(t, []string{"backend"}, dps[0].Dataplane.Services())
	latest := dps[0].DataplaneInsight.Latest()
	require.Equal(t, "s2", latest.ID)
	require.Nil(t, latest.DisconnectTime)
	require.Equal(t, uint64(1), dps[0].DataplaneInsight.Subscriptions[0].Status.Total.ResponsesRejected)

	svcs, err := c.ServiceInsights(ctx, "default")
	require.NoError(t, err)
	require.Equal(t, []apiclient.ServiceInsight{{Mesh: "default", Name: "backend", Status: apiclient.ServicePartiallyDegraded,
		Dataplanes: apiclient.DataplaneCounts{Online: 2, Offline: 1, Total: 3}}}, svcs)

	_, err = c.DataplaneOverviews(ctx, "")
	require.Error(t, err)
}

func TestNewRejectsBadAddresses(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"localhost:5681", `invalid control plane address "localhost:5681": must start with http:// or https://`},
		{"http://", `invalid control plane address "http://": no host`},
		{"http://cp:5681/?x=1", `invalid control plane address "http://cp:5681/?x=1": must not have a query or a fragment`},
		{"ftp://cp", `invalid control plane address "ftp://cp": must start with http:// or https://`},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			_, err := apiclient.New(tc.addr)
			require.EqualError(t, err, tc.want)
		})
	}
	_, err := apiclient.New("http://cp", apiclient.WithPageSize(5000))
	require.Error(t, err)
}

func TestErrorRendering(t *testing.T) {
	e := &apiclient.Error{Status: 418}
	require.Equal(t, "I'm a teapot (418)", e.Error())
	var target *apiclient.Error
	require.ErrorAs(t, fmt.Errorf("wrapped: %w", e), &target)
}

func TestTokenIsSentOnEveryRequest(t *testing.T) {
	var auths []string
	record := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			auths = append(auths, r.Header.Get("Authorization"))
			h(w, r)
		}
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"GET /": record(respond(200, `{"tagline":"Kuma"}`)),
		"GET /meshes": record(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("offset") == "" {
				writeJSON(w, 200, page(2, []string{mesh("a")}, "/meshes?offset=1&size=1"))
				return
			}
			writeJSON(w, 200, page(2, []string{mesh("b")}, ""))
		}),
		"PUT /meshes/a":    record(respond(200, mesh("a"))),
		"DELETE /meshes/a": record(respond(200, `{}`)),
	})
	c := f.client(t, apiclient.WithToken(" abc.def.ghi\n"), apiclient.WithPageSize(1))
	ctx := context.Background()
	_, err := c.Index(ctx)
	require.NoError(t, err)
	_, err = c.List(ctx, resource.KindMesh, "")
	require.NoError(t, err)
	_, _, err = c.Put(ctx, resource.New("", "a", &resource.MeshSpec{}), 0)
	require.NoError(t, err)
	require.NoError(t, c.Delete(ctx, resource.KindMesh, "", "a"))
	require.Equal(t, []string{"Bearer abc.def.ghi", "Bearer abc.def.ghi", "Bearer abc.def.ghi", "Bearer abc.def.ghi", "Bearer abc.def.ghi"}, auths)

	auths = nil
	_, err = f.client(t).Index(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{""}, auths, "no token, no header")
}

func TestGenerateTokens(t *testing.T) {
	var bodies []string
	token := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Contains(t, r.Header.Get("Accept"), "text/plain")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "eyJh.eyJi.c2ln")
	}
	f := newFake(t, map[string]http.HandlerFunc{
		"POST /tokens/dataplane": token,
		"POST /tokens/user":      token,
	})
	c := f.client(t)
	ctx := context.Background()

	got, err := c.GenerateDataplaneToken(ctx, apiclient.DataplaneTokenRequest{Mesh: "default", Name: "dp-1", ValidFor: 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, "eyJh.eyJi.c2ln", got)
	got, err = c.GenerateDataplaneToken(ctx, apiclient.DataplaneTokenRequest{Mesh: "default", Name: "dp-2",
		Tags: map[string][]string{"kuma.io/service": {"backend", "backend-admin"}, "version": {"*"}}})
	require.NoError(t, err)
	require.Equal(t, "eyJh.eyJi.c2ln", got)
	got, err = c.GenerateUserToken(ctx, "bob", []string{"dev", "ops"}, 0)
	require.NoError(t, err)
	require.Equal(t, "eyJh.eyJi.c2ln", got)
	_, err = c.GenerateUserToken(ctx, "carol", nil, 90*time.Minute)
	require.NoError(t, err)
	require.Equal(t, []string{
		`{"mesh":"default","name":"dp-1","validFor":"24h0m0s"}`,
		`{"mesh":"default","name":"dp-2","tags":{"kuma.io/service":["backend","backend-admin"],"version":["*"]}}`,
		`{"name":"bob","groups":["dev","ops"]}`,
		`{"name":"carol","validFor":"1h30m0s"}`,
	}, bodies)

	_, err = c.GenerateDataplaneToken(ctx, apiclient.DataplaneTokenRequest{Name: "dp-1"})
	require.EqualError(t, err, "dataplane token: a mesh is required")
	_, err = c.GenerateDataplaneToken(ctx, apiclient.DataplaneTokenRequest{Mesh: "default"})
	require.EqualError(t, err, "dataplane token: a dataplane name is required")
	_, err = c.GenerateUserToken(ctx, "", nil, 0)
	require.EqualError(t, err, "user token: a user name is required")
	require.Len(t, bodies, 4, "invalid requests are not sent")
}

func TestGenerateTokenErrors(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		want                    string
	}{
		{name: "forbidden", status: 403, contentType: "application/json",
			body: `{"title":"Access denied","details":"user \"alice\" may not POST /tokens/user: it is allowed to admins only (group mesh-system:admin)"}`,
			want: `Access denied (403): user "alice" may not POST /tokens/user: it is allowed to admins only (group mesh-system:admin)`},
		{name: "bad request", status: 400, contentType: "application/json",
			body: `{"title":"Could not issue a token","details":"Request is not valid","causes":[{"field":"validFor","message":"must not be negative"}]}`,
			want: "Could not issue a token (400): Request is not valid\n* validFor: must not be negative"},
		{name: "html page", status: 200, contentType: "text/html", body: "<html>login</html>",
			want: "user token: POST {{URL}}/tokens/user answered with text/html, not with the control plane API's JSON (is a proxy or another server at this address?)"},
		{name: "text that is not a token", status: 200, contentType: "text/plain", body: "hello world",
			want: "user token: POST {{URL}}/tokens/user answered with text/plain, not with the control plane API's JSON (is a proxy or another server at this address?)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, map[string]http.HandlerFunc{
				"POST /tokens/user": func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", tc.contentType)
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, tc.body)
				},
			})
			_, err := f.client(t).GenerateUserToken(context.Background(), "bob", nil, 0)
			require.EqualError(t, err, strings.ReplaceAll(tc.want, "{{URL}}", f.srv.URL))
		})
	}
}
