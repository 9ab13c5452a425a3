package apiserver_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

const (
	loopbackAddr = "127.0.0.1:40000"
	remoteAddr   = "10.1.2.3:40000"
)

// authEnv is an API server with tokens, called in-process so that a test
// can pick the caller's address.
type authEnv struct {
	api    *apiserver.Server
	issuer *authn.Issuer
	st     *memory.Store
	mgr    *manager.Manager
	// tokens by identity name.
	admin, user, expired, forged string
}

func newAuthEnv(t *testing.T, localhostIsAdmin bool) *authEnv {
	t.Helper()
	st := memory.New()
	mgr := manager.New(st, nil)
	ctx := context.Background()
	require.NoError(t, mgr.EnsureDefaultMesh(ctx))
	_, err := mgr.Apply(ctx, resource.NewSecret("default", "s1", []byte("top secret")), 0)
	require.NoError(t, err)
	_, err = mgr.Apply(ctx, resource.NewGlobalSecret("user-token-signing-key-1", []byte("signing key")), 0)
	require.NoError(t, err)

	dir := t.TempDir()
	iss, err := authn.Load(dir, nil)
	require.NoError(t, err)
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr, Tokens: iss, LocalhostIsAdmin: localhostIsAdmin})
	require.NoError(t, err)

	e := &authEnv{api: api, issuer: iss, st: st, mgr: mgr}
	admin, err := os.ReadFile(filepath.Join(dir, authn.AdminTokenFile))
	require.NoError(t, err)
	e.admin = strings.TrimSpace(string(admin))
	e.user, err = iss.IssueUser("alice", []string{"dev"}, time.Hour)
	require.NoError(t, err)
	// Same keys, a clock two hours behind: the token expired an hour ago.
	past, err := authn.Load(dir, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	require.NoError(t, err)
	e.expired, err = past.IssueUser(authn.AdminUser, []string{authn.AdminGroup}, time.Hour)
	require.NoError(t, err)
	p := strings.Split(e.user, ".")
	e.forged = p[0] + "." + base64URL(`{"sub":"alice","groups":["mesh-system:admin"]}`) + "." + p[2]
	return e
}

func base64URL(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func (e *authEnv) do(t *testing.T, remote, token, method, path, body string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

const secret = `{"type":"Secret","mesh":"default","name":"s2","data":"aGVsbG8="}`

func TestAuthorization(t *testing.T) {
	type route struct {
		name, method, path, body string
	}
	routes := []route{
		{"read mesh", "GET", "/meshes/default", ""},
		{"list meshes", "GET", "/meshes", ""},
		{"index", "GET", "/", ""},
		{"insights", "GET", "/meshes/default/dataplanes+insights", ""},
		{"write mesh", "PUT", "/meshes/default", meshWithMetrics},
		{"delete dataplane", "DELETE", "/meshes/default/dataplanes/nope", ""},
		{"read secret", "GET", "/meshes/default/secrets/s1", ""},
		{"write secret", "PUT", "/meshes/default/secrets/s2", secret},
		{"list secrets of a mesh", "GET", "/meshes/default/secrets", ""},
		{"list secrets", "GET", "/secrets", ""},
		{"read global secret", "GET", "/global-secrets/user-token-signing-key-1", ""},
		{"write global secret", "PUT", "/global-secrets/g2", `{"type":"GlobalSecret","name":"g2","data":"aGVsbG8="}`},
		{"list global secrets", "GET", "/global-secrets", ""},
		{"dataplane token", "POST", "/tokens/dataplane", `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["*"]}}`},
		{"user token", "POST", "/tokens/user", `{"name":"bob","groups":["dev"]}`},
	}
	// What an admin gets on each route.
	adminStatus := map[string]int{"write secret": 201, "write global secret": 201, "delete dataplane": 404}
	public := map[string]bool{"read mesh": true, "list meshes": true, "index": true, "insights": true}

	type identity struct {
		name     string
		remote   string
		token    func(e *authEnv) string
		localIs  bool
		expected func(r route) int
	}
	asAdmin := func(r route) int {
		if s, ok := adminStatus[r.name]; ok {
			return s
		}
		return 200
	}
	refusedWith := func(status int) func(r route) int {
		return func(r route) int {
			if public[r.name] {
				return 200
			}
			return status
		}
	}
	always := func(status int) func(route) int { return func(route) int { return status } }
	identities := []identity{
		{name: "loopback", remote: loopbackAddr, localIs: true, expected: asAdmin},
		{name: "loopback ipv6", remote: "[::1]:40000", localIs: true, expected: asAdmin},
		{name: "loopback ipv4-mapped", remote: "[::ffff:127.0.0.2]:40000", localIs: true, expected: asAdmin},
		{name: "loopback when localhost is not admin", remote: loopbackAddr, localIs: false, expected: refusedWith(401)},
		{name: "remote anonymous", remote: remoteAddr, localIs: true, expected: refusedWith(401)},
		{name: "remote ipv4-mapped anonymous", remote: "[::ffff:10.0.0.1]:40000", localIs: true, expected: refusedWith(401)},
		{name: "remote user", remote: remoteAddr, localIs: true, token: func(e *authEnv) string { return e.user }, expected: refusedWith(403)},
		{name: "loopback user", remote: loopbackAddr, localIs: true, token: func(e *authEnv) string { return e.user }, expected: refusedWith(403)},
		{name: "remote admin", remote: remoteAddr, localIs: true, token: func(e *authEnv) string { return e.admin }, expected: asAdmin},
		{name: "remote admin when localhost is not admin", remote: remoteAddr, localIs: false, token: func(e *authEnv) string { return e.admin }, expected: asAdmin},
		{name: "bad token", remote: remoteAddr, localIs: true, token: func(e *authEnv) string { return e.forged }, expected: always(401)},
		{name: "bad token from loopback", remote: loopbackAddr, localIs: true, token: func(e *authEnv) string { return e.forged }, expected: always(401)},
		{name: "expired", remote: remoteAddr, localIs: true, token: func(e *authEnv) string { return e.expired }, expected: always(401)},
	}
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			for _, r := range routes {
				t.Run(r.name, func(t *testing.T) {
					e := newAuthEnv(t, id.localIs)
					token := ""
					if id.token != nil {
						token = id.token(e)
					}
					res := e.do(t, id.remote, token, r.method, r.path, r.body)
					want := id.expected(r)
					require.Equal(t, want, res.status, string(res.body))
					if token != "" {
						require.NotContains(t, string(res.body), token, "an answer never contains the token")
					}
					switch want {
					case 401, 403:
						require.Equal(t, "application/json", res.header.Get("Content-Type"))
						eb := decode[errorBody](t, res.body)
						require.NotEmpty(t, eb.Title)
						if token == "" || want == 403 {
							require.Contains(t, eb.Details, r.method+" "+r.path, "the answer names what was refused")
						}
					}
					if want == 401 {
						require.Contains(t, res.header.Get("WWW-Authenticate"), "Bearer")
					}
				})
			}
		})
	}
}

