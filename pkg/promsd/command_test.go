package promsd

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/version"
)

// guideArgs is the command of the user guide, verbatim.
var guideArgs = []string{
	"run",
	"--cp-address=grpcs://kuma-control-plane.internal:5676",
	"--output-file=/var/run/kuma-prometheus-sd/kuma.file_sd.json",
}

func envFunc(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// parseRun runs the command tree with args and env up to the point where the
// client would start, and returns the configuration it would start with.
func parseRun(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	var got *Config
	cmd := NewRootCommand(CommandOptions{
		LookupEnv: envFunc(env),
		Stdout:    &logBuffer{},
		Stderr:    &logBuffer{},
		Run: func(_ context.Context, cfg Config, log *slog.Logger) error {
			require.NotNil(t, log)
			got = &cfg
			return nil
		},
	})
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		require.Nil(t, got, "the client must not start on an error")
		return Config{}, err
	}
	require.NotNil(t, got)
	return *got, nil
}

func TestRunFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	ca := newTestCA(t, "test CA")
	require.NoError(t, os.WriteFile(caFile, ca.certPEM, 0o600))
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	missing := filepath.Join(dir, "missing.pem")
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("a.b.c\n"), 0o600))
	emptyToken := filepath.Join(dir, "empty-token")
	require.NoError(t, os.WriteFile(emptyToken, []byte(" \n"), 0o600))
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	clients, err := pki.NewCA("scrapers", pki.KeyType{}, time.Now(), time.Hour)
	require.NoError(t, err)
	client, err := pki.Issue(clients, pki.Leaf{CommonName: "prometheus", Client: true, Lifetime: time.Hour}, time.Now())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, client.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, client.KeyPEM, 0o600))
	other, err := pki.Issue(clients, pki.Leaf{CommonName: "other", Client: true, Lifetime: time.Hour}, time.Now())
	require.NoError(t, err)
	otherKey := filepath.Join(dir, "other.key")
	require.NoError(t, os.WriteFile(otherKey, other.KeyPEM, 0o600))

	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		want    Config
		wantErr []string // substrings of the error; nil means success
	}{
		{
			name: "defaults",
			args: []string{"run"},
			want: Config{
				CPAddress: "grpc://localhost:5676", Name: "kuma_sd",
				OutputFile: "/var/run/kuma-prometheus-sd/kuma.file_sd.json", LogLevel: slog.LevelInfo,
			},
		},
		{
			name: "the user guide's command",
			args: guideArgs,
			want: with(func(c *Config) {
				c.CPAddress = "grpcs://kuma-control-plane.internal:5676"
				c.OutputFile = "/var/run/kuma-prometheus-sd/kuma.file_sd.json"
			}),
		},
		{
			name: "environment",
			args: []string{"run"},
			env: map[string]string{
				EnvCPAddress: "grpc://cp.example:1234", EnvName: "sd-1", EnvOutputFile: "/tmp/out.json",
			},
			want: with(func(c *Config) {
				c.CPAddress, c.Name, c.OutputFile = "grpc://cp.example:1234", "sd-1", "/tmp/out.json"
			}),
		},
		{
			name: "flags win over the environment",
			args: []string{"run", "--cp-address", "grpc://flag:1", "--name=flag", "--output-file=/flag.json"},
			env: map[string]string{
				EnvCPAddress: "http://bad-env", EnvName: "env", EnvOutputFile: "/env.json",
			},
			want: with(func(c *Config) {
				c.CPAddress, c.Name, c.OutputFile = "grpc://flag:1", "flag", "/flag.json"
			}),
		},
		{
			name: "empty variables count as unset",
			args: []string{"run"},
			env:  map[string]string{EnvCPAddress: "", EnvName: "", EnvOutputFile: ""},
			want: DefaultConfig(),
		},
		{
			name: "grpcs with a CA bundle, IPv6 host, no port",
			args: []string{"run", "--cp-address=grpcs://[::1]", "--ca-cert-file=" + caFile},
			want: with(func(c *Config) { c.CPAddress, c.CACertFile = "grpcs://[::1]", caFile }),
		},
		{
			name: "grpcs without verification, debug logs",
			args: []string{"run", "--cp-address=GRPCS://cp:5676/", "--insecure-skip-verify", "--log-level=debug"},
			want: with(func(c *Config) {
				c.CPAddress, c.InsecureSkipVerify, c.LogLevel = "GRPCS://cp:5676/", true, slog.LevelDebug
			}),
		},
		{
			name: "token and client certificate over grpcs",
			args: []string{"run", "--cp-address=grpcs://cp.example:5676", "--ca-cert-file=" + caFile, "--auth-token-file=" + tokenFile,
				"--client-cert-file=" + certFile, "--client-key-file=" + keyFile},
			want: with(func(c *Config) {
				c.CPAddress, c.CACertFile, c.AuthTokenFile, c.ClientCertFile, c.ClientKeyFile = "grpcs://cp.example:5676", caFile, tokenFile, certFile, keyFile
			}),
		},
		{
			name: "token over plain grpc to a loopback host",
			args: []string{"run", "--cp-address=grpc://127.0.0.1:5676", "--auth-token-file=" + tokenFile},
			want: with(func(c *Config) { c.CPAddress, c.AuthTokenFile = "grpc://127.0.0.1:5676", tokenFile }),
		},
		{
			name: "token over plain grpc to localhost",
			args: []string{"run", "--auth-token-file=" + tokenFile},
			want: with(func(c *Config) { c.AuthTokenFile = tokenFile }),
		},
		{name: "token in clear to a remote host", args: []string{"run", "--cp-address=grpc://cp.example:5676", "--auth-token-file=" + tokenFile},
			wantErr: []string{"--auth-token-file", "refusing to send a token in clear over grpc:// to cp.example", "use grpcs://"}},
		{name: "token in clear to a remote address", args: []string{"run", "--cp-address=grpc://10.0.0.1:5676", "--auth-token-file=" + tokenFile},
			wantErr: []string{"--auth-token-file", "to 10.0.0.1, which is not a loopback host"}},
		{name: "missing token file", args: []string{"run", "--cp-address=grpcs://cp:5676", "--auth-token-file=" + missing}, wantErr: []string{"--auth-token-file", missing}},
		{name: "empty token file", args: []string{"run", "--cp-address=grpcs://cp:5676", "--auth-token-file=" + emptyToken}, wantErr: []string{"--auth-token-file", "holds no token"}},
		{name: "client certificate without key", args: []string{"run", "--cp-address=grpcs://cp:5676", "--client-cert-file=" + certFile},
			wantErr: []string{"--client-key-file: is required with --client-cert-file"}},
		{name: "client key without certificate", args: []string{"run", "--cp-address=grpcs://cp:5676", "--client-key-file=" + keyFile},
			wantErr: []string{"--client-cert-file: is required with --client-key-file"}},
		{name: "client certificate with plain grpc", args: []string{"run", "--client-cert-file=" + certFile, "--client-key-file=" + keyFile},
			wantErr: []string{"--client-cert-file", "only applies to a grpcs://"}},
		{name: "missing client certificate", args: []string{"run", "--cp-address=grpcs://cp:5676", "--client-cert-file=" + missing, "--client-key-file=" + keyFile},
			wantErr: []string{"--client-cert-file", missing}},
		{name: "mismatched client key", args: []string{"run", "--cp-address=grpcs://cp:5676", "--client-cert-file=" + certFile, "--client-key-file=" + otherKey},
			wantErr: []string{"--client-key-file", "do not make a key pair"}},
		{name: "unknown scheme", args: []string{"run", "--cp-address=http://cp:5676"}, wantErr: []string{"--cp-address", `"http"`, "grpc or grpcs"}},
		{name: "no scheme", args: []string{"run", "--cp-address=cp:5676"}, wantErr: []string{"--cp-address"}},
		{name: "no scheme nor port", args: []string{"run", "--cp-address=cp"}, wantErr: []string{"--cp-address", "no scheme"}},
		{name: "missing host", args: []string{"run", "--cp-address=grpc://:5676"}, wantErr: []string{"--cp-address", "no host"}},
		{name: "empty address", args: []string{"run", "--cp-address="}, wantErr: []string{"--cp-address", "empty"}},
		{name: "bad port", args: []string{"run", "--cp-address=grpc://cp:99999"}, wantErr: []string{"--cp-address", "1-65535"}},
		{name: "empty port", args: []string{"run", "--cp-address=grpc://cp:"}, wantErr: []string{"--cp-address", "empty port"}},
		{name: "path", args: []string{"run", "--cp-address=grpc://cp:5676/mads"}, wantErr: []string{"--cp-address", "path"}},
		{name: "user info", args: []string{"run", "--cp-address=grpc://u:p@cp:5676"}, wantErr: []string{"--cp-address", "user"}},
		{name: "not a URL", args: []string{"run", "--cp-address=grpc://cp:5676/%zz"}, wantErr: []string{"--cp-address"}},
		{
			name:    "bad address from the environment names the variable",
			args:    []string{"run"},
			env:     map[string]string{EnvCPAddress: "ftp://cp"},
			wantErr: []string{"--cp-address", "$" + EnvCPAddress},
		},
		{name: "unreadable CA file", args: []string{"run", "--cp-address=grpcs://cp:5676", "--ca-cert-file=" + missing}, wantErr: []string{"--ca-cert-file", missing}},
		{name: "CA file without certificates", args: []string{"run", "--cp-address=grpcs://cp:5676", "--ca-cert-file=" + notPEM}, wantErr: []string{"--ca-cert-file", "no PEM"}},
		{name: "CA file with plain grpc", args: []string{"run", "--ca-cert-file=" + caFile}, wantErr: []string{"--ca-cert-file", "grpcs://"}},
		{name: "skip-verify with plain grpc", args: []string{"run", "--insecure-skip-verify"}, wantErr: []string{"--insecure-skip-verify", "grpcs://"}},
		{
			name:    "CA file and skip-verify together",
			args:    []string{"run", "--cp-address=grpcs://cp:5676", "--insecure-skip-verify", "--ca-cert-file=" + caFile},
			wantErr: []string{"--ca-cert-file", "--insecure-skip-verify"},
		},
		{name: "empty output file", args: []string{"run", "--output-file="}, wantErr: []string{"--output-file", "empty"}},
		{name: "output file is a directory", args: []string{"run", "--output-file=/var/run/"}, wantErr: []string{"--output-file", "directory"}},
		{name: "empty name", args: []string{"run", "--name="}, wantErr: []string{"--name", "empty"}},
		{name: "bad log level", args: []string{"run", "--log-level=loud"}, wantErr: []string{"--log-level", "loud"}},
		{name: "unknown flag", args: []string{"run", "--server=x"}, wantErr: []string{"--server"}},
		{name: "bad bool", args: []string{"run", "--insecure-skip-verify=maybe"}, wantErr: []string{"insecure-skip-verify"}},
		{name: "stray argument", args: []string{"run", "extra"}, wantErr: []string{"extra"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseRun(t, tc.args, tc.env)
			if tc.wantErr != nil {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					require.ErrorContains(t, err, s)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestExecute(t *testing.T) {
	t.Parallel()
	t.Run("version", func(t *testing.T) {
		t.Parallel()
		var stdout, stderr logBuffer
		code := Execute(t.Context(), CommandOptions{Stdout: &stdout, Stderr: &stderr, LookupEnv: envFunc(nil)}, []string{"version"})
		require.Equal(t, 0, code)
		require.Equal(t, version.Product+" "+version.Version+"\n", stdout.String())
		require.Empty(t, stderr.String())
	})

	t.Run("the guide's command runs, verifying the control plane against the system's roots", func(t *testing.T) {
		t.Parallel()
		var got Config
		code := Execute(t.Context(), CommandOptions{Stdout: &logBuffer{}, Stderr: &logBuffer{}, LookupEnv: envFunc(nil),
			Run: func(_ context.Context, c Config, _ *slog.Logger) error { got = c; return nil }}, guideArgs)
		require.Equal(t, 0, code)
		require.Equal(t, "grpcs://kuma-control-plane.internal:5676", got.CPAddress)
		require.Empty(t, got.CACertFile)
		require.False(t, got.InsecureSkipVerify)
		_, err := NewClient(got)
		require.NoError(t, err)
	})

	t.Run("bad flags exit 1 with the error", func(t *testing.T) {
		t.Parallel()
		var stderr logBuffer
		code := Execute(t.Context(), CommandOptions{Stdout: &logBuffer{}, Stderr: &stderr, LookupEnv: envFunc(nil)},
			[]string{"run", "--cp-address=tcp://cp"})
		require.Equal(t, 1, code)
		require.True(t, strings.HasPrefix(stderr.String(), "Error: --cp-address: "), stderr.String())
	})

	t.Run("stops cleanly when its context is canceled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stderr := &logBuffer{t: t}
		out := filepath.Join(t.TempDir(), "sd.json")
		done := make(chan int, 1)
		go func() {
			// Port 1 on the loopback: nothing listens, connections are refused.
			done <- Execute(ctx, CommandOptions{Stdout: &logBuffer{}, Stderr: stderr, LookupEnv: envFunc(nil)},
				[]string{"run", "--cp-address=grpc://127.0.0.1:1", "--output-file=" + out})
		}()
		waitFor(t, "a failed connection attempt", func() bool {
			return len(stderr.lines("cannot connect to the control plane")) > 0
		})
		cancel()
		var code int
		waitFor(t, "the command to return", func() bool {
			select {
			case code = <-done:
				return true
			default:
				return false
			}
		})
		require.Equal(t, 0, code)
		require.NoFileExists(t, out)
		require.NotEmpty(t, stderr.lines("stopped"))
	})
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, newTestCA(t, "test CA").certPEM, 0o600))
	for _, tc := range []struct {
		name    string
		cfg     func(*Config)
		wantErr []string
	}{
		{name: "plain grpc", cfg: func(*Config) {}},
		{name: "grpcs without CA verifies against the system roots", cfg: func(c *Config) { c.CPAddress = "grpcs://cp:5676" }},
		{name: "grpcs with CA", cfg: func(c *Config) { c.CPAddress, c.CACertFile = "grpcs://cp:5676", caFile }},
		{name: "grpcs with skip-verify", cfg: func(c *Config) { c.CPAddress, c.InsecureSkipVerify = "grpcs://cp:5676", true }},
		{name: "invalid config", cfg: func(c *Config) { c.Name = "" }, wantErr: []string{"--name"}},
		{name: "zero config", cfg: func(c *Config) { *c = Config{} }, wantErr: []string{"--cp-address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tc.cfg(&cfg)
			c, err := NewClient(cfg, WithLogger(nil), WithBackoff(Backoff{}))
			if tc.wantErr != nil {
				for _, s := range tc.wantErr {
					require.ErrorContains(t, err, s)
				}
				require.Nil(t, c)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, c)
		})
	}
}
