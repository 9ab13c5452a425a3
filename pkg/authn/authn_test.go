package authn_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/authn"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// clock is a settable clock.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newIssuer(t *testing.T) (*authn.Issuer, *clock) {
	t.Helper()
	c := &clock{now: t0}
	iss, err := authn.NewIssuer(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), c.Now)
	require.NoError(t, err)
	return iss, c
}

var b64 = base64.RawURLEncoding

// parts splits a token and decodes its header and payload.
func parts(t *testing.T, token string) (header, payload map[string]any, sig string) {
	t.Helper()
	p := strings.Split(token, ".")
	require.Len(t, p, 3)
	for i, dst := range []*map[string]any{&header, &payload} {
		raw, err := b64.DecodeString(p[i])
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(raw, dst))
	}
	return header, payload, p[2]
}

// forge builds a token from a header and payload, signed with key (or with
// the given signature when key is nil).
func forge(header, payload string, key []byte, sig string) string {
	input := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	if key != nil {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(input))
		sig = b64.EncodeToString(h.Sum(nil))
	}
	return input + "." + sig
}

func TestUserTokenRoundTrip(t *testing.T) {
	iss, _ := newIssuer(t)
	token, err := iss.IssueUser("alice", []string{"dev", "ops", "dev"}, time.Hour)
	require.NoError(t, err)

	header, payload, _ := parts(t, token)
	require.Equal(t, map[string]any{"alg": "HS256", "typ": "JWT"}, header)
	require.Equal(t, "alice", payload["sub"])
	require.Equal(t, []any{"dev", "ops"}, payload["groups"])
	require.EqualValues(t, t0.Unix(), payload["iat"])
	require.EqualValues(t, t0.Add(time.Hour).Unix(), payload["exp"])
	require.NotEmpty(t, payload["jti"])
	require.NotContains(t, payload, "typ")

	u, err := iss.VerifyUser(token)
	require.NoError(t, err)
	require.Equal(t, "alice", u.Name)
	require.Equal(t, []string{"dev", "ops", authn.AuthenticatedGroup}, u.Groups)
	require.Equal(t, t0.Add(time.Hour), u.ExpiresAt)
	require.Equal(t, payload["jti"], u.ID)
	require.False(t, u.IsAdmin())

	admin, err := iss.IssueUser("root", []string{authn.AdminGroup}, 0)
	require.NoError(t, err)
	_, payload, _ = parts(t, admin)
	require.NotContains(t, payload, "exp", "validFor 0: no expiry")
	u, err = iss.VerifyUser(admin)
	require.NoError(t, err)
	require.True(t, u.IsAdmin())
	require.True(t, u.ExpiresAt.IsZero())

	other, err := iss.IssueUser("alice", nil, 0)
	require.NoError(t, err)
	_, p2, _ := parts(t, other)
	require.NotEqual(t, payload["jti"], p2["jti"], "every token has its own id")
}

