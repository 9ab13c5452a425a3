package cpconfig

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/netserve"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, uint32(5681), c.APIServer.HTTP.Port)
	require.Equal(t, uint32(5678), c.DPServer.Port)
	require.Equal(t, uint32(5676), c.MonitoringAssignmentServer.Port)
	require.Equal(t, uint32(5680), c.Diagnostics.ServerPort)
	require.Equal(t, Duration(30*time.Second), c.MonitoringAssignmentServer.DefaultFetchTimeout)
	require.Equal(t, StoreSQLite, c.Store.Type)
	require.Equal(t, EnvironmentUniversal, c.Environment)
	require.False(t, c.Kubernetes())
	require.Equal(t, "kuma-system", c.Store.Kubernetes.SystemNamespace)
	require.Equal(t, filepath.Join("kuma-data", "kuma.db"), c.SQLitePath())
	require.True(t, c.APIServer.Authn.LocalhostIsAdmin)
	require.Equal(t, DPProxyAuthnDPToken, c.DPServer.Authn.DPProxy.Type)
	require.Equal(t, Duration(5*time.Minute), c.MonitoringAssignmentServer.MaxFetchTimeout)
	require.Equal(t, 1000, c.MonitoringAssignmentServer.MaxHeldLongPolls)
	require.Equal(t, 20, c.APIServer.MaxErrorCauses)
	require.Equal(t, netserve.DefaultHTTPLimits, c.ServerLimits.HTTP.Limits())
	require.Equal(t, netserve.DefaultGRPCLimits, c.ServerLimits.GRPC.Limits())
	require.False(t, c.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens, "untagged dataplane tokens are refused by default")
	require.Equal(t, APIServerHTTPS{Enabled: true, Interface: "0.0.0.0", Port: 5682}, c.APIServer.HTTPS)
	require.Empty(t, c.APIServer.Auth.ClientCertsDir)
	require.Equal(t, MADSAuthnNone, c.MonitoringAssignmentServer.Authn.Type, "the guide's plain http job keeps working")
	require.Empty(t, c.MonitoringAssignmentServer.TLSClientCAFile)
}

func TestServerBoundsSettings(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`apiServer:
  maxErrorCauses: 5
monitoringAssignmentServer:
  maxFetchTimeout: 10m
  maxHeldLongPolls: 50
serverLimits:
  http:
    readHeaderTimeout: 2s
    readTimeout: 20s
    idleTimeout: 30s
    maxHeaderBytes: 8192
  grpc:
    maxConcurrentStreams: 10
    keepaliveTime: 1m
    keepaliveTimeout: 20s
    keepaliveMinTime: 5s
`), 0o600))
	c, err := Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, 5, c.APIServer.MaxErrorCauses)
	require.Equal(t, Duration(10*time.Minute), c.MonitoringAssignmentServer.MaxFetchTimeout)
	require.Equal(t, 50, c.MonitoringAssignmentServer.MaxHeldLongPolls)
	require.Equal(t, netserve.HTTPLimits{ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 20 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 8192}, c.ServerLimits.HTTP.Limits())
	require.Equal(t, netserve.GRPCLimits{MaxConcurrentStreams: 10, KeepaliveTime: time.Minute, KeepaliveTimeout: 20 * time.Second, KeepaliveMinTime: 5 * time.Second}, c.ServerLimits.GRPC.Limits())

	c, err = Load(f, env(map[string]string{
		"KUMA_API_SERVER_MAX_ERROR_CAUSES":                      "7",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_FETCH_TIMEOUT":   "2m",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS": "99",
		"KUMA_SERVER_LIMITS_HTTP_READ_HEADER_TIMEOUT":           "3s",
		"KUMA_SERVER_LIMITS_HTTP_READ_TIMEOUT":                  "4s",
		"KUMA_SERVER_LIMITS_HTTP_IDLE_TIMEOUT":                  "5s",
		"KUMA_SERVER_LIMITS_HTTP_MAX_HEADER_BYTES":              "4096",
		"KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS":        "3",
		"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIME":                "6s",
		"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIMEOUT":             "7s",
		"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_MIN_TIME":            "8s",
	}))
	require.NoError(t, err)
	require.Equal(t, 7, c.APIServer.MaxErrorCauses)
	require.Equal(t, Duration(2*time.Minute), c.MonitoringAssignmentServer.MaxFetchTimeout)
	require.Equal(t, 99, c.MonitoringAssignmentServer.MaxHeldLongPolls)
	require.Equal(t, netserve.HTTPLimits{ReadHeaderTimeout: 3 * time.Second, ReadTimeout: 4 * time.Second, IdleTimeout: 5 * time.Second, MaxHeaderBytes: 4096}, c.ServerLimits.HTTP.Limits())
	require.Equal(t, netserve.GRPCLimits{MaxConcurrentStreams: 3, KeepaliveTime: 6 * time.Second, KeepaliveTimeout: 7 * time.Second, KeepaliveMinTime: 8 * time.Second}, c.ServerLimits.GRPC.Limits())
}

