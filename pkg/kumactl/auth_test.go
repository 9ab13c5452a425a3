package kumactl_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// Tokens as the control plane's (the fake does not check signatures).
const (
	adminToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.YWRtaW4tc2ln"
	badToken   = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJldmUifQ.YmFkLXNpZw"
	newToken   = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJuZXcifQ.bmV3LXNpZw"
	// storedToken is a dataplane token whose tags the control plane took
	// from the stored Dataplane stored-1; untaggedToken one without tags.
	storedToken   = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJkYXRhcGxhbmUiLCJtZXNoIjoiZGVmYXVsdCIsIm5hbWUiOiJzdG9yZWQtMSIsInRhZ3MiOnsia3VtYS5pby9zZXJ2aWNlIjpbImJhY2tlbmQiLCJiYWNrZW5kLWFkbWluIl19fQ.c3RvcmVkLXNpZw"
	untaggedToken = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0eXAiOiJkYXRhcGxhbmUiLCJtZXNoIjoiZGVmYXVsdCIsIm5hbWUiOiJ1bnRhZ2dlZC0xIn0.dW50YWdnZWQtc2ln"
)

// checkToken makes h answer like the API server does to a bearer token it
// refuses.
func checkToken(h func(w http.ResponseWriter, r *http.Request)) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+badToken {
			writeError(w, http.StatusUnauthorized, "Unauthenticated", "the user token was refused: invalid token: signature does not match", nil)
			return
		}
		h(w, r)
	}
}