func TestDataplaneTokenRoundTrip(t *testing.T) {
	iss, _ := newIssuer(t)
	token, err := iss.IssueDataplane("default", "backend-1", nil, 24*time.Hour)
	require.NoError(t, err)
	_, payload, _ := parts(t, token)
	require.Equal(t, "dataplane", payload["typ"])
	require.Equal(t, "default", payload["mesh"])
	require.Equal(t, "backend-1", payload["name"])
	require.NotContains(t, payload, "sub")

	id, err := iss.VerifyDataplane(token)
	require.NoError(t, err)
	require.Equal(t, "default", id.Mesh)
	require.Equal(t, "backend-1", id.Name)
	require.Equal(t, t0.Add(24*time.Hour), id.ExpiresAt)

	_, err = iss.VerifyDataplaneFor(token, "default", "backend-1")
	require.NoError(t, err)
	for _, tc := range []struct{ name, mesh, dp string }{
		{"another dataplane", "default", "backend-2"},
		{"another mesh", "other", "backend-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := iss.VerifyDataplaneFor(token, tc.mesh, tc.dp)
			require.ErrorIs(t, err, authn.ErrWrongDataplane)
			require.ErrorContains(t, err, `it names dataplane "backend-1" in mesh "default"`)
		})
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	iss, _ := newIssuer(t)
	for _, tc := range []struct {
		name  string
		issue func() (string, error)
		want  string
	}{
		{"no user name", func() (string, error) { return iss.IssueUser("", nil, 0) }, "a user name is required"},
		{"empty group", func() (string, error) { return iss.IssueUser("a", []string{""}, 0) }, "a group is required"},
		{"control character", func() (string, error) { return iss.IssueUser("a\nb", nil, 0) }, "control characters"},
		{"negative validity", func() (string, error) { return iss.IssueUser("a", nil, -time.Second) }, "must not be negative"},
		{"no mesh", func() (string, error) { return iss.IssueDataplane("", "dp", nil, 0) }, "a mesh is required"},
		{"no dataplane name", func() (string, error) { return iss.IssueDataplane("m", "", nil, 0) }, "a dataplane name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.issue()
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := authn.NewIssuer([]byte("short"), bytes.Repeat([]byte{2}, 32), nil)
	require.Error(t, err)
}

func TestVerifyRefusesBadTokens(t *testing.T) {
	iss, clk := newIssuer(t)
	userKey, dpKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	good, err := iss.IssueUser("alice", []string{"dev"}, time.Hour)
	require.NoError(t, err)
	dpToken, err := iss.IssueDataplane("default", "dp-1", nil, 0)
	require.NoError(t, err)
	p := strings.Split(good, ".")
	payload, err := b64.DecodeString(p[1])
	require.NoError(t, err)
	adminPayload := strings.Replace(string(payload), `"groups":["dev"]`, `"groups":["mesh-system:admin"]`, 1)
	require.NotEqual(t, string(payload), adminPayload)
	iat := t0.Unix()

	tests := []struct {
		name   string
		token  string
		verify string // "user" (default) or "dataplane"
		want   string
		isErr  error
	}{
		{name: "empty", token: "", want: "empty token"},
		{name: "garbage", token: "hello", want: "not a compact JWT"},
		{name: "four parts", token: good + ".x", want: "not a compact JWT"},
		{name: "too long", token: strings.Repeat("a", authn.MaxTokenBytes+1), want: "longer than"},
		{name: "header not base64", token: "!!." + p[1] + "." + p[2], want: "header is not base64url"},
		{name: "padded header", token: p[0] + "=." + p[1] + "." + p[2], want: "header is not base64url"},
		{name: "header not JSON", token: b64.EncodeToString([]byte("nope")) + "." + p[1] + "." + p[2], want: "header is not a JSON object"},
		{name: "tampered payload", token: p[0] + "." + b64.EncodeToString([]byte(adminPayload)) + "." + p[2], want: "signature does not match"},
		{name: "tampered signature", token: p[0] + "." + p[1] + "." + b64.EncodeToString(bytes.Repeat([]byte{7}, 32)), want: "signature does not match"},
		{name: "signature not base64", token: p[0] + "." + p[1] + ".***", want: "signature is not base64url"},
		{name: "no signature", token: p[0] + "." + p[1] + ".", want: "signature does not match"},
		{name: "alg none", token: forge(`{"alg":"none","typ":"JWT"}`, adminPayload, nil, ""), want: `signing algorithm "none" is not accepted (only HS256)`},
		{name: "alg none with a signature", token: forge(`{"alg":"none"}`, adminPayload, userKey, ""), want: `"none" is not accepted`},
		{name: "alg RS256", token: forge(`{"alg":"RS256","typ":"JWT"}`, adminPayload, nil, p[2]), want: `signing algorithm "RS256" is not accepted`},
		{name: "alg hs256 in lower case", token: forge(`{"alg":"hs256"}`, adminPayload, userKey, ""), want: `"hs256" is not accepted`},
		{name: "no alg", token: forge(`{"typ":"JWT"}`, adminPayload, userKey, ""), want: `signing algorithm "" is not accepted`},
		{name: "critical header", token: forge(`{"alg":"HS256","crit":["exp"]}`, adminPayload, userKey, ""), want: "critical extensions"},
		{name: "other header type", token: forge(`{"alg":"HS256","typ":"JWE"}`, adminPayload, userKey, ""), want: `header type "JWE"`},
		{name: "signed with another key", token: forge(`{"alg":"HS256"}`, adminPayload, bytes.Repeat([]byte{9}, 32), ""), want: "signature does not match"},
		{name: "payload not claims", token: forge(`{"alg":"HS256"}`, `{"sub":["x"]}`, userKey, ""), want: "payload is not a JSON object of the expected claims"},
		{name: "payload not JSON", token: forge(`{"alg":"HS256"}`, `sub=x`, userKey, ""), want: "payload is not a JSON object"},
		{name: "fractional exp", token: forge(`{"alg":"HS256"}`, `{"sub":"a","exp":1.5}`, userKey, ""), want: "payload is not a JSON object"},
		{name: "no user", token: forge(`{"alg":"HS256"}`, `{"groups":["mesh-system:admin"]}`, userKey, ""), want: "names no user"},
		{name: "expired", token: forge(`{"alg":"HS256"}`, `{"sub":"a","exp":`+itoa(iat-31)+`}`, userKey, ""), want: "token expired at 2026-11-26T11:59:29Z", isErr: authn.ErrExpired},
		{name: "not yet valid", token: forge(`{"alg":"HS256"}`, `{"sub":"a","nbf":`+itoa(iat+31)+`}`, userKey, ""), want: "not valid before 2026-11-26T12:00:31Z"},
		{name: "issued in the future", token: forge(`{"alg":"HS256"}`, `{"sub":"a","iat":`+itoa(iat+3600)+`}`, userKey, ""), want: "issued in the future"},
		{name: "absurd times", token: forge(`{"alg":"HS256"}`, `{"sub":"a","exp":-9223372036854775808,"nbf":9223372036854775807}`, userKey, ""), want: "token expired"},
		{name: "dataplane token as user token", token: dpToken, want: "signature does not match"},
		{name: "dataplane claims signed with the user key", token: forge(`{"alg":"HS256"}`, `{"typ":"dataplane","mesh":"default","name":"dp-1","sub":"a"}`, userKey, ""), want: `a token of type "dataplane" is not a user token`},
		{name: "user token as dataplane token", token: good, verify: "dataplane", want: "signature does not match"},
		{name: "user claims signed with the dataplane key", token: forge(`{"alg":"HS256"}`, `{"sub":"a","mesh":"default","name":"dp-1"}`, dpKey, ""), verify: "dataplane", want: "not a dataplane token"},
		{name: "dataplane token without a name", token: forge(`{"alg":"HS256"}`, `{"typ":"dataplane","mesh":"default"}`, dpKey, ""), verify: "dataplane", want: "names no dataplane"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.verify == "dataplane" {
				_, err = iss.VerifyDataplane(tc.token)
			} else {
				_, err = iss.VerifyUser(tc.token)
			}
			require.ErrorContains(t, err, tc.want)
			require.ErrorIs(t, err, authn.ErrInvalid)
			if tc.isErr != nil {
				require.ErrorIs(t, err, tc.isErr)
			}
			if len(tc.token) > 20 {
				require.NotContains(t, err.Error(), tc.token, "an error must not echo the token")
				for _, part := range strings.Split(tc.token, ".") {
					if len(part) > 20 {
						require.NotContains(t, err.Error(), part)
					}
				}
			}
		})
	}

	t.Run("expiry with leeway", func(t *testing.T) {
		clk.now = t0.Add(time.Hour + authn.Leeway)
		_, err := iss.VerifyUser(good)
		require.NoError(t, err, "within the leeway")
		clk.now = t0.Add(time.Hour + authn.Leeway + time.Second)
		_, err = iss.VerifyUser(good)
		require.ErrorIs(t, err, authn.ErrExpired)
		require.True(t, errors.Is(err, authn.ErrInvalid))
		clk.now = t0
	})
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestLoadCreatesAndReusesKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kuma-data")
	iss, err := authn.Load(dir, func() time.Time { return t0 })
	require.NoError(t, err)
	require.True(t, iss.AdminTokenWritten())

	di, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	files := map[string][]byte{}
	for _, name := range []string{authn.UserSigningKeyFile, authn.DataplaneSigningKeyFile, authn.AdminTokenFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), name)
		files[name], err = os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 3, "no temporary file is left behind")
	require.NotEqual(t, files[authn.UserSigningKeyFile], files[authn.DataplaneSigningKeyFile])
	require.Equal(t, filepath.Join(dir, authn.AdminTokenFile), authn.AdminTokenPath(dir))

	adminToken := strings.TrimSpace(string(files[authn.AdminTokenFile]))
	u, err := iss.VerifyUser(adminToken)
	require.NoError(t, err)
	require.Equal(t, authn.AdminUser, u.Name)
	require.True(t, u.IsAdmin())
	require.True(t, u.ExpiresAt.IsZero(), "the admin token never expires")

	dpToken, err := iss.IssueDataplane("default", "dp-1", nil, 0)
	require.NoError(t, err)

	// A restart reuses the keys: earlier tokens still verify, and the admin
	// token file is left alone, even when it was deleted.
	require.NoError(t, os.Remove(filepath.Join(dir, authn.AdminTokenFile)))
	again, err := authn.Load(dir, nil)
	require.NoError(t, err)
	require.False(t, again.AdminTokenWritten())
	_, err = again.VerifyUser(adminToken)
	require.NoError(t, err)
	_, err = again.VerifyDataplane(dpToken)
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, authn.AdminTokenFile))
	require.ErrorIs(t, err, os.ErrNotExist)
	for _, name := range []string{authn.UserSigningKeyFile, authn.DataplaneSigningKeyFile} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, files[name], data, name)
	}

	// Another work directory has other keys.
	elsewhere, err := authn.Load(t.TempDir(), nil)
	require.NoError(t, err)
	_, err = elsewhere.VerifyUser(adminToken)
	require.ErrorContains(t, err, "signature does not match")
}