func TestRefusalBodies(t *testing.T) {
	e := newAuthEnv(t, true)
	for _, tc := range []struct {
		name, remote, token, path string
		status                    int
		title, details            string
	}{
		{name: "anonymous", remote: remoteAddr, path: "/secrets", status: 401, title: "Unauthenticated",
			details: "GET /secrets is allowed to admins only; send a user token of group mesh-system:admin (Authorization: Bearer <token>)"},
		{name: "user", remote: remoteAddr, token: e.user, path: "/meshes/default/secrets/s1", status: 403, title: "Access denied",
			details: `user "alice" may not GET /meshes/default/secrets/s1: it is allowed to admins only (group mesh-system:admin)`},
		{name: "forged", remote: remoteAddr, token: e.forged, path: "/meshes", status: 401, title: "Unauthenticated",
			details: "the user token was refused: invalid token: signature does not match"},
		{name: "expired", remote: loopbackAddr, token: e.expired, path: "/meshes", status: 401, title: "Unauthenticated",
			details: "the user token was refused: token expired at "},
		{name: "garbage", remote: remoteAddr, token: "garbage", path: "/", status: 401, title: "Unauthenticated",
			details: "the user token was refused: invalid token: not a compact JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(t, tc.remote, tc.token, "GET", tc.path, "")
			require.Equal(t, tc.status, res.status)
			eb := decode[errorBody](t, res.body)
			require.Equal(t, tc.title, eb.Title)
			require.Contains(t, eb.Details, tc.details)
		})
	}

	req := httptest.NewRequest("GET", "/meshes", nil)
	req.RemoteAddr = remoteAddr
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	rec := httptest.NewRecorder()
	e.api.ServeHTTP(rec, req)
	require.Equal(t, 401, rec.Code)
	require.Contains(t, decode[errorBody](t, rec.Body.Bytes()).Details, "must be `Bearer <user token>`")
}