func TestConfigControlPlanesWithTokens(t *testing.T) {
	e := newEnv(t)
	e.cfgFile = filepath.Join(t.TempDir(), ".kumactl", "config")
	e.cp.Index = checkToken(indexHandler("0.1.0"))
	serveFixtures(e.cp)

	steps := []struct {
		name string
		args []string
	}{
		{"add with a token", []string{"config", "control-planes", "add", "--name", "secure", "--address", e.cp.URL(), "--auth-type=tokens", "--auth-conf", "token=" + adminToken}},
		{"list shows the auth type", []string{"config", "control-planes", "list"}},
		{"get sends the token", []string{"get", "meshes"}},
		{"add an unknown auth type", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-type=basic", "--auth-conf", "user=a"}},
		{"add tokens without a token", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-type=tokens"}},
		{"add tokens with an empty token", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-type=tokens", "--auth-conf", "token="}},
		{"add tokens with an unknown key", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-type=tokens", "--auth-conf", "token=" + adminToken + ",tokenFile=/tmp/t"}},
		{"add an auth conf without a type", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-conf", "token=" + adminToken}},
		{"add a refused token", []string{"config", "control-planes", "add", "--name", "x", "--address", e.cp.URL(), "--auth-type=tokens", "--auth-conf", "token=" + badToken}},
		{"overwrite without a token", []string{"config", "control-planes", "add", "--name", "plain", "--address", e.cp.URL()}},
		{"list with and without auth", []string{"config", "control-planes", "list"}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			res := e.run(step.args...)
			golden(t, "config-auth/"+step.name, res.String(), e.cp.URL(), "{{CP}}")
			require.NotContains(t, res.stdout+res.stderr, adminToken, "kumactl never prints a token it is configured with")
			require.NotContains(t, res.stdout+res.stderr, badToken)
		})
	}
	require.Equal(t, []string{
		"GET /", // add with a token
		"GET /meshes",
		"GET /", // add a refused token
		"GET /", // overwrite without a token
	}, e.cp.seen())
	bearer := "Bearer " + adminToken
	require.Equal(t, []string{bearer, bearer, "Bearer " + badToken, ""}, e.cp.authorizations())

	data, err := os.ReadFile(e.cfgFile)
	require.NoError(t, err)
	require.Contains(t, string(data), `- name: secure
  coordinates:
    apiServer:
      url: `+e.cp.URL()+`
      authType: tokens
      authConf:
        token: `+adminToken+`
`)
	cfg, _, err := config.Load(e.cfgFile)
	require.NoError(t, err)
	require.Equal(t, adminToken, cfg.ControlPlane("secure").Coordinates.APIServer.Token())
	require.Empty(t, cfg.ControlPlane("plain").Coordinates.APIServer.Token())
}

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantBody string
	}{
		{name: "dataplane token", args: []string{"generate", "dataplane-token", "--name", "backend-1"},
			wantBody: `{"mesh":"default","name":"backend-1"}`},
		{name: "dataplane token of a mesh for a day", args: []string{"generate", "dataplane-token", "--mesh", "demo", "--name", "api-1", "--valid-for", "24h"},
			wantBody: `{"mesh":"demo","name":"api-1","validFor":"24h0m0s"}`},
		{name: "dataplane token with tags", args: []string{"generate", "dataplane-token", "--name", "backend-1",
			"--tag", "kuma.io/service=backend", "--tag", "kuma.io/service=backend-admin", "--tag", "version=v1,v2", "--valid-for", "720h"},
			wantBody: `{"mesh":"default","name":"backend-1","tags":{"kuma.io/service":["backend","backend-admin"],"version":["v1","v2"]},"validFor":"720h0m0s"}`},
		{name: "dataplane token for any service", args: []string{"generate", "dataplane-token", "--name", "gateway-1", "--tag", "kuma.io/service=*"},
			wantBody: `{"mesh":"default","name":"gateway-1","tags":{"kuma.io/service":["*"]}}`},
		{name: "dataplane token of the stored services", args: []string{"generate", "dataplane-token", "--name", "stored-1"},
			wantBody: `{"mesh":"default","name":"stored-1"}`},
		{name: "untagged dataplane token", args: []string{"generate", "dataplane-token", "--name", "untagged-1"},
			wantBody: `{"mesh":"default","name":"untagged-1"}`},
		{name: "tag without a value", args: []string{"generate", "dataplane-token", "--name", "dp-1", "--tag", "kuma.io/service"}},
		{name: "tag with an empty value", args: []string{"generate", "dataplane-token", "--name", "dp-1", "--tag", "kuma.io/service=a,,b"}},
		{name: "tag without a key", args: []string{"generate", "dataplane-token", "--name", "dp-1", "--tag", "=a"}},
		{name: "user token", args: []string{"generate", "user-token", "--name", "bob", "--group", "mesh-system:admin", "--group", "dev", "--valid-for", "30m"},
			wantBody: `{"groups":["mesh-system:admin","dev"],"name":"bob","validFor":"30m0s"}`},
		{name: "user token without groups", args: []string{"generate", "user-token", "--name", "carol"},
			wantBody: `{"name":"carol"}`},
		{name: "forbidden", args: []string{"generate", "user-token", "--name", "forbidden"}, wantBody: `{"name":"forbidden"}`},
		{name: "unauthenticated", args: []string{"generate", "dataplane-token", "--name", "anonymous"}, wantBody: `{"mesh":"default","name":"anonymous"}`},
		{name: "refused request", args: []string{"generate", "dataplane-token", "--mesh", "bad", "--name", "dp-1"}, wantBody: `{"mesh":"bad","name":"dp-1"}`},
		{name: "dataplane token without a name", args: []string{"generate", "dataplane-token"}},
		{name: "user token with an empty group", args: []string{"generate", "user-token", "--name", "bob", "--group", ""}},
		{name: "negative validity", args: []string{"generate", "dataplane-token", "--name", "dp-1", "--valid-for", "-1h"}},
		{name: "unknown kind", args: []string{"generate", "zone-token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var bodies []string
			answer := func(w http.ResponseWriter, _ *http.Request, body map[string]any) {
				b, err := json.Marshal(body)
				require.NoError(t, err)
				bodies = append(bodies, string(b))
				switch {
				case body["name"] == "forbidden":
					writeError(w, http.StatusForbidden, "Access denied", `user "alice" may not POST /tokens/user: it is allowed to admins only (group mesh-system:admin)`, nil)
				case body["name"] == "anonymous":
					writeError(w, http.StatusUnauthorized, "Unauthenticated", "POST /tokens/dataplane is allowed to admins only; send a user token of group mesh-system:admin (Authorization: Bearer <token>)", nil)
				case body["mesh"] == "bad":
					writeError(w, http.StatusBadRequest, "Could not issue a token", "Request is not valid",
						[]resource.Cause{{Field: "validFor", Message: `must be a duration such as 24h or 30m, got "x"`}})
				default:
					w.Header().Set("Content-Type", "text/plain; charset=utf-8")
					_, _ = io.WriteString(w, tokenFor(body))
				}
			}
			e.cp.DataplaneToken = answer
			e.cp.UserToken = answer
			res := e.run(tc.args...)
			golden(t, "generate/"+tc.name, res.String())
			if res.code == 0 {
				require.Equal(t, tokenFor(decodeBody(t, bodies[0]))+"\n", res.stdout, "the token alone, on one line")
			}
			if tc.wantBody == "" {
				require.Empty(t, bodies)
			} else {
				require.Equal(t, []string{tc.wantBody}, bodies)
			}
		})
	}
}

// tokenFor is the token the fake control plane answers to a token request.
func tokenFor(body map[string]any) string {
	switch body["name"] {
	case "stored-1":
		return storedToken
	case "untagged-1":
		return untaggedToken
	}
	return newToken
}

func decodeBody(t *testing.T, body string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	return m
}

// TestAgainstTheAPIServer runs kumactl against the real API server with
// tokens, loopback callers not being admin.
func TestAgainstTheAPIServer(t *testing.T) {
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	dir := t.TempDir()
	iss, err := authn.Load(dir, nil)
	require.NoError(t, err)
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr, Version: "0.1.0", Tokens: iss, LocalhostIsAdmin: false})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	admin, err := os.ReadFile(authn.AdminTokenPath(dir))
	require.NoError(t, err)

	e := newEnv(t)
	res := e.run("config", "control-planes", "add", "--name", "anonymous", "--address", srv.URL)
	require.Equal(t, 0, res.code, res.stderr)
	res = e.run("get", "meshes")
	require.Equal(t, 0, res.code, "anonymous clients read non-sensitive kinds: %s", res.stderr)
	res = e.run("get", "secrets")
	require.Equal(t, 1, res.code)
	require.Equal(t, "Error: Unauthenticated (401): GET /meshes/default/secrets is allowed to admins only; send a user token of group mesh-system:admin (Authorization: Bearer <token>)\n", res.stderr)
	res = e.run("generate", "dataplane-token", "--name", "dp-1")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "Error: Unauthenticated (401): POST /tokens/dataplane is allowed to admins only")

	res = e.run("config", "control-planes", "add", "--name", "admin", "--address", srv.URL, "--auth-type=tokens", "--auth-conf", "token="+strings.TrimSpace(string(admin)))
	require.Equal(t, 0, res.code, res.stderr)
	res = e.run("generate", "dataplane-token", "--mesh", "default", "--name", "dp-1", "--valid-for", "1h")
	require.Equal(t, 1, res.code, "no tags and no stored Dataplane dp-1")
	require.Equal(t, `Error: Could not issue a token (400): Request is not valid
* tags: no Dataplane "dp-1" is stored in mesh "default" to take its services from: name the services its proxy may serve, such as {"kuma.io/service":["backend"]} (kumactl generate dataplane-token --tag kuma.io/service=backend), or ["*"] for any service
`, res.stderr)
	res = e.run("generate", "dataplane-token", "--mesh", "default", "--name", "dp-1", "--valid-for", "1h", "--tag", "kuma.io/service=backend")
	require.Equal(t, 0, res.code, res.stderr)
	require.Empty(t, res.stderr)
	id, err := iss.VerifyDataplaneFor(strings.TrimSuffix(res.stdout, "\n"), "default", "dp-1")
	require.NoError(t, err)
	require.False(t, id.ExpiresAt.IsZero())
	require.Equal(t, map[string][]string{"kuma.io/service": {"backend"}}, id.Tags)

	// Without --tag, the services of the stored Dataplane, said on stderr.
	dp, err := resource.DecodeJSON([]byte(`{"type":"Dataplane","mesh":"default","name":"web-1","networking":{"address":"127.0.0.3","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`))
	require.NoError(t, err)
	_, err = mgr.Apply(context.Background(), dp, 0)
	require.NoError(t, err)
	res = e.run("generate", "dataplane-token", "--name", "web-1")
	require.Equal(t, 0, res.code, res.stderr)
	require.Equal(t, "note: the token allows kuma.io/service=web, the services of the stored Dataplane \"web-1\" of mesh \"default\"\n", res.stderr)
	id, err = iss.VerifyDataplaneFor(strings.TrimSuffix(res.stdout, "\n"), "default", "web-1")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"kuma.io/service": {"web"}}, id.Tags)

	res = e.run("generate", "user-token", "--name", "dev", "--group", "developers")
	require.Equal(t, 0, res.code, res.stderr)
	devToken := strings.TrimSuffix(res.stdout, "\n")
	res = e.run("config", "control-planes", "add", "--name", "dev", "--address", srv.URL, "--auth-type=tokens", "--auth-conf", "token="+devToken)
	require.Equal(t, 0, res.code, res.stderr)
	res = e.run("get", "secrets")
	require.Equal(t, 1, res.code)
	require.Equal(t, "Error: Access denied (403): user \"dev\" may not GET /meshes/default/secrets: it is allowed to admins only (group mesh-system:admin)\n", res.stderr)
	res = e.run("get", "meshes")
	require.Equal(t, 0, res.code, res.stderr)
}