func TestLoadReplacesTheAdminTokenWithANewKey(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, authn.AdminTokenFile), []byte("stale\n"), 0o600))
	iss, err := authn.Load(dir, nil)
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(dir, authn.AdminTokenFile))
	require.NoError(t, err)
	_, err = iss.VerifyUser(strings.TrimSpace(string(data)))
	require.NoError(t, err, "the user key is new, so the admin token is written for it")
}

func TestLoadRefusesCorruptKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		content string
	}{
		{"user key not base64", authn.UserSigningKeyFile, "not base64!\n"},
		{"user key too short", authn.UserSigningKeyFile, base64.StdEncoding.EncodeToString([]byte("short")) + "\n"},
		{"empty dataplane key", authn.DataplaneSigningKeyFile, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, err := authn.Load(dir, nil)
			require.ErrorContains(t, err, "signing key "+path+" is corrupt")
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, tc.content, string(data), "a corrupt key is not overwritten")
		})
	}
	_, err := authn.Load("", nil)
	require.Error(t, err)
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer  abc ", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic dXNlcjpwYXNz", "", false},
		{"", "", false},
	} {
		t.Run(tc.header, func(t *testing.T) {
			token, ok := authn.BearerToken(tc.header)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.token, token)
		})
	}
}

func TestAnonymousAndLocalhostUsers(t *testing.T) {
	require.True(t, authn.Anonymous().IsAnonymous())
	require.False(t, authn.Anonymous().IsAdmin())
	require.True(t, authn.LocalhostAdmin().IsAdmin())
	require.False(t, authn.LocalhostAdmin().IsAnonymous())
	require.True(t, authn.User{}.IsAnonymous())
}