func TestTokenEndpoints(t *testing.T) {
	e := newAuthEnv(t, true)
	res := e.do(t, remoteAddr, e.admin, "POST", "/tokens/dataplane", `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["backend","backend-admin"],"version":["*"]},"validFor":"24h"}`)
	require.Equal(t, 200, res.status, string(res.body))
	require.Equal(t, "text/plain; charset=utf-8", res.header.Get("Content-Type"))
	require.Equal(t, "no-store", res.header.Get("Cache-Control"))
	id, err := e.issuer.VerifyDataplane(string(res.body))
	require.NoError(t, err)
	require.Equal(t, "default", id.Mesh)
	require.Equal(t, "dp-1", id.Name)
	require.Equal(t, map[string][]string{"kuma.io/service": {"backend", "backend-admin"}, "version": {"*"}}, id.Tags)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), id.ExpiresAt, time.Minute)

	res = e.do(t, loopbackAddr, "", "POST", "/tokens/user", `{"name":"bob","groups":["dev","mesh-system:admin"]}`)
	require.Equal(t, 200, res.status, string(res.body))
	u, err := e.issuer.VerifyUser(string(res.body))
	require.NoError(t, err)
	require.Equal(t, "bob", u.Name)
	require.True(t, u.IsAdmin())
	require.True(t, u.ExpiresAt.IsZero(), "no validFor: no expiry")
	_, err = e.issuer.VerifyDataplane(string(res.body))
	require.Error(t, err, "a user token is no dataplane token")

	// The new admin can use the API.
	require.Equal(t, 200, e.do(t, remoteAddr, string(res.body), "GET", "/secrets", "").status)
}

func TestTokenEndpointsRefuseBadBodies(t *testing.T) {
	e := newAuthEnv(t, true)
	for _, tc := range []struct {
		name, path, body string
		field, msg       string
	}{
		{name: "no mesh", path: "/tokens/dataplane", body: `{"name":"dp-1","tags":{"kuma.io/service":["a"]}}`, field: "mesh", msg: "must not be empty"},
		{name: "no name", path: "/tokens/dataplane", body: `{"mesh":"default","tags":{"kuma.io/service":["a"]}}`, field: "name", msg: "must not be empty"},
		{name: "unknown field", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","validfor":"1h"}`, field: "validfor", msg: "unknown field"},
		{name: "validFor not a duration", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["a"]},"validFor":"a day"}`, field: "validFor", msg: `must be a duration such as 24h or 30m, got "a day"`},
		{name: "no tags and no stored dataplane", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1"}`, field: "tags",
			msg: `no Dataplane "dp-1" is stored in mesh "default" to take its services from: name the services its proxy may serve, such as {"kuma.io/service":["backend"]} (kumactl generate dataplane-token --tag kuma.io/service=backend), or ["*"] for any service`},
		{name: "tags without the service", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"version":["v1"]}}`, field: "tags", msg: `must include "kuma.io/service"`},
		{name: "tag without values", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":[]}}`, field: `tags["kuma.io/service"]`, msg: "must list at least one value"},
		{name: "tag value invalid", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["a","b c"]}}`, field: `tags["kuma.io/service"][1]`, msg: "tag value must consist of"},
		{name: "tag name invalid", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["a"],"a b":["x"]}}`, field: `tags["a b"]`, msg: "tag name must consist of"},
		{name: "wildcard with others", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":["a","*"]}}`, field: `tags["kuma.io/service"][1]`, msg: `"*" allows any value and cannot be listed with others`},
		{name: "tag values not a list", path: "/tokens/dataplane", body: `{"mesh":"default","name":"dp-1","tags":{"kuma.io/service":"a"}}`, field: `tags["kuma.io/service"]`, msg: "must be a list"},
		{name: "validFor negative", path: "/tokens/user", body: `{"name":"bob","validFor":"-1h"}`, field: "validFor", msg: "must not be negative"},
		{name: "validFor a number", path: "/tokens/user", body: `{"name":"bob","validFor":3600}`, field: "validFor", msg: "must be a string"},
		{name: "groups not a list", path: "/tokens/user", body: `{"name":"bob","groups":"dev"}`, field: "groups", msg: "must be a list"},
		{name: "empty group", path: "/tokens/user", body: `{"name":"bob","groups":["dev",""]}`, field: "groups[1]", msg: "must not be empty"},
		{name: "control character", path: "/tokens/user", body: `{"name":"bo\nb"}`, field: "name", msg: "control characters"},
		{name: "syntax error", path: "/tokens/user", body: `{"name":`, msg: "invalid JSON"},
		{name: "not an object", path: "/tokens/user", body: `[]`, msg: "must be an object"},
		{name: "empty body", path: "/tokens/user", body: ``, msg: "must be a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do(t, loopbackAddr, "", "POST", tc.path, tc.body)
			require.Equal(t, 400, res.status, string(res.body))
			eb := decode[errorBody](t, res.body)
			require.Equal(t, "Could not issue a token", eb.Title)
			text := eb.Details
			for _, c := range eb.Causes {
				text += " | " + c.Field + ": " + c.Message
			}
			if tc.field != "" {
				require.Contains(t, text, tc.field+": ")
			}
			require.Contains(t, text, tc.msg)
		})
	}
	require.Equal(t, 404, e.do(t, loopbackAddr, "", "GET", "/tokens/user", "").status)
}

