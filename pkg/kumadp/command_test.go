package kumadp

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const validDataplane = `type: Dataplane
mesh: default
name: web-1
networking:
  address: 127.0.0.2
  inbound:
  - port: 8080
    tags:
      kuma.io/service: web
`

func TestRunFlags(t *testing.T) {
	dir := t.TempDir()
	dpFile := filepath.Join(dir, "dp.yaml")
	require.NoError(t, os.WriteFile(dpFile, []byte(validDataplane), 0o600))
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, []byte(testCAPEM(t)), 0o600))
	badYAML := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(badYAML, []byte("type: Dataplane\nmesh: default\nname: x\nnetworking:\n  address: [\n"), 0o600))
	tokenFile := filepath.Join(dir, "web-1.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("a.b.c\n"), 0o600))
	emptyToken := filepath.Join(dir, "empty.token")
	require.NoError(t, os.WriteFile(emptyToken, []byte("\n"), 0o600))
	mesh := filepath.Join(dir, "mesh.yaml")
	require.NoError(t, os.WriteFile(mesh, []byte("type: Mesh\nname: m\n"), 0o600))

	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
		check   func(*testing.T, Config)
	}{
		{name: "file and CA", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--cp-address", "https://cp:5678"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "web-1", c.Dataplane.Meta.Name)
				require.Equal(t, "127.0.0.1:9901", c.AdminAddress)
				require.Equal(t, DefaultDrainTimeout, c.DrainTimeout)
			}},
		{name: "inline and environment", args: []string{"--admin-port", "9911"},
			env: map[string]string{EnvDataplane: validDataplane, EnvCACertFile: caFile, EnvCPAddress: "https://cp:5678", EnvDrainTime: "3s"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "127.0.0.1:9911", c.AdminAddress)
				require.Equal(t, 3*time.Second, c.DrainTimeout)
				require.Equal(t, caFile, c.CACertFile)
			}},
		{name: "insecure needs saying", args: []string{"--dataplane-file", dpFile, "--insecure-skip-verify"},
			check: func(t *testing.T, c Config) { require.True(t, c.InsecureSkipVerify) }},
		{name: "token file is kept to be re-read", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--dataplane-token-file", tokenFile},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "a.b.c", c.Token)
				require.Equal(t, tokenFile, c.TokenFile)
			}},
		{name: "inline token", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--dataplane-token", "x.y.z"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "x.y.z", c.Token)
				require.Empty(t, c.TokenFile)
			}},
		{name: "empty token file", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--dataplane-token-file", emptyToken}, wantErr: "--dataplane-token-file " + emptyToken + ": empty"},
		{name: "both token forms", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--dataplane-token-file", tokenFile, "--dataplane-token", "x.y.z"}, wantErr: "not both"},
		{name: "no CA refused", args: []string{"--dataplane-file", dpFile}, wantErr: "--ca-cert-file is required"},
		{name: "plain http refused", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--cp-address", "http://cp:5678"}, wantErr: "TLS only"},
		{name: "missing CA file", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", filepath.Join(dir, "nope.pem")}, wantErr: "--ca-cert-file"},
		{name: "CA file without PEM", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", dpFile}, wantErr: "no PEM certificate"},
		{name: "no dataplane", args: []string{"--ca-cert-file", caFile}, wantErr: "the Dataplane is required: --dataplane-file FILE or --dataplane YAML presents it (Universal), " +
			"or --name NAME [--mesh MESH] names the one the control plane stores (Kubernetes)"},
		{name: "name and mesh: the stored Dataplane", args: []string{"--name", "web-5c89f4d995-85znn.kuma-example", "--mesh", "demo", "--ca-cert-file", caFile,
			"--cp-address", "https://kuma-control-plane.kuma-system:5678", "--dataplane-token-file", tokenFile},
			check: func(t *testing.T, c Config) {
				require.Nil(t, c.Dataplane, "nothing to present")
				require.Equal(t, "web-5c89f4d995-85znn.kuma-example", c.Name)
				require.Equal(t, "demo", c.Mesh)
				require.Equal(t, "https://kuma-control-plane.kuma-system:5678", c.CPAddress)
				require.Equal(t, tokenFile, c.TokenFile)
			}},
		{name: "name and mesh from the environment", args: []string{"--ca-cert-file", caFile},
			env: map[string]string{EnvName: "web-1.kuma-example", EnvMesh: "demo"},
			check: func(t *testing.T, c Config) {
				require.Nil(t, c.Dataplane)
				require.Equal(t, "web-1.kuma-example", c.Name)
				require.Equal(t, "demo", c.Mesh)
			}},
		{name: "mesh defaults to default", args: []string{"--name", "web-1.kuma-example", "--ca-cert-file", caFile},
			check: func(t *testing.T, c Config) { require.Equal(t, "default", c.Mesh) }},
		{name: "mesh alone is not enough", args: []string{"--mesh", "demo", "--ca-cert-file", caFile}, wantErr: "the Dataplane is required"},
		{name: "invalid name", args: []string{"--name", "web/1", "--ca-cert-file", caFile},
			wantErr: "--name: must be at most 253 letters, digits, '-', '.' and '_', starting and ending with a letter or digit"},
		{name: "invalid mesh", args: []string{"--name", "web-1", "--mesh", "Demo", "--ca-cert-file", caFile},
			wantErr: "--mesh: must be at most 63 lower-case letters, digits and '-'"},
		{name: "name of the Dataplane file", args: []string{"--dataplane-file", dpFile, "--name", "web-1", "--mesh", "default", "--ca-cert-file", caFile},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "web-1", c.Dataplane.Meta.Name)
				require.Equal(t, "web-1", c.Name)
			}},
		{name: "name differs from the Dataplane file", args: []string{"--dataplane-file", dpFile, "--name", "web-2", "--ca-cert-file", caFile},
			wantErr: `--name "web-2": the Dataplane is named "web-1"`},
		{name: "mesh differs from the Dataplane", args: []string{"--dataplane", validDataplane, "--ca-cert-file", caFile},
			env: map[string]string{EnvMesh: "demo"}, wantErr: `--mesh "demo": the Dataplane is in mesh "default"`},
		{name: "both dataplane forms", args: []string{"--dataplane-file", dpFile, "--dataplane", validDataplane}, wantErr: "not both"},
		{name: "YAML error has its line", args: []string{"--dataplane-file", badYAML, "--ca-cert-file", caFile}, wantErr: "line"},
		{name: "not a dataplane", args: []string{"--dataplane-file", mesh, "--ca-cert-file", caFile}, wantErr: "not a Dataplane"},
		{name: "invalid dataplane names the field", args: []string{"--dataplane", "type: Dataplane\nname: x\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: 0\n    tags: {kuma.io/service: x}\n", "--ca-cert-file", caFile}, wantErr: "networking.inbound[0].port"},
		{name: "bad log level", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--log-level", "loud"}, wantErr: "--log-level"},
		{name: "bad admin port", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--admin-port", "70000"}, wantErr: "--admin-port"},
		{name: "admin on another loopback address", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--admin-address", "127.0.0.9"},
			check: func(t *testing.T, c Config) { require.Equal(t, "127.0.0.9:9901", c.AdminAddress) }},
		{name: "admin address from the environment", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile},
			env:   map[string]string{EnvAdminAddress: "::1", EnvAdminPort: "9922"},
			check: func(t *testing.T, c Config) { require.Equal(t, "[::1]:9922", c.AdminAddress) }},
		{name: "admin never off loopback", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile, "--admin-address", "0.0.0.0"}, wantErr: "--admin-address: must be a loopback"},
		{name: "bad admin port in the environment", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile},
			env: map[string]string{EnvAdminPort: "99o1"}, wantErr: EnvAdminPort + ": must be a port number"},
		{name: "bad drain time in the environment", args: []string{"--dataplane-file", dpFile, "--ca-cert-file", caFile},
			env: map[string]string{EnvDrainTime: "5 seconds"}, wantErr: EnvDrainTime + ": must be a duration"},
		{name: "unknown flag", args: []string{"--server", "x"}, wantErr: "unknown flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got *Config
			root := NewRootCommand(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }, io.Discard,
				func(_ context.Context, c Config) error { got = &c; return nil })
			root.SetArgs(append([]string{"run"}, tc.args...))
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.ExecuteContext(t.Context())
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.Nil(t, got, "nothing runs on bad input")
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got)
			tc.check(t, *got)
		})
	}
}