func FuzzVerify(f *testing.F) {
	iss, err := authn.NewIssuer(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), func() time.Time { return t0 })
	if err != nil {
		f.Fatal(err)
	}
	good, _ := iss.IssueUser("alice", []string{"dev"}, time.Hour)
	dp, _ := iss.IssueDataplane("m", "n", map[string][]string{"kuma.io/service": {"a", "b"}}, 0)
	for _, s := range []string{good, dp, "", ".", "..", "a.b.c", good + "x", strings.ToUpper(good)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		if u, err := iss.VerifyUser(token); err == nil && u.Name == "" {
			t.Fatalf("a verified user token without a user")
		}
		if id, err := iss.VerifyDataplane(token); err == nil && (id.Mesh == "" || id.Name == "") {
			t.Fatalf("a verified dataplane token without a dataplane")
		}
	})
}

func TestDataplaneTokenTags(t *testing.T) {
	iss, _ := newIssuer(t)
	token, err := iss.IssueDataplane("default", "frontend-1", map[string][]string{
		"kuma.io/service": {"frontend", "frontend-admin", "frontend"},
		"version":         {"v2", "v1"},
	}, 0)
	require.NoError(t, err)
	_, payload, _ := parts(t, token)
	require.Equal(t, map[string]any{"kuma.io/service": []any{"frontend", "frontend-admin"}, "version": []any{"v1", "v2"}}, payload["tags"],
		"values sorted, without duplicates")
	id, err := iss.VerifyDataplaneFor(token, "default", "frontend-1")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"kuma.io/service": {"frontend", "frontend-admin"}, "version": {"v1", "v2"}}, id.Tags)

	inbound := func(service, version string) map[string]string {
		tags := map[string]string{"kuma.io/service": service}
		if version != "" {
			tags["version"] = version
		}
		return tags
	}
	require.NoError(t, id.CheckInbounds([]map[string]string{inbound("frontend", "v1"), inbound("frontend-admin", "v2")}, false))

	// The attack of issue 9: the token of frontend-1 presenting payments.
	err = id.CheckInbounds([]map[string]string{inbound("frontend", "v1"), inbound("payments", "v1")}, false)
	require.ErrorIs(t, err, authn.ErrTagNotAllowed)
	require.EqualError(t, err, `networking.inbound[1] has kuma.io/service "payments", but the dataplane token allows only "frontend", "frontend-admin"`)
	var te *authn.TagError
	require.ErrorAs(t, err, &te)
	require.Equal(t, authn.TagError{Inbound: 1, Key: "kuma.io/service", Value: "payments", Allowed: []string{"frontend", "frontend-admin"}}, *te)
	// The opt-out for untagged tokens does not loosen a tagged one.
	require.ErrorIs(t, id.CheckInbounds([]map[string]string{inbound("payments", "v1")}, true), authn.ErrTagNotAllowed)

	// Every inbound must carry every key the token names.
	err = id.CheckInbounds([]map[string]string{inbound("frontend", "")}, false)
	require.EqualError(t, err, `networking.inbound[0] has no tag "version", which the dataplane token requires (allowed: "v1", "v2")`)
	require.ErrorIs(t, id.CheckInbounds([]map[string]string{inbound("frontend", "v3")}, false), authn.ErrTagNotAllowed)
	require.True(t, id.Allows("kuma.io/service", "frontend"))
	require.False(t, id.Allows("kuma.io/service", "payments"))
	require.True(t, id.Allows("zone", "anything"), "a key the token does not name is not constrained")
}