// TestHandleAdminOnly registers an admin-only endpoint from outside the
// package, through Handle.
func TestHandleAdminOnly(t *testing.T) {
	e := newAuthEnv(t, true)
	var calls []string
	e.api.Handle("POST /meshes/{mesh}/extension-endpoint", apiserver.AdminOnly, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := apiserver.UserFrom(r.Context())
		require.True(t, ok)
		calls = append(calls, u.Name+" "+r.PathValue("mesh"))
		w.WriteHeader(http.StatusCreated)
	}))
	e.api.Handle("GET /public-thing", apiserver.Public, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := apiserver.UserFrom(r.Context())
		require.True(t, ok)
		calls = append(calls, u.Name)
	}))
	require.Equal(t, 401, e.do(t, remoteAddr, "", "POST", "/meshes/default/extension-endpoint", "").status)
	require.Equal(t, 403, e.do(t, remoteAddr, e.user, "POST", "/meshes/default/extension-endpoint", "").status)
	require.Equal(t, 401, e.do(t, remoteAddr, e.expired, "POST", "/meshes/default/extension-endpoint", "").status)
	require.Equal(t, 201, e.do(t, remoteAddr, e.admin, "POST", "/meshes/default/extension-endpoint", "").status)
	require.Equal(t, 201, e.do(t, loopbackAddr, "", "POST", "/meshes/default/extension-endpoint", "").status)
	require.Equal(t, 200, e.do(t, remoteAddr, "", "GET", "/public-thing", "").status)
	require.Equal(t, []string{"admin default", authn.LocalhostAdminUser + " default", authn.AnonymousUser}, calls)

	// Outside a Server nobody is identified, so RequireAdmin refuses.
	rec := httptest.NewRecorder()
	apiserver.RequireAdmin(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, 401, rec.Code)
}

func TestWithoutTokens(t *testing.T) {
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr})
	require.NoError(t, err)
	e := &authEnv{api: api}
	require.Equal(t, 200, e.do(t, loopbackAddr, "", "PUT", "/meshes/default", meshWithMetrics).status, "loopback is admin")
	require.Equal(t, 200, e.do(t, remoteAddr, "", "GET", "/meshes/default", "").status)
	require.Equal(t, 401, e.do(t, remoteAddr, "", "PUT", "/meshes/default", meshWithMetrics).status)
	res := e.do(t, loopbackAddr, "abc.def.ghi", "GET", "/meshes/default", "")
	require.Equal(t, 401, res.status)
	require.Contains(t, string(res.body), "does not accept tokens")
	res = e.do(t, loopbackAddr, "", "POST", "/tokens/user", `{"name":"bob"}`)
	require.Equal(t, 501, res.status)
	require.Contains(t, string(res.body), "issues no tokens")
}

// TestDataplaneTokenTakesTheStoredServices: without tags, the token allows
// the services of the stored Dataplane; with the control plane's opt-out an
// untagged token is issued when none is stored.
func TestDataplaneTokenTakesTheStoredServices(t *testing.T) {
	e := newAuthEnv(t, true)
	dp, err := resource.DecodeJSON([]byte(`{"type":"Dataplane","mesh":"default","name":"backend-1","networking":{"address":"127.0.0.3","inbound":[
		{"port":8080,"tags":{"kuma.io/service":"backend","version":"v1"}},{"port":8081,"tags":{"kuma.io/service":"backend-admin"}}]}}`))
	require.NoError(t, err)
	_, err = e.mgr.Apply(t.Context(), dp, 0)
	require.NoError(t, err)
	res := e.do(t, loopbackAddr, "", "POST", "/tokens/dataplane", `{"mesh":"default","name":"backend-1"}`)
	require.Equal(t, 200, res.status, string(res.body))
	id, err := e.issuer.VerifyDataplaneFor(string(res.body), "default", "backend-1")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"kuma.io/service": {"backend", "backend-admin"}}, id.Tags)

	// The opt-out: untagged tokens, and tags without kuma.io/service.
	api, err := apiserver.New(apiserver.Options{Reader: e.st, Writer: e.mgr, Tokens: e.issuer,
		LocalhostIsAdmin: true, AllowUntaggedDataplaneTokens: true})
	require.NoError(t, err)
	e.api = api
	res = e.do(t, loopbackAddr, "", "POST", "/tokens/dataplane", `{"mesh":"default","name":"nowhere-1"}`)
	require.Equal(t, 200, res.status, string(res.body))
	id, err = e.issuer.VerifyDataplane(string(res.body))
	require.NoError(t, err)
	require.Nil(t, id.Tags)
	res = e.do(t, loopbackAddr, "", "POST", "/tokens/dataplane", `{"mesh":"default","name":"nowhere-1","tags":{"version":["v1"]}}`)
	require.Equal(t, 200, res.status, string(res.body))
	id, err = e.issuer.VerifyDataplane(string(res.body))
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"version": {"v1"}}, id.Tags)
}