func TestHTTPSAndMADSSecuritySettings(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`
apiServer:
  https:
    enabled: true
    interface: 127.0.0.1
    port: 7682
    tlsCertFile: /etc/kuma/api.pem
    tlsKeyFile: /etc/kuma/api.key
  auth:
    clientCertsDir: /etc/kuma/admins
monitoringAssignmentServer:
  tlsCertFile: /etc/kuma/mads.pem
  tlsKeyFile: /etc/kuma/mads.key
  tlsClientCAFile: /etc/kuma/scrapers-ca.pem
  authn:
    type: token
`), 0o600))
	c, err := Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, APIServerHTTPS{Enabled: true, Interface: "127.0.0.1", Port: 7682, TLSCertFile: "/etc/kuma/api.pem", TLSKeyFile: "/etc/kuma/api.key"}, c.APIServer.HTTPS)
	require.Equal(t, "127.0.0.1:7682", c.APIServer.HTTPS.Address())
	require.Equal(t, "/etc/kuma/admins", c.APIServer.Auth.ClientCertsDir)
	require.Equal(t, "/etc/kuma/scrapers-ca.pem", c.MonitoringAssignmentServer.TLSClientCAFile)
	require.Equal(t, MADSAuthnToken, c.MonitoringAssignmentServer.Authn.Type)

	c, err = Load(f, env(map[string]string{
		"KUMA_API_SERVER_HTTPS_INTERFACE":                      "::1",
		"KUMA_API_SERVER_HTTPS_PORT":                           "7683",
		"KUMA_API_SERVER_HTTPS_TLS_CERT_FILE":                  "/a.pem",
		"KUMA_API_SERVER_HTTPS_TLS_KEY_FILE":                   "/a.key",
		"KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR":                "/admins",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE": "/ca.pem",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE":         "none",
	}))
	require.NoError(t, err)
	require.Equal(t, APIServerHTTPS{Enabled: true, Interface: "::1", Port: 7683, TLSCertFile: "/a.pem", TLSKeyFile: "/a.key"}, c.APIServer.HTTPS, "the environment wins over the file")
	require.Equal(t, "[::1]:7683", c.APIServer.HTTPS.Address())
	require.Equal(t, "/admins", c.APIServer.Auth.ClientCertsDir)
	require.Equal(t, "/ca.pem", c.MonitoringAssignmentServer.TLSClientCAFile)
	require.Equal(t, MADSAuthnNone, c.MonitoringAssignmentServer.Authn.Type)

	c, err = Load("", env(map[string]string{"KUMA_API_SERVER_HTTPS_ENABLED": "false"}))
	require.NoError(t, err)
	require.False(t, c.APIServer.HTTPS.Enabled)

	// A token over plain text is fine on loopback only.
	for _, iface := range []string{"127.0.0.1", "127.0.0.5", "::1", "localhost"} {
		c, err = Load("", env(map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE": "token", "KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE": iface}))
		require.NoError(t, err, iface)
		require.Equal(t, MADSAuthnToken, c.MonitoringAssignmentServer.Authn.Type)
	}
	for _, name := range []string{
		"KUMA_API_SERVER_HTTPS_ENABLED", "KUMA_API_SERVER_HTTPS_INTERFACE", "KUMA_API_SERVER_HTTPS_PORT",
		"KUMA_API_SERVER_HTTPS_TLS_CERT_FILE", "KUMA_API_SERVER_HTTPS_TLS_KEY_FILE", "KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE", "KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE",
	} {
		require.Contains(t, EnvNames(), name)
	}
}

func TestAuthnSettings(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("apiServer:\n  authn:\n    localhostIsAdmin: false\ndpServer:\n  authn:\n    dpProxy:\n      type: none\n"), 0o600))
	c, err := Load(f, env(nil))
	require.NoError(t, err)
	require.False(t, c.APIServer.Authn.LocalhostIsAdmin)
	require.Equal(t, DPProxyAuthnNone, c.DPServer.Authn.DPProxy.Type)

	c, err = Load(f, env(map[string]string{
		"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "true",
		"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE":       "dpToken",
	}))
	require.NoError(t, err)
	require.True(t, c.APIServer.Authn.LocalhostIsAdmin, "the environment wins over the file")
	require.Equal(t, DPProxyAuthnDPToken, c.DPServer.Authn.DPProxy.Type)

	c, err = Load("", env(map[string]string{"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "false"}))
	require.NoError(t, err)
	require.False(t, c.APIServer.Authn.LocalhostIsAdmin)
	require.Contains(t, EnvNames(), "KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN")
	require.Contains(t, EnvNames(), "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE")
}

func TestAllowUntaggedTokens(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("dpServer:\n  authn:\n    dpProxy:\n      dpToken:\n        allowUntaggedTokens: true\n"), 0o600))
	c, err := Load(f, env(nil))
	require.NoError(t, err)
	require.True(t, c.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens)
	c, err = Load(f, env(map[string]string{"KUMA_DP_SERVER_AUTHN_DP_PROXY_DP_TOKEN_ALLOW_UNTAGGED_TOKENS": "false"}))
	require.NoError(t, err)
	require.False(t, c.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens, "the environment wins over the file")
	require.Contains(t, EnvNames(), "KUMA_DP_SERVER_AUTHN_DP_PROXY_DP_TOKEN_ALLOW_UNTAGGED_TOKENS")
}