func TestDataplaneTokenWildcard(t *testing.T) {
	iss, _ := newIssuer(t)
	token, err := iss.IssueDataplane("default", "gateway-1", map[string][]string{"kuma.io/service": {"*"}, "team": {"*"}}, 0)
	require.NoError(t, err)
	id, err := iss.VerifyDataplane(token)
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"kuma.io/service": {"*"}, "team": {"*"}}, id.Tags)
	require.NoError(t, id.CheckInbounds([]map[string]string{
		{"kuma.io/service": "a", "team": "x"}, {"kuma.io/service": "payments", "team": "y"},
	}, false), "* allows any value")
	require.ErrorIs(t, id.CheckInbounds([]map[string]string{{"kuma.io/service": "a"}}, false), authn.ErrTagNotAllowed,
		"* still requires the key")
}

func TestUntaggedDataplaneToken(t *testing.T) {
	iss, _ := newIssuer(t)
	for name, tags := range map[string]map[string][]string{"nil": nil, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			token, err := iss.IssueDataplane("default", "web-1", tags, 0)
			require.NoError(t, err)
			_, payload, _ := parts(t, token)
			require.NotContains(t, payload, "tags")
			id, err := iss.VerifyDataplane(token)
			require.NoError(t, err)
			require.Nil(t, id.Tags)
			inbounds := []map[string]string{{"kuma.io/service": "web"}}
			require.ErrorIs(t, id.CheckInbounds(inbounds, false), authn.ErrUntagged, "refused by default")
			require.NoError(t, id.CheckInbounds(inbounds, true), "accepted with the opt-out")
		})
	}
	// Tags that leave kuma.io/service out do not constrain the service either.
	token, err := iss.IssueDataplane("default", "web-1", map[string][]string{"version": {"v1"}}, 0)
	require.NoError(t, err)
	id, err := iss.VerifyDataplane(token)
	require.NoError(t, err)
	require.ErrorIs(t, id.CheckInbounds([]map[string]string{{"kuma.io/service": "web", "version": "v1"}}, false), authn.ErrUntagged)
	require.NoError(t, id.CheckInbounds([]map[string]string{{"kuma.io/service": "web", "version": "v1"}}, true))
	require.ErrorIs(t, id.CheckInbounds([]map[string]string{{"kuma.io/service": "web", "version": "v2"}}, true), authn.ErrTagNotAllowed)
}

