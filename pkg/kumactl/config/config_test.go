package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/kumactl/config"
)

func TestLoadMissingFileGivesDefault(t *testing.T) {
	cfg, exists, err := config.Load(filepath.Join(t.TempDir(), "nope", "config"))
	require.NoError(t, err)
	require.False(t, exists)
	require.Equal(t, config.Default(), cfg)
	cp, err := cfg.CurrentControlPlane()
	require.NoError(t, err)
	require.Equal(t, "http://localhost:5681", cp.Address())
}

func TestSaveAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), ".kumactl")
	path := filepath.Join(dir, "config")
	cfg := config.Default()
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "prod", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: "https://cp.prod:5682"}}}, false))
	require.NoError(t, config.Save(path, cfg))

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, `contexts:
- name: local
  controlPlane: local
- name: prod
  controlPlane: prod
controlPlanes:
- name: local
  coordinates:
    apiServer:
      url: http://localhost:5681
- name: prod
  coordinates:
    apiServer:
      url: https://cp.prod:5682
currentContext: prod
`, string(data))

	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	back, exists, err := config.Load(path)
	require.NoError(t, err)
	require.True(t, exists)
	require.Equal(t, cfg, back)
}

func TestLoadRejectsBrokenFiles(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"not yaml", "contexts: [", "is not valid YAML"},
		{"dangling context", "contexts:\n- name: a\n  controlPlane: b\n", `contexts[0].controlPlane: no control plane is named "b"`},
		{"dangling current", "currentContext: x\n", `currentContext: no context is named "x"`},
		{"duplicate", "controlPlanes:\n- name: a\n  coordinates: {apiServer: {url: http://a}}\n- name: a\n  coordinates: {apiServer: {url: http://b}}\n", `"a" is used twice`},
		{"unknown auth type", "controlPlanes:\n- name: a\n  coordinates: {apiServer: {url: http://a, authType: basic}}\n",
			`controlPlanes[0].coordinates.apiServer.authType: unknown auth type "basic" (known: tokens)`},
		{"tokens without a token", "controlPlanes:\n- name: a\n  coordinates: {apiServer: {url: http://a, authType: tokens, authConf: {}}}\n",
			`controlPlanes[0].coordinates.apiServer.authConf: auth type tokens needs token=<user token>`},
		{"auth conf without a type", "controlPlanes:\n- name: a\n  coordinates: {apiServer: {url: http://a, authConf: {token: x}}}\n",
			`controlPlanes[0].coordinates.apiServer.authConf: needs an auth type`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, _, err := config.Load(path)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSaveAndLoadAuth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	cfg := config.Default()
	api := config.APIServer{URL: "https://cp:5682", AuthType: config.AuthTypeTokens, AuthConf: map[string]string{config.AuthConfToken: "a.b.c"}}
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "secure", Coordinates: config.Coordinates{APIServer: api}}, false))
	require.NoError(t, config.Save(path, cfg))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(data), "      url: https://cp:5682\n      authType: tokens\n      authConf:\n        token: a.b.c\n")
	require.NotContains(t, string(data), "url: http://localhost:5681\n      auth", "a control plane without auth has no auth keys")
	back, _, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, cfg, back)
	require.Equal(t, "a.b.c", back.ControlPlane("secure").Coordinates.APIServer.Token())
	require.Empty(t, back.ControlPlane("local").Coordinates.APIServer.Token())

	bad := config.Default()
	bad.ControlPlanes[0].Coordinates.APIServer.AuthType = "tokens"
	require.EqualError(t, config.Save(path, bad), "controlPlanes[0].coordinates.apiServer.authConf: auth type tokens needs token=<user token>")
}

func TestAddSwitchRemove(t *testing.T) {
	cfg := config.Default()
	cp := config.ControlPlane{Name: "b", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: "http://b:5681"}}}
	require.NoError(t, cfg.AddControlPlane(cp, false))
	require.Equal(t, "b", cfg.CurrentContext)
	require.EqualError(t, cfg.AddControlPlane(cp, false), `control plane "b" already exists; use --overwrite to replace it`)
	cp.Coordinates.APIServer.URL = "http://b2:5681"
	require.NoError(t, cfg.AddControlPlane(cp, true))
	require.Len(t, cfg.ControlPlanes, 2)
	require.Equal(t, "http://b2:5681", cfg.ControlPlane("b").Address())

	require.NoError(t, cfg.SwitchContext("local"))
	require.Equal(t, "local", cfg.CurrentContext)
	require.EqualError(t, cfg.SwitchContext("zzz"), `there is no Control Plane with name "zzz"`)

	require.NoError(t, cfg.RemoveControlPlane("local"))
	require.Equal(t, "b", cfg.CurrentContext)
	require.NoError(t, cfg.RemoveControlPlane("b"))
	require.Equal(t, "", cfg.CurrentContext)
	_, err := cfg.CurrentControlPlane()
	require.Error(t, err)
}

func TestTLSSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config")
	// A file written before the TLS settings existed still loads.
	old := "contexts:\n- name: a\n  controlPlane: a\ncontrolPlanes:\n- name: a\n  coordinates:\n    apiServer:\n      url: https://cp:5682\n      authType: tokens\n      authConf:\n        token: a.b.c\ncurrentContext: a\n"
	require.NoError(t, os.WriteFile(path, []byte(old), 0o600))
	cfg, _, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, config.APIServer{URL: "https://cp:5682", AuthType: "tokens", AuthConf: map[string]string{"token": "a.b.c"}}, cfg.ControlPlane("a").Coordinates.APIServer)

	api := config.APIServer{URL: "https://cp:5682", CACertFile: "/etc/kuma/ca.pem", ClientCertFile: "/etc/kuma/admin.pem", ClientKeyFile: "/etc/kuma/admin.key"}
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "tls", Coordinates: config.Coordinates{APIServer: api}}, false))
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "skip", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: "https://cp:5682", SkipVerify: true}}}, false))
	require.NoError(t, config.Save(path, cfg))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, string(data), "      url: https://cp:5682\n      caCertFile: /etc/kuma/ca.pem\n      clientCertFile: /etc/kuma/admin.pem\n      clientKeyFile: /etc/kuma/admin.key\n")
	require.Contains(t, string(data), "      url: https://cp:5682\n      skipVerify: true\n")
	back, _, err := config.Load(path)
	require.NoError(t, err)
	require.Equal(t, cfg, back)

	for _, tc := range []struct {
		name string
		api  config.APIServer
		want string
	}{
		{"CA file and skip verify", config.APIServer{URL: "https://cp", CACertFile: "/ca.pem", SkipVerify: true}, "skipVerify: excludes caCertFile: verify the control plane against a CA, or do not verify it"},
		{"certificate without key", config.APIServer{URL: "https://cp", ClientCertFile: "/c.pem"}, "clientKeyFile: is required with clientCertFile"},
		{"key without certificate", config.APIServer{URL: "https://cp", ClientKeyFile: "/c.key"}, "clientCertFile: is required with clientKeyFile"},
		{"TLS settings for http", config.APIServer{URL: "http://cp:5681", SkipVerify: true}, `skipVerify: only applies to an https:// address, got "http://cp:5681"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := config.Default()
			bad.ControlPlanes[0].Coordinates.APIServer = tc.api
			require.EqualError(t, config.Save(path, bad), "controlPlanes[0].coordinates.apiServer."+tc.want)
			_, err := tc.api.TLSConfig()
			require.EqualError(t, err, tc.want)
		})
	}

	tlsCfg, err := config.APIServer{URL: "http://cp:5681"}.TLSConfig()
	require.NoError(t, err)
	require.Nil(t, tlsCfg, "nothing to configure for http://")
	tlsCfg, err = config.APIServer{URL: "https://cp:5682"}.TLSConfig()
	require.NoError(t, err)
	require.Nil(t, tlsCfg.RootCAs, "the system's roots")
	require.False(t, tlsCfg.InsecureSkipVerify)
	_, err = config.APIServer{URL: "https://cp:5682", CACertFile: "/nonexistent/ca.pem"}.TLSConfig()
	require.EqualError(t, err, "caCertFile: open /nonexistent/ca.pem: no such file or directory")
}

func TestTokenInClear(t *testing.T) {
	token := map[string]string{config.AuthConfToken: "a.b.c"}
	for url, want := range map[string]bool{
		"http://cp.example:5681": true,
		"http://10.0.0.1:5681":   true,
		"http://[2001:db8::1]":   true,
		"https://cp.example":     false,
		"http://127.0.0.1:5681":  false,
		"http://127.1.2.3:5681":  false,
		"http://[::1]:5681":      false,
		"http://localhost:5681":  false,
		"HTTP://LOCALHOST:5681":  false,
	} {
		require.Equal(t, want, config.APIServer{URL: url, AuthType: config.AuthTypeTokens, AuthConf: token}.TokenInClear(), url)
		require.False(t, config.APIServer{URL: url}.TokenInClear(), "no token: %s", url)
	}
}