func TestDiagnosticsDebugEndpoints(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.False(t, c.Diagnostics.DebugEndpoints, "the profiler is off by default")
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("diagnostics:\n  debugEndpoints: true\n"), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.True(t, c.Diagnostics.DebugEndpoints)
	c, err = Load(f, env(map[string]string{"KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS": "false"}))
	require.NoError(t, err)
	require.False(t, c.Diagnostics.DebugEndpoints, "the environment wins over the file")
	_, err = Load("", env(map[string]string{"KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS": "yes please"}))
	require.ErrorContains(t, err, "KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS")
}

func TestKubernetesEnvironment(t *testing.T) {
	c, err := Load("", env(map[string]string{"KUMA_ENVIRONMENT": "kubernetes"}))
	require.NoError(t, err)
	require.True(t, c.Kubernetes())
	require.Equal(t, StoreKubernetes, c.Store.Type, "the environment implies the store")
	require.Equal(t, "kuma-system", c.Store.Kubernetes.SystemNamespace)

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("environment: kubernetes\nstore:\n  kubernetes:\n    systemNamespace: mesh-system\n"), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, EnvironmentKubernetes, c.Environment)
	require.Equal(t, StoreKubernetes, c.Store.Type)
	require.Equal(t, "mesh-system", c.Store.Kubernetes.SystemNamespace)
	c, err = Load(f, env(map[string]string{"KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE": "kuma-cp"}))
	require.NoError(t, err)
	require.Equal(t, "kuma-cp", c.Store.Kubernetes.SystemNamespace, "the environment wins over the file")
	for _, name := range []string{"KUMA_ENVIRONMENT", "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE"} {
		require.Contains(t, EnvNames(), name)
	}
}