func TestDataplaneTokenTagsRefused(t *testing.T) {
	iss, _ := newIssuer(t)
	for _, tc := range []struct {
		name string
		tags map[string][]string
		want string
	}{
		{"no values", map[string][]string{"kuma.io/service": {}}, `tag "kuma.io/service": at least one value is required`},
		{"empty value", map[string][]string{"kuma.io/service": {""}}, "a tag value is required"},
		{"empty key", map[string][]string{"": {"a"}}, "a tag name is required"},
		{"wildcard with others", map[string][]string{"kuma.io/service": {"*", "a"}}, `"*" allows any value and cannot be listed with others`},
		{"control character", map[string][]string{"kuma.io/service": {"a\nb"}}, "control characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := iss.IssueDataplane("default", "dp", tc.tags, 0)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// A signed token whose tags are malformed does not verify.
	forged := forge(`{"alg":"HS256"}`, `{"typ":"dataplane","mesh":"m","name":"n","tags":{"kuma.io/service":[]}}`, bytes.Repeat([]byte{2}, 32), "")
	_, err := iss.VerifyDataplane(forged)
	require.ErrorIs(t, err, authn.ErrInvalid)
	require.ErrorContains(t, err, "its tags")
}

func TestInspectDataplaneToken(t *testing.T) {
	iss, clk := newIssuer(t)
	token, err := iss.IssueDataplane("default", "web-1", map[string][]string{"kuma.io/service": {"web"}}, time.Hour)
	require.NoError(t, err)
	clk.now = t0.Add(2 * time.Hour)
	_, err = iss.VerifyDataplane(token)
	require.ErrorIs(t, err, authn.ErrExpired)
	id, err := authn.InspectDataplaneToken(token)
	require.NoError(t, err, "inspecting checks neither times nor signature")
	require.Equal(t, "web-1", id.Name)
	require.Equal(t, t0.Add(time.Hour), id.ExpiresAt)
	require.Equal(t, map[string][]string{"kuma.io/service": {"web"}}, id.Tags)

	user, err := iss.IssueUser("alice", nil, 0)
	require.NoError(t, err)
	for _, bad := range []string{"", "x.y.z", user, forge(`{"alg":"none"}`, `{"typ":"dataplane","mesh":"m","name":"n"}`, nil, "")} {
		_, err := authn.InspectDataplaneToken(bad)
		require.ErrorIs(t, err, authn.ErrInvalid, "%q", bad)
	}
}

func TestServiceAccountUser(t *testing.T) {
	for _, tc := range []struct {
		user, ns, name string
		ok             bool
	}{
		{"system:serviceaccount:kuma-example:default", "kuma-example", "default", true},
		{"system:serviceaccount:ns:sa-1", "ns", "sa-1", true},
		{"system:serviceaccount:ns", "", "", false},
		{"system:serviceaccount::sa", "", "", false},
		{"system:serviceaccount:ns:", "", "", false},
		{"system:serviceaccount:ns:a:b", "", "", false},
		{"system:serviceaccounts:ns", "", "", false},
		{"admin", "", "", false},
	} {
		ns, name, ok := authn.ServiceAccountUser(tc.user)
		require.Equal(t, tc.ok, ok, tc.user)
		require.Equal(t, tc.ns, ns, tc.user)
		require.Equal(t, tc.name, name, tc.user)
	}
}

// TestInspectServiceAccountToken reads the claims of a projected token as
// the kubelet gets it (RS256, kubernetes.io claims), without its key.
func TestInspectServiceAccountToken(t *testing.T) {
	projected := forge(`{"alg":"RS256","kid":"k1"}`, `{"aud":["https://kubernetes.default.svc"],"exp":1796731200,"iat":1796727600,`+
		`"iss":"https://kubernetes.default.svc","jti":"x","kubernetes.io":{"namespace":"kuma-example","node":{"name":"n1","uid":"u"},`+
		`"pod":{"name":"web-5c89f4d995-85znn","uid":"p"},"serviceaccount":{"name":"web","uid":"s"}},"nbf":1796727600,`+
		`"sub":"system:serviceaccount:kuma-example:web"}`, nil, "c2ln")
	sa, err := authn.InspectServiceAccountToken(projected)
	require.NoError(t, err)
	require.Equal(t, authn.ServiceAccountToken{Namespace: "kuma-example", ServiceAccount: "web", Pod: "web-5c89f4d995-85znn",
		ExpiresAt: time.Unix(1796731200, 0).UTC()}, sa)

	// A token of the TokenRequest API bound to no Pod, without expiry.
	unbound := forge(`{"alg":"RS256"}`, `{"sub":"system:serviceaccount:ns:default"}`, nil, "c2ln")
	sa, err = authn.InspectServiceAccountToken(unbound)
	require.NoError(t, err)
	require.Equal(t, authn.ServiceAccountToken{Namespace: "ns", ServiceAccount: "default"}, sa)

	iss, _ := newIssuer(t)
	dp, err := iss.IssueDataplane("default", "web-1", map[string][]string{"kuma.io/service": {"web"}}, 0)
	require.NoError(t, err)
	for bad, msg := range map[string]string{
		"":                          "not a compact JWT",
		"a.b":                       "not a compact JWT",
		"x.%.z":                     "payload is not base64url",
		forge(`{}`, `[1]`, nil, ""): "payload is not a JSON object",
		dp:                          "is not a Kubernetes ServiceAccount",
	} {
		_, err := authn.InspectServiceAccountToken(bad)
		require.ErrorIs(t, err, authn.ErrInvalid, "%q", bad)
		require.ErrorContains(t, err, msg, "%q", bad)
	}
}