// TestDataplaneProxyAuthnFollowsTheEnvironment: proxies authenticate with
// their Pod's ServiceAccount token on Kubernetes, with dataplane tokens in
// Universal, unless set.
func TestDataplaneProxyAuthnFollowsTheEnvironment(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, DPProxyAuthnDPToken, c.DPServer.Authn.DPProxy.Type)
	c, err = Load("", env(map[string]string{"KUMA_ENVIRONMENT": "kubernetes"}))
	require.NoError(t, err)
	require.Equal(t, DPProxyAuthnServiceAccountToken, c.DPServer.Authn.DPProxy.Type)
	for _, typ := range []string{DPProxyAuthnDPToken, DPProxyAuthnNone} {
		c, err = Load("", env(map[string]string{"KUMA_ENVIRONMENT": "kubernetes", "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": typ}))
		require.NoError(t, err)
		require.Equal(t, typ, c.DPServer.Authn.DPProxy.Type)
	}
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("environment: kubernetes\ndpServer:\n  authn:\n    dpProxy:\n      type: none\n"), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, DPProxyAuthnNone, c.DPServer.Authn.DPProxy.Type, "set in the file")
}

func TestFileThenEnvironment(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("apiServer:\n  http:\n    port: 7000\nstore:\n  type: memory\ngeneral:\n  workDir: /tmp/w\n"), 0o600))
	c, err := Load(f, env(map[string]string{
		"KUMA_API_SERVER_HTTP_PORT":                               "7001",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT": "1m",
	}))
	require.NoError(t, err)
	require.Equal(t, uint32(7001), c.APIServer.HTTP.Port, "the environment wins over the file")
	require.Equal(t, StoreMemory, c.Store.Type)
	require.Equal(t, "/tmp/w/kuma.db", c.SQLitePath())
	require.Equal(t, Duration(time.Minute), c.MonitoringAssignmentServer.DefaultFetchTimeout)

	c, err = Load("", env(map[string]string{"KUMA_STORE_SQLITE_PATH": "/data/x.db", "KUMA_GENERAL_WORK_DIR": "/w"}))
	require.NoError(t, err)
	require.Equal(t, "/data/x.db", c.SQLitePath())
}

// The PostgreSQL store's settings: the reference system's defaults, the
// file's keys, and the environment over them.
func TestPostgresSettings(t *testing.T) {
	c, err := Load("", env(map[string]string{"KUMA_STORE_TYPE": "postgres"}))
	require.NoError(t, err)
	require.Equal(t, StorePostgres, c.Store.Type)
	require.Equal(t, PostgresStore{Host: "127.0.0.1", Port: 15432, User: "kuma", Password: "kuma", DBName: "kuma",
		ConnectionTimeout: 5, MaxOpenConnections: 50,
		MinReconnectInterval: Duration(10 * time.Second), MaxReconnectInterval: Duration(time.Minute),
		TLS: PostgresTLS{Mode: PostgresTLSDisable}}, c.Store.Postgres)

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`store:
  type: postgres
  postgres:
    host: db.example
    port: 5432
    user: cp
    password: secret
    dbName: mesh
    connectionTimeout: 9
    maxOpenConnections: 20
    minReconnectInterval: 2s
    maxReconnectInterval: 30s
    tls:
      mode: verifyFull
      certPath: /c.pem
      keyPath: /k.pem
      caPath: /ca.pem
`), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, PostgresStore{Host: "db.example", Port: 5432, User: "cp", Password: "secret", DBName: "mesh",
		ConnectionTimeout: 9, MaxOpenConnections: 20,
		MinReconnectInterval: Duration(2 * time.Second), MaxReconnectInterval: Duration(30 * time.Second),
		TLS: PostgresTLS{Mode: PostgresTLSVerifyFull, CertPath: "/c.pem", KeyPath: "/k.pem", CAPath: "/ca.pem"}}, c.Store.Postgres)

	c, err = Load(f, env(map[string]string{
		"KUMA_STORE_POSTGRES_HOST": "10.0.0.9", "KUMA_STORE_POSTGRES_PORT": "6543", "KUMA_STORE_POSTGRES_USER": "u",
		"KUMA_STORE_POSTGRES_PASSWORD": "p", "KUMA_STORE_POSTGRES_DB_NAME": "d", "KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT": "3",
		"KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS": "7", "KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL": "1s",
		"KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL": "5s", "KUMA_STORE_POSTGRES_TLS_MODE": "verifyCa",
		"KUMA_STORE_POSTGRES_TLS_CERT_PATH": "/c2.pem", "KUMA_STORE_POSTGRES_TLS_KEY_PATH": "/k2.pem", "KUMA_STORE_POSTGRES_TLS_CA_PATH": "/ca2.pem",
	}))
	require.NoError(t, err)
	require.Equal(t, PostgresStore{Host: "10.0.0.9", Port: 6543, User: "u", Password: "p", DBName: "d",
		ConnectionTimeout: 3, MaxOpenConnections: 7,
		MinReconnectInterval: Duration(time.Second), MaxReconnectInterval: Duration(5 * time.Second),
		TLS: PostgresTLS{Mode: PostgresTLSVerifyCA, CertPath: "/c2.pem", KeyPath: "/k2.pem", CAPath: "/ca2.pem"}}, c.Store.Postgres)

	// Other stores do not check the PostgreSQL settings.
	_, err = Load("", env(map[string]string{"KUMA_STORE_POSTGRES_TLS_MODE": "bogus"}))
	require.NoError(t, err)
}

func TestBadSettingsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{name: "port not a number", env: map[string]string{"KUMA_API_SERVER_HTTP_PORT": "http"}, want: `KUMA_API_SERVER_HTTP_PORT: must be a port number from 0 to 65535, got "http"`},
		{name: "port too large", env: map[string]string{"KUMA_DP_SERVER_PORT": "70000"}, want: "KUMA_DP_SERVER_PORT"},
		{name: "unknown store", env: map[string]string{"KUMA_STORE_TYPE": "etcd"}, want: `store.type (KUMA_STORE_TYPE): must be sqlite, postgres, memory or kubernetes, got "etcd"`},
		{name: "unknown environment", env: map[string]string{"KUMA_ENVIRONMENT": "k8s"}, want: `environment (KUMA_ENVIRONMENT): must be universal or kubernetes, got "k8s"`},
		{name: "Kubernetes on SQLite", env: map[string]string{"KUMA_ENVIRONMENT": "kubernetes", "KUMA_STORE_TYPE": "sqlite"},
			want: `store.type (KUMA_STORE_TYPE): must be kubernetes when environment (KUMA_ENVIRONMENT) is kubernetes (resources are custom resources), got "sqlite"`},
		{name: "Kubernetes store in Universal mode", file: "store:\n  type: kubernetes\n",
			want: `store.type (KUMA_STORE_TYPE) kubernetes needs environment (KUMA_ENVIRONMENT) kubernetes, got "universal"`},
		{name: "bad system namespace", env: map[string]string{"KUMA_ENVIRONMENT": "kubernetes", "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE": "Kuma_System"},
			want: `store.kubernetes.systemNamespace (KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE): must be a Kubernetes namespace name`},
		{name: "bad duration", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT": "soon"}, want: "KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT"},
		{name: "unknown file field", file: "apiServer:\n  htp: {}\n", want: "apiServer.htp: unknown field"},
		{name: "file type error", file: "dpServer:\n  port: high\n", want: "dpServer.port: must be a non-negative integer"},
		{name: "file YAML syntax", file: "a: [\n", want: "invalid YAML"},
		{name: "localhost is admin not a boolean", env: map[string]string{"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN": "sometimes"},
			want: `KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN: must be true or false, got "sometimes"`},
		{name: "localhost is admin not a boolean in the file", file: "apiServer:\n  authn:\n    localhostIsAdmin: yes please\n",
			want: "apiServer.authn.localhostIsAdmin: must be a boolean"},
		{name: "unknown dp proxy authn", env: map[string]string{"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "token"},
			want: `dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE): must be dpToken, serviceAccountToken or none, got "token"`},
		{name: "empty dp proxy authn in the file", file: "dpServer:\n  authn:\n    dpProxy:\n      type: \"\"\n",
			want: `dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE): must be dpToken, serviceAccountToken or none, got ""`},
		{name: "ServiceAccount tokens in Universal mode", env: map[string]string{"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE": "serviceAccountToken"},
			want: `dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE) serviceAccountToken needs environment (KUMA_ENVIRONMENT) kubernetes, got "universal"`},
		{name: "allow untagged tokens not a boolean", env: map[string]string{"KUMA_DP_SERVER_AUTHN_DP_PROXY_DP_TOKEN_ALLOW_UNTAGGED_TOKENS": "maybe"},
			want: `KUMA_DP_SERVER_AUTHN_DP_PROXY_DP_TOKEN_ALLOW_UNTAGGED_TOKENS: must be true or false, got "maybe"`},
		{name: "allow untagged tokens not a boolean in the file", file: "dpServer:\n  authn:\n    dpProxy:\n      dpToken:\n        allowUntaggedTokens: 1\n",
			want: "dpServer.authn.dpProxy.dpToken.allowUntaggedTokens: must be a boolean"},
		{name: "unknown authn field", file: "apiServer:\n  authn:\n    type: tokens\n", want: "apiServer.authn.type: unknown field"},
		{name: "max fetch timeout below the default", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_FETCH_TIMEOUT": "10s"},
			want: "monitoringAssignmentServer.maxFetchTimeout (KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_FETCH_TIMEOUT): must be at least the default fetch timeout 30s, got 10s"},
		{name: "held long polls not a number", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS": "many"},
			want: `KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS: must be a positive integer, got "many"`},
		{name: "held long polls zero", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS": "0"},
			want: "monitoringAssignmentServer.maxHeldLongPolls (KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS): must be positive"},
		{name: "negative causes in the file", file: "apiServer:\n  maxErrorCauses: -1\n", want: "apiServer.maxErrorCauses (KUMA_API_SERVER_MAX_ERROR_CAUSES): must be positive"},
		{name: "zero read timeout", env: map[string]string{"KUMA_SERVER_LIMITS_HTTP_READ_TIMEOUT": "0s"},
			want: "serverLimits.http.readTimeout (KUMA_SERVER_LIMITS_HTTP_READ_TIMEOUT): must be positive"},
		{name: "bad idle timeout", env: map[string]string{"KUMA_SERVER_LIMITS_HTTP_IDLE_TIMEOUT": "later"}, want: "KUMA_SERVER_LIMITS_HTTP_IDLE_TIMEOUT: must be a duration"},
		{name: "zero streams", env: map[string]string{"KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS": "0"},
			want: "serverLimits.grpc.maxConcurrentStreams (KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS): must be positive"},
		{name: "streams too many", env: map[string]string{"KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS": "99999999999"},
			want: "KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS: must be a positive integer"},
		{name: "keepalive min time above kuma-dp's pings", file: "serverLimits:\n  grpc:\n    keepaliveMinTime: 1m\n",
			want: "serverLimits.grpc.keepaliveMinTime (KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_MIN_TIME): must be at most 30s, as often as kuma-dp pings, got 1m0s"},
		{name: "unknown limits field", file: "serverLimits:\n  http:\n    writeTimeout: 1m\n", want: "serverLimits.http.writeTimeout: unknown field"},
		{name: "HTTPS enabled not a boolean", env: map[string]string{"KUMA_API_SERVER_HTTPS_ENABLED": "on-ish"},
			want: `KUMA_API_SERVER_HTTPS_ENABLED: must be true or false, got "on-ish"`},
		{name: "HTTPS port too large in the file", file: "apiServer:\n  https:\n    port: 70000\n",
			want: "apiServer.https.port (KUMA_API_SERVER_HTTPS_PORT): must be a port number from 0 to 65535, got 70000"},
		{name: "HTTPS key without certificate", env: map[string]string{"KUMA_API_SERVER_HTTPS_TLS_KEY_FILE": "k.pem"},
			want: "apiServer.https.tlsCertFile and .tlsKeyFile (KUMA_API_SERVER_HTTPS_TLS_CERT_FILE, _KEY_FILE): set both or neither"},
		{name: "client certificates without HTTPS", env: map[string]string{"KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR": "/admins", "KUMA_API_SERVER_HTTPS_ENABLED": "false"},
			want: "apiServer.auth.clientCertsDir (KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR): client certificates are presented over HTTPS only"},
		{name: "unknown MADS authn", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE": "password"},
			want: `monitoringAssignmentServer.authn.type (KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE): must be none or token, got "password"`},
		{name: "MADS token in clear on every interface", file: "monitoringAssignmentServer:\n  authn:\n    type: token\n",
			want: "monitoringAssignmentServer.authn.type (KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE) token needs TLS, or tokens would cross the network in clear"},
		{name: "MADS token in clear on a LAN address", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE": "token", "KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE": "192.0.2.1"},
			want: `a loopback monitoringAssignmentServer.interface (KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE), got "192.0.2.1"`},
		{name: "MADS client CA without TLS", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE": "/ca.pem"},
			want: "monitoringAssignmentServer.tlsClientCAFile (KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE): client certificates need TLS"},
		{name: "unknown MADS authn field", file: "monitoringAssignmentServer:\n  authn:\n    token: x\n", want: "monitoringAssignmentServer.authn.token: unknown field"},
		{name: "unknown postgres TLS mode", env: map[string]string{"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_TLS_MODE": "require"},
			want: `store.postgres.tls.mode (KUMA_STORE_POSTGRES_TLS_MODE): must be disable, verifyNone, verifyCa or verifyFull, got "require"`},
		{name: "postgres port not a number", env: map[string]string{"KUMA_STORE_POSTGRES_PORT": "pg"}, want: `KUMA_STORE_POSTGRES_PORT: must be a port number from 0 to 65535, got "pg"`},
		{name: "postgres port zero in the file", file: "store:\n  type: postgres\n  postgres:\n    port: 0\n",
			want: "store.postgres.port (KUMA_STORE_POSTGRES_PORT): must be a port number from 1 to 65535, got 0"},
		{name: "postgres reconnect intervals reversed", env: map[string]string{"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL": "1s"},
			want: "store.postgres.maxReconnectInterval (KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL): must not be less than minReconnectInterval (10s), got 1s"},
		{name: "postgres connection timeout not a number", env: map[string]string{"KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT": "5s"},
			want: `KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT: must be a positive integer, got "5s"`},
		{name: "postgres verifyCa without a CA", env: map[string]string{"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_TLS_MODE": "verifyCa"},
			want: "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH): needed by tls.mode verifyCa"},
		{name: "postgres client key without certificate", env: map[string]string{"KUMA_STORE_TYPE": "postgres", "KUMA_STORE_POSTGRES_TLS_KEY_PATH": "k.pem"},
			want: "store.postgres.tls.certPath (KUMA_STORE_POSTGRES_TLS_CERT_PATH) and store.postgres.tls.keyPath (KUMA_STORE_POSTGRES_TLS_KEY_PATH): set both or neither"},
		{name: "unknown postgres field", file: "store:\n  postgres:\n    database: kuma\n", want: "store.postgres.database: unknown field"},
		{name: "MADS TLS cert without key", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE": "c.pem"}, want: "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE, _KEY_FILE): set both or neither"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "cp.yaml")
				require.NoError(t, os.WriteFile(path, []byte(tc.file), 0o600))
			}
			_, err := Load(path, env(tc.env))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDataplaneCleanupAge(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, Duration(72*time.Hour), c.Runtime.Universal.DataplaneCleanupAge, "the reference system's default")

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  universal:\n    dataplaneCleanupAge: 1h\n"), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, Duration(time.Hour), c.Runtime.Universal.DataplaneCleanupAge)
	c, err = Load(f, env(map[string]string{"KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "0s"}))
	require.NoError(t, err)
	require.Zero(t, c.Runtime.Universal.DataplaneCleanupAge, "0 turns the cleanup off")
	c, err = Load("", env(map[string]string{"KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "3d"}))
	require.NoError(t, err)
	require.Equal(t, Duration(72*time.Hour), c.Runtime.Universal.DataplaneCleanupAge)

	_, err = Load("", env(map[string]string{"KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "soon"}))
	require.ErrorContains(t, err, "KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE")
	_, err = Load("", env(map[string]string{"KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE": "-1h"}))
	require.ErrorContains(t, err, "runtime.universal.dataplaneCleanupAge")
	require.NoError(t, os.WriteFile(f, []byte("runtime:\n  universal:\n    dataplaneCleanupAge: 5\n"), 0o600))
	_, err = Load(f, env(nil))
	require.ErrorContains(t, err, "runtime.universal.dataplaneCleanupAge")
}
