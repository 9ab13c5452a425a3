// Package cpconfig loads the control plane's configuration: defaults, then
// an optional YAML file, then KUMA_* environment variables (the reference
// system's names), and validates the result naming the setting at fault.
package cpconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/strictjson"
)

// Store types.
const (
	StoreSQLite     = "sqlite"
	StoreMemory     = "memory"
	StoreKubernetes = "kubernetes"
	StorePostgres   = "postgres"
)

// Environments: where the control plane's resources come from and where
// its proxies run.
const (
	// EnvironmentUniversal: proxies present their Dataplanes, resources
	// are written through the API and kumactl.
	EnvironmentUniversal = "universal"
	// EnvironmentKubernetes: resources are Kubernetes custom resources
	// (written with kubectl), Pods become Dataplanes.
	EnvironmentKubernetes = "kubernetes"
)

// Config is the whole control-plane configuration.
type Config struct {
	// Environment is EnvironmentUniversal or EnvironmentKubernetes.
	Environment                string                     `json:"environment"`
	General                    General                    `json:"general"`
	APIServer                  APIServer                  `json:"apiServer"`
	DPServer                   DPServer                   `json:"dpServer"`
	MonitoringAssignmentServer MonitoringAssignmentServer `json:"monitoringAssignmentServer"`
	Diagnostics                Diagnostics                `json:"diagnostics"`
	Store                      Store                      `json:"store"`
	Defaults                   Defaults                   `json:"defaults"`
	ServerLimits               ServerLimits               `json:"serverLimits"`
	Runtime                    Runtime                    `json:"runtime"`
}

// Runtime configures the control plane's own housekeeping.
type Runtime struct {
	Universal  UniversalRuntime  `json:"universal"`
	Kubernetes KubernetesRuntime `json:"kubernetes"`
}

// UniversalRuntime configures housekeeping of Universal mode.
type UniversalRuntime struct {
	// DataplaneCleanupAge is how long a proxy must have been offline before
	// its Dataplane is deleted; 0 never deletes.
	DataplaneCleanupAge Duration `json:"dataplaneCleanupAge"`
}

// ServerLimits bound what one client can hold of the control plane's
// servers: HTTP for the API, diagnostics and MADS' HTTP side, gRPC for MADS'
// gRPC side and the dataplane server.
type ServerLimits struct {
	HTTP HTTPLimits `json:"http"`
	GRPC GRPCLimits `json:"grpc"`
}

// HTTPLimits of every HTTP server (see netserve.HTTPLimits).
type HTTPLimits struct {
	ReadHeaderTimeout Duration `json:"readHeaderTimeout"`
	ReadTimeout       Duration `json:"readTimeout"`
	IdleTimeout       Duration `json:"idleTimeout"`
	MaxHeaderBytes    int      `json:"maxHeaderBytes"`
}

// Limits converts to netserve's form.
func (h HTTPLimits) Limits() netserve.HTTPLimits {
	return netserve.HTTPLimits{
		ReadHeaderTimeout: time.Duration(h.ReadHeaderTimeout), ReadTimeout: time.Duration(h.ReadTimeout),
		IdleTimeout: time.Duration(h.IdleTimeout), MaxHeaderBytes: h.MaxHeaderBytes,
	}
}

// GRPCLimits of every gRPC server (see netserve.GRPCLimits).
type GRPCLimits struct {
	MaxConcurrentStreams uint32   `json:"maxConcurrentStreams"`
	KeepaliveTime        Duration `json:"keepaliveTime"`
	KeepaliveTimeout     Duration `json:"keepaliveTimeout"`
	KeepaliveMinTime     Duration `json:"keepaliveMinTime"`
}

// Limits converts to netserve's form.
func (g GRPCLimits) Limits() netserve.GRPCLimits {
	return netserve.GRPCLimits{
		MaxConcurrentStreams: g.MaxConcurrentStreams, KeepaliveTime: time.Duration(g.KeepaliveTime),
		KeepaliveTimeout: time.Duration(g.KeepaliveTimeout), KeepaliveMinTime: time.Duration(g.KeepaliveMinTime),
	}
}

// dpKeepaliveInterval is how often kuma-dp pings the dataplane server: the
// keepalive policy must allow it.
const dpKeepaliveInterval = 30 * time.Second

// General holds process-wide settings.
type General struct {
	// WorkDir holds the SQLite file and everything the control plane generates.
	WorkDir string `json:"workDir"`
}

// APIServer configures the REST API.
type APIServer struct {
	HTTP  Listener       `json:"http"`
	HTTPS APIServerHTTPS `json:"https"`
	Auth  APIServerAuth  `json:"auth"`
	Authn APIServerAuthn `json:"authn"`
	// MaxErrorCauses bounds the causes listed in a 400 answer.
	MaxErrorCauses int `json:"maxErrorCauses"`
}

// APIServerHTTPS configures the REST API's HTTPS listener: the same API as
// the HTTP one, over TLS.
type APIServerHTTPS struct {
	Enabled   bool   `json:"enabled"`
	Interface string `json:"interface"`
	Port      uint32 `json:"port"`
	// TLSCertFile and TLSKeyFile replace the certificate the control plane
	// generates in its work directory (set both or neither).
	TLSCertFile string `json:"tlsCertFile"`
	TLSKeyFile  string `json:"tlsKeyFile"`
}

// Address renders host:port.
func (h APIServerHTTPS) Address() string { return joinHostPort(h.Interface, h.Port) }

// APIServerAuth configures client certificates of the REST API.
type APIServerAuth struct {
	// ClientCertsDir holds PEM certificates: an HTTPS client presenting a
	// certificate identical to one of them is an admin.
	ClientCertsDir string `json:"clientCertsDir"`
}

// APIServerAuthn configures how the REST API authenticates its clients.
type APIServerAuthn struct {
	// LocalhostIsAdmin makes a client on a loopback address without a token
	// an admin.
	LocalhostIsAdmin bool `json:"localhostIsAdmin"`
}

// Listener is an interface and port to listen on (port 0 picks a free one).
type Listener struct {
	Interface string `json:"interface"`
	Port      uint32 `json:"port"`
}

// Address renders host:port.
func (l Listener) Address() string {
	return joinHostPort(l.Interface, l.Port)
}

func joinHostPort(host string, port uint32) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// DPServer configures the dataplane config server.
type DPServer struct {
	Interface string `json:"interface"`
	Port      uint32 `json:"port"`
	// TLSCertFile and TLSKeyFile replace the certificate the control plane
	// generates in its work directory.
	TLSCertFile string        `json:"tlsCertFile"`
	TLSKeyFile  string        `json:"tlsKeyFile"`
	Authn       DPServerAuthn `json:"authn"`
}

// Address renders host:port.
func (d DPServer) Address() string { return joinHostPort(d.Interface, d.Port) }

// DPServerAuthn configures how the dataplane server authenticates proxies.
type DPServerAuthn struct {
	DPProxy DPProxyAuthn `json:"dpProxy"`
}

// DPProxyAuthn selects how a proxy proves which dataplane it is.
type DPProxyAuthn struct {
	// Type is DPProxyAuthnDPToken (Universal's default),
	// DPProxyAuthnServiceAccountToken (Kubernetes' default) or
	// DPProxyAuthnNone.
	Type    string       `json:"type"`
	DPToken DPTokenAuthn `json:"dpToken"`
}

// DPTokenAuthn configures dataplane tokens.
type DPTokenAuthn struct {
	// AllowUntaggedTokens accepts tokens that do not constrain
	// kuma.io/service (issued without --tag) for a Dataplane of any service,
	// as the reference system does. Off by default: such tokens are refused
	// (docs/2026-12-06-dataplane-token-tags.md).
	AllowUntaggedTokens bool `json:"allowUntaggedTokens"`
}

// Types of dpServer.authn.dpProxy.type.
const (
	// DPProxyAuthnDPToken: a proxy presents a dataplane token issued for its
	// own Dataplane and mesh.
	DPProxyAuthnDPToken = "dpToken"
	// DPProxyAuthnServiceAccountToken (Kubernetes mode only): a proxy
	// presents its Pod's ServiceAccount token; the API server reviews it and
	// it must be of the ServiceAccount of the Pod that controls the
	// Dataplane (docs/2026-12-06-kubernetes-dataplane-authentication.md).
	DPProxyAuthnServiceAccountToken = "serviceAccountToken"
	// DPProxyAuthnNone: proxies are not authenticated.
	DPProxyAuthnNone = "none"
)

// MonitoringAssignmentServer configures MADS.
type MonitoringAssignmentServer struct {
	Interface           string   `json:"interface"`
	Port                uint32   `json:"port"`
	DefaultFetchTimeout Duration `json:"defaultFetchTimeout"`
	// MaxFetchTimeout caps the fetch-timeout a long poll asks for.
	MaxFetchTimeout Duration `json:"maxFetchTimeout"`
	// MaxHeldLongPolls bounds the long polls held at once (503 beyond).
	MaxHeldLongPolls int `json:"maxHeldLongPolls"`
	// TLSCertFile and TLSKeyFile make the server speak https and grpcs only.
	TLSCertFile string `json:"tlsCertFile"`
	TLSKeyFile  string `json:"tlsKeyFile"`
	// TLSClientCAFile makes clients present a certificate signed by one of
	// its CAs (needs TLS).
	TLSClientCAFile string    `json:"tlsClientCAFile"`
	Authn           MADSAuthn `json:"authn"`
}

// MADSAuthn selects how MADS authenticates its clients.
type MADSAuthn struct {
	// Type is MADSAuthnNone or MADSAuthnToken.
	Type string `json:"type"`
}

// Types of monitoringAssignmentServer.authn.type.
const (
	// MADSAuthnNone: any client may read the assignments.
	MADSAuthnNone = "none"
	// MADSAuthnToken: every request carries a user token of this control
	// plane (Authorization: Bearer <token>).
	MADSAuthnToken = "token"
)

// Address renders host:port.
func (m MonitoringAssignmentServer) Address() string { return joinHostPort(m.Interface, m.Port) }

// Diagnostics configures the health and metrics server.
type Diagnostics struct {
	Interface  string `json:"interface"`
	ServerPort uint32 `json:"serverPort"`
	// DebugEndpoints serves Go's profiler (/debug/pprof/) on the
	// diagnostics server. Off by default: profiles show the process's
	// internals and cost CPU while taken.
	DebugEndpoints bool `json:"debugEndpoints"`
}

// Address renders host:port.
func (d Diagnostics) Address() string { return joinHostPort(d.Interface, d.ServerPort) }

// Store selects and configures the resource store.
type Store struct {
	// Type is sqlite, postgres or memory (Universal), kubernetes
	// (Kubernetes); it follows the environment unless set.
	Type       string          `json:"type"`
	SQLite     SQLiteStore     `json:"sqlite"`
	Postgres   PostgresStore   `json:"postgres"`
	Kubernetes KubernetesStore `json:"kubernetes"`
}

// PostgreSQL TLS modes (store.postgres.tls.mode).
const (
	PostgresTLSDisable    = "disable"
	PostgresTLSVerifyNone = "verifyNone"
	PostgresTLSVerifyCA   = "verifyCa"
	PostgresTLSVerifyFull = "verifyFull"
)

// PostgresStore configures the PostgreSQL store (the reference system's
// store.postgres keys and defaults).
type PostgresStore struct {
	Host     string `json:"host"`
	Port     uint32 `json:"port"`
	User     string `json:"user"`
	Password string `json:"password"`
	DBName   string `json:"dbName"`
	// ConnectionTimeout bounds connecting, in seconds.
	ConnectionTimeout int `json:"connectionTimeout"`
	// MaxOpenConnections bounds the connection pool (the listen and leader
	// connections come on top).
	MaxOpenConnections int `json:"maxOpenConnections"`
	// MinReconnectInterval and MaxReconnectInterval bound the waits between
	// attempts to re-make the change feed's lost listen connection (the
	// first attempt is immediate).
	MinReconnectInterval Duration    `json:"minReconnectInterval"`
	MaxReconnectInterval Duration    `json:"maxReconnectInterval"`
	TLS                  PostgresTLS `json:"tls"`
}

// PostgresTLS configures TLS to PostgreSQL.
type PostgresTLS struct {
	// Mode is disable, verifyNone (encrypted, the server not verified),
	// verifyCa (its chain verified with CAPath, not its name) or
	// verifyFull (chain and host name).
	Mode string `json:"mode"`
	// CertPath and KeyPath are a client certificate (optional, both or neither).
	CertPath string `json:"certPath"`
	KeyPath  string `json:"keyPath"`
	// CAPath is the CA bundle that verifies the server (verifyCa,
	// verifyFull; default: the system's roots).
	CAPath string `json:"caPath"`
}

// KubernetesStore configures the store on the Kubernetes API. The API
// server is the one of KUBECONFIG (or ~/.kube/config), or the cluster's
// own when kuma-cp runs in a Pod.
type KubernetesStore struct {
	// SystemNamespace is the control plane's namespace: its Secrets, and
	// the Dataplanes named without a namespace.
	SystemNamespace string `json:"systemNamespace"`
}

// SQLiteStore configures the embedded store.
type SQLiteStore struct {
	// Path of the database file; empty means <workDir>/kuma.db.
	Path string `json:"path"`
	// Synchronous is SQLite's synchronous pragma: FULL (default) or NORMAL.
	Synchronous string `json:"synchronous"`
}

// Defaults configures what the control plane creates by itself.
type Defaults struct {
	SkipMeshCreation bool `json:"skipMeshCreation"`
}

// Duration is a time.Duration written as a string ("30s").
type Duration time.Duration

// UnmarshalJSON reads "30s", "2m", "1d".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("must be a duration string such as 30s")
	}
	v, err := resource.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("must be a duration such as 30s: %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ListenOn makes every server of the control plane listen on host, each on
// a port of its own choosing (port 0): for a control plane embedded in a
// test or a benchmark, whose addresses its Addrs tell.
func (c *Config) ListenOn(host string) {
	c.APIServer.HTTP = Listener{Interface: host}
	c.APIServer.HTTPS.Interface, c.APIServer.HTTPS.Port = host, 0
	c.DPServer.Interface, c.DPServer.Port = host, 0
	c.MonitoringAssignmentServer.Interface, c.MonitoringAssignmentServer.Port = host, 0
	c.Diagnostics.Interface, c.Diagnostics.ServerPort = host, 0
	c.Runtime.Kubernetes.AdmissionServer.Address, c.Runtime.Kubernetes.AdmissionServer.Port = host, 0
}

// Default returns the built-in configuration.
func Default() Config {
	h, g := netserve.DefaultHTTPLimits, netserve.DefaultGRPCLimits
	return Config{
		General: General{WorkDir: "kuma-data"},
		APIServer: APIServer{
			HTTP:           Listener{Interface: "0.0.0.0", Port: 5681},
			HTTPS:          APIServerHTTPS{Enabled: true, Interface: "0.0.0.0", Port: 5682},
			Authn:          APIServerAuthn{LocalhostIsAdmin: true},
			MaxErrorCauses: apiserver.DefaultMaxErrorCauses,
		},
		DPServer: DPServer{
			Interface: "0.0.0.0", Port: 5678,
			Authn: DPServerAuthn{DPProxy: DPProxyAuthn{Type: DPProxyAuthnDPToken}},
		},
		MonitoringAssignmentServer: MonitoringAssignmentServer{
			Interface: "0.0.0.0", Port: 5676, DefaultFetchTimeout: Duration(mads.DefaultFetchTimeout),
			MaxFetchTimeout: Duration(mads.DefaultMaxFetchTimeout), MaxHeldLongPolls: mads.DefaultMaxHeldLongPolls,
			Authn: MADSAuthn{Type: MADSAuthnNone},
		},
		Diagnostics: Diagnostics{Interface: "0.0.0.0", ServerPort: 5680},
		Environment: EnvironmentUniversal,
		Store: Store{Type: StoreSQLite, SQLite: SQLiteStore{Synchronous: "FULL"}, Kubernetes: KubernetesStore{SystemNamespace: "kuma-system"},
			Postgres: PostgresStore{Host: "127.0.0.1", Port: 15432, User: "kuma", Password: "kuma", DBName: "kuma",
				ConnectionTimeout: 5, MaxOpenConnections: 50,
				MinReconnectInterval: Duration(10 * time.Second), MaxReconnectInterval: Duration(60 * time.Second),
				TLS: PostgresTLS{Mode: PostgresTLSDisable}}},
		Runtime: Runtime{
			Universal: UniversalRuntime{DataplaneCleanupAge: Duration(72 * time.Hour)},
			Kubernetes: KubernetesRuntime{
				AdmissionServer: AdmissionServer{Address: "0.0.0.0", Port: 5443},
				ClientConfig:    KubernetesClientConfig{QPS: 100, BurstQPS: 100},
				Injector:        DefaultInjector(),
			},
		},
		ServerLimits: ServerLimits{
			HTTP: HTTPLimits{
				ReadHeaderTimeout: Duration(h.ReadHeaderTimeout), ReadTimeout: Duration(h.ReadTimeout),
				IdleTimeout: Duration(h.IdleTimeout), MaxHeaderBytes: h.MaxHeaderBytes,
			},
			GRPC: GRPCLimits{
				MaxConcurrentStreams: g.MaxConcurrentStreams, KeepaliveTime: Duration(g.KeepaliveTime),
				KeepaliveTimeout: Duration(g.KeepaliveTimeout), KeepaliveMinTime: Duration(g.KeepaliveMinTime),
			},
		},
	}
}

// SQLitePath is where the SQLite file lives.
func (c Config) SQLitePath() string {
	if c.Store.SQLite.Path != "" {
		return c.Store.SQLite.Path
	}
	return filepath.Join(c.General.WorkDir, "kuma.db")
}

// envVar binds one environment variable to one setting.
type envVar struct {
	name string
	set  func(c *Config, v string) error
}

func str(f func(c *Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *f(c) = v; return nil }
}

func boolean(f func(c *Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", v)
		}
		*f(c) = b
		return nil
	}
}

func duration(f func(c *Config) *Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := resource.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("must be a duration such as 30s, got %q", v)
		}
		*f(c) = Duration(d)
		return nil
	}
}

func port(f func(c *Config) *uint32) func(*Config, string) error {
	return func(c *Config, v string) error {
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil || p > 65535 {
			return fmt.Errorf("must be a port number from 0 to 65535, got %q", v)
		}
		*f(c) = uint32(p)
		return nil
	}
}

func userID(f func(c *Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("must be a user id, got %q", v)
		}
		*f(c) = n
		return nil
	}
}

func integer[T int | uint32](f func(c *Config) *T) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return fmt.Errorf("must be a positive integer, got %q", v)
		}
		*f(c) = T(n)
		return nil
	}
}

var envVars = []envVar{
	{"KUMA_ENVIRONMENT", str(func(c *Config) *string { return &c.Environment })},
	{"KUMA_GENERAL_WORK_DIR", str(func(c *Config) *string { return &c.General.WorkDir })},
	{"KUMA_API_SERVER_HTTP_PORT", port(func(c *Config) *uint32 { return &c.APIServer.HTTP.Port })},
	{"KUMA_API_SERVER_HTTP_INTERFACE", str(func(c *Config) *string { return &c.APIServer.HTTP.Interface })},
	{"KUMA_API_SERVER_HTTPS_ENABLED", boolean(func(c *Config) *bool { return &c.APIServer.HTTPS.Enabled })},
	{"KUMA_API_SERVER_HTTPS_INTERFACE", str(func(c *Config) *string { return &c.APIServer.HTTPS.Interface })},
	{"KUMA_API_SERVER_HTTPS_PORT", port(func(c *Config) *uint32 { return &c.APIServer.HTTPS.Port })},
	{"KUMA_API_SERVER_HTTPS_TLS_CERT_FILE", str(func(c *Config) *string { return &c.APIServer.HTTPS.TLSCertFile })},
	{"KUMA_API_SERVER_HTTPS_TLS_KEY_FILE", str(func(c *Config) *string { return &c.APIServer.HTTPS.TLSKeyFile })},
	{"KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR", str(func(c *Config) *string { return &c.APIServer.Auth.ClientCertsDir })},
	{"KUMA_API_SERVER_AUTHN_LOCALHOST_IS_ADMIN", boolean(func(c *Config) *bool { return &c.APIServer.Authn.LocalhostIsAdmin })},
	{"KUMA_DP_SERVER_PORT", port(func(c *Config) *uint32 { return &c.DPServer.Port })},
	{"KUMA_DP_SERVER_INTERFACE", str(func(c *Config) *string { return &c.DPServer.Interface })},
	{"KUMA_DP_SERVER_TLS_CERT_FILE", str(func(c *Config) *string { return &c.DPServer.TLSCertFile })},
	{"KUMA_DP_SERVER_TLS_KEY_FILE", str(func(c *Config) *string { return &c.DPServer.TLSKeyFile })},
	{"KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE", str(func(c *Config) *string { return &c.DPServer.Authn.DPProxy.Type })},
	{"KUMA_DP_SERVER_AUTHN_DP_PROXY_DP_TOKEN_ALLOW_UNTAGGED_TOKENS", boolean(func(c *Config) *bool { return &c.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_PORT", port(func(c *Config) *uint32 { return &c.MonitoringAssignmentServer.Port })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE", str(func(c *Config) *string { return &c.MonitoringAssignmentServer.Interface })},
	{"KUMA_API_SERVER_MAX_ERROR_CAUSES", integer(func(c *Config) *int { return &c.APIServer.MaxErrorCauses })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT", duration(func(c *Config) *Duration { return &c.MonitoringAssignmentServer.DefaultFetchTimeout })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_FETCH_TIMEOUT", duration(func(c *Config) *Duration { return &c.MonitoringAssignmentServer.MaxFetchTimeout })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS", integer(func(c *Config) *int { return &c.MonitoringAssignmentServer.MaxHeldLongPolls })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE", str(func(c *Config) *string { return &c.MonitoringAssignmentServer.TLSCertFile })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_KEY_FILE", str(func(c *Config) *string { return &c.MonitoringAssignmentServer.TLSKeyFile })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE", str(func(c *Config) *string { return &c.MonitoringAssignmentServer.TLSClientCAFile })},
	{"KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE", str(func(c *Config) *string { return &c.MonitoringAssignmentServer.Authn.Type })},
	{"KUMA_DIAGNOSTICS_SERVER_PORT", port(func(c *Config) *uint32 { return &c.Diagnostics.ServerPort })},
	{"KUMA_DIAGNOSTICS_SERVER_INTERFACE", str(func(c *Config) *string { return &c.Diagnostics.Interface })},
	{"KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS", boolean(func(c *Config) *bool { return &c.Diagnostics.DebugEndpoints })},
	{"KUMA_STORE_TYPE", str(func(c *Config) *string { return &c.Store.Type })},
	{"KUMA_STORE_SQLITE_PATH", str(func(c *Config) *string { return &c.Store.SQLite.Path })},
	{"KUMA_STORE_SQLITE_SYNCHRONOUS", str(func(c *Config) *string { return &c.Store.SQLite.Synchronous })},
	{"KUMA_STORE_POSTGRES_HOST", str(func(c *Config) *string { return &c.Store.Postgres.Host })},
	{"KUMA_STORE_POSTGRES_PORT", port(func(c *Config) *uint32 { return &c.Store.Postgres.Port })},
	{"KUMA_STORE_POSTGRES_USER", str(func(c *Config) *string { return &c.Store.Postgres.User })},
	{"KUMA_STORE_POSTGRES_PASSWORD", str(func(c *Config) *string { return &c.Store.Postgres.Password })},
	{"KUMA_STORE_POSTGRES_DB_NAME", str(func(c *Config) *string { return &c.Store.Postgres.DBName })},
	{"KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT", integer(func(c *Config) *int { return &c.Store.Postgres.ConnectionTimeout })},
	{"KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS", integer(func(c *Config) *int { return &c.Store.Postgres.MaxOpenConnections })},
	{"KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL", duration(func(c *Config) *Duration { return &c.Store.Postgres.MinReconnectInterval })},
	{"KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL", duration(func(c *Config) *Duration { return &c.Store.Postgres.MaxReconnectInterval })},
	{"KUMA_STORE_POSTGRES_TLS_MODE", str(func(c *Config) *string { return &c.Store.Postgres.TLS.Mode })},
	{"KUMA_STORE_POSTGRES_TLS_CERT_PATH", str(func(c *Config) *string { return &c.Store.Postgres.TLS.CertPath })},
	{"KUMA_STORE_POSTGRES_TLS_KEY_PATH", str(func(c *Config) *string { return &c.Store.Postgres.TLS.KeyPath })},
	{"KUMA_STORE_POSTGRES_TLS_CA_PATH", str(func(c *Config) *string { return &c.Store.Postgres.TLS.CAPath })},
	{"KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE", str(func(c *Config) *string { return &c.Store.Kubernetes.SystemNamespace })},
	{"KUMA_DEFAULTS_SKIP_MESH_CREATION", boolean(func(c *Config) *bool { return &c.Defaults.SkipMeshCreation })},
	{"KUMA_SERVER_LIMITS_HTTP_READ_HEADER_TIMEOUT", duration(func(c *Config) *Duration { return &c.ServerLimits.HTTP.ReadHeaderTimeout })},
	{"KUMA_SERVER_LIMITS_HTTP_READ_TIMEOUT", duration(func(c *Config) *Duration { return &c.ServerLimits.HTTP.ReadTimeout })},
	{"KUMA_SERVER_LIMITS_HTTP_IDLE_TIMEOUT", duration(func(c *Config) *Duration { return &c.ServerLimits.HTTP.IdleTimeout })},
	{"KUMA_SERVER_LIMITS_HTTP_MAX_HEADER_BYTES", integer(func(c *Config) *int { return &c.ServerLimits.HTTP.MaxHeaderBytes })},
	{"KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS", integer(func(c *Config) *uint32 { return &c.ServerLimits.GRPC.MaxConcurrentStreams })},
	{"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIME", duration(func(c *Config) *Duration { return &c.ServerLimits.GRPC.KeepaliveTime })},
	{"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIMEOUT", duration(func(c *Config) *Duration { return &c.ServerLimits.GRPC.KeepaliveTimeout })},
	{"KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_MIN_TIME", duration(func(c *Config) *Duration { return &c.ServerLimits.GRPC.KeepaliveMinTime })},
	{"KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE", duration(func(c *Config) *Duration { return &c.Runtime.Universal.DataplaneCleanupAge })},
	{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS", str(func(c *Config) *string { return &c.Runtime.Kubernetes.AdmissionServer.Address })},
	{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT", port(func(c *Config) *uint32 { return &c.Runtime.Kubernetes.AdmissionServer.Port })},
	{"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR", str(func(c *Config) *string { return &c.Runtime.Kubernetes.AdmissionServer.CertDir })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.SidecarContainer.Image })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID", userID(func(c *Config) *int64 { return &c.Runtime.Kubernetes.Injector.SidecarContainer.UID })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_CPU", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.SidecarContainer.Resources.Requests.CPU })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_MEMORY", str(func(c *Config) *string {
		return &c.Runtime.Kubernetes.Injector.SidecarContainer.Resources.Requests.Memory
	})},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_CPU", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.SidecarContainer.Resources.Limits.CPU })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_MEMORY", str(func(c *Config) *string {
		return &c.Runtime.Kubernetes.Injector.SidecarContainer.Resources.Limits.Memory
	})},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_INIT_CONTAINER_IMAGE", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.InitContainer.Image })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.ControlPlaneAddress })},
	{"KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE", str(func(c *Config) *string { return &c.Runtime.Kubernetes.Injector.CACertFile })},
	{"KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_QPS", integer(func(c *Config) *int { return &c.Runtime.Kubernetes.ClientConfig.QPS })},
	{"KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_BURST_QPS", integer(func(c *Config) *int { return &c.Runtime.Kubernetes.ClientConfig.BurstQPS })},
}

// EnvNames lists every environment variable the configuration reads.
func EnvNames() []string {
	out := make([]string, len(envVars))
	for i, e := range envVars {
		out[i] = e.name
	}
	return out
}

// Load builds the configuration from the defaults, the YAML file (if path is
// not empty) and the environment (lookup is os.LookupEnv in production).
func Load(path string, lookup func(string) (string, bool)) (Config, error) {
	c := Default()
	// Unless set, these follow the environment (an explicitly empty
	// dpServer.authn.dpProxy.type is an error, not the default).
	c.Store.Type = ""
	c.DPServer.Authn.DPProxy.Type = unset
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config file: %w", err)
		}
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			return c, fmt.Errorf("config file %s: invalid YAML: %w", path, err)
		}
		if err := strictjson.Decode(js, &c); err != nil {
			return c, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, e := range envVars {
		v, ok := lookup(e.name)
		if !ok {
			continue
		}
		if err := e.set(&c, v); err != nil {
			return c, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if c.Store.Type == "" {
		c.Store.Type = StoreSQLite
		if c.Environment == EnvironmentKubernetes {
			c.Store.Type = StoreKubernetes
		}
	}
	if c.DPServer.Authn.DPProxy.Type == unset {
		c.DPServer.Authn.DPProxy.Type = DPProxyAuthnDPToken
		if c.Environment == EnvironmentKubernetes {
			c.DPServer.Authn.DPProxy.Type = DPProxyAuthnServiceAccountToken
		}
	}
	return c, c.Validate()
}

// unset marks a setting that neither the file nor the environment set.
const unset = "\x00unset"

// Kubernetes tells whether the control plane runs in Kubernetes mode.
func (c Config) Kubernetes() bool { return c.Environment == EnvironmentKubernetes }

func (m MonitoringAssignmentServer) validate() []string {
	var errs []string
	tlsOn := m.TLSCertFile != "" && m.TLSKeyFile != ""
	if (m.TLSCertFile == "") != (m.TLSKeyFile == "") {
		errs = append(errs, "monitoringAssignmentServer.tlsCertFile and .tlsKeyFile (KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE, _KEY_FILE): set both or neither")
	}
	if m.TLSClientCAFile != "" && m.TLSCertFile == "" {
		errs = append(errs, "monitoringAssignmentServer.tlsClientCAFile (KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CLIENT_CA_FILE): client certificates need TLS; "+
			"set monitoringAssignmentServer.tlsCertFile and .tlsKeyFile (KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE, _KEY_FILE)")
	}
	switch m.Authn.Type {
	case MADSAuthnNone:
	case MADSAuthnToken:
		if !tlsOn && !loopback.IsHost(m.Interface) {
			errs = append(errs, fmt.Sprintf("monitoringAssignmentServer.authn.type (KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE) %s needs TLS, "+
				"or tokens would cross the network in clear: set monitoringAssignmentServer.tlsCertFile and .tlsKeyFile "+
				"(KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE, _KEY_FILE), or a loopback monitoringAssignmentServer.interface "+
				"(KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE), got %q", MADSAuthnToken, m.Interface))
		}
	default:
		errs = append(errs, fmt.Sprintf("monitoringAssignmentServer.authn.type (KUMA_MONITORING_ASSIGNMENT_SERVER_AUTHN_TYPE): must be %s or %s, got %q",
			MADSAuthnNone, MADSAuthnToken, m.Authn.Type))
	}
	return errs
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Validate checks the settings, naming the one at fault.
func (c Config) Validate() error {
	var errs []string
	switch c.Environment {
	case EnvironmentUniversal, EnvironmentKubernetes:
	default:
		errs = append(errs, fmt.Sprintf("environment (KUMA_ENVIRONMENT): must be %s or %s, got %q", EnvironmentUniversal, EnvironmentKubernetes, c.Environment))
	}
	switch {
	case c.Store.Type != StoreSQLite && c.Store.Type != StoreMemory && c.Store.Type != StoreKubernetes && c.Store.Type != StorePostgres:
		errs = append(errs, fmt.Sprintf("store.type (KUMA_STORE_TYPE): must be %s, %s, %s or %s, got %q", StoreSQLite, StorePostgres, StoreMemory, StoreKubernetes, c.Store.Type))
	case c.Environment == EnvironmentKubernetes && c.Store.Type != StoreKubernetes:
		errs = append(errs, fmt.Sprintf("store.type (KUMA_STORE_TYPE): must be %s when environment (KUMA_ENVIRONMENT) is %s (resources are custom resources), got %q",
			StoreKubernetes, EnvironmentKubernetes, c.Store.Type))
	case c.Environment != EnvironmentKubernetes && c.Store.Type == StoreKubernetes:
		errs = append(errs, fmt.Sprintf("store.type (KUMA_STORE_TYPE) %s needs environment (KUMA_ENVIRONMENT) %s, got %q", StoreKubernetes, EnvironmentKubernetes, c.Environment))
	}
	if ns := c.Store.Kubernetes.SystemNamespace; len(ns) > 63 || !dnsLabel.MatchString(ns) {
		errs = append(errs, fmt.Sprintf("store.kubernetes.systemNamespace (KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE): must be a Kubernetes namespace name (at most 63 lower-case letters, digits and '-'), got %q", ns))
	}
	if c.Store.Type == StorePostgres {
		errs = append(errs, c.Store.Postgres.validate()...)
	}
	switch strings.ToUpper(c.Store.SQLite.Synchronous) {
	case "FULL", "NORMAL":
	default:
		errs = append(errs, fmt.Sprintf("store.sqlite.synchronous (KUMA_STORE_SQLITE_SYNCHRONOUS): must be FULL or NORMAL, got %q", c.Store.SQLite.Synchronous))
	}
	ports := []struct {
		name string
		p    uint32
	}{
		{"apiServer.http.port (KUMA_API_SERVER_HTTP_PORT)", c.APIServer.HTTP.Port},
		{"apiServer.https.port (KUMA_API_SERVER_HTTPS_PORT)", c.APIServer.HTTPS.Port},
		{"dpServer.port (KUMA_DP_SERVER_PORT)", c.DPServer.Port},
		{"monitoringAssignmentServer.port (KUMA_MONITORING_ASSIGNMENT_SERVER_PORT)", c.MonitoringAssignmentServer.Port},
		{"diagnostics.serverPort (KUMA_DIAGNOSTICS_SERVER_PORT)", c.Diagnostics.ServerPort},
		{"runtime.kubernetes.admissionServer.port (KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT)", c.Runtime.Kubernetes.AdmissionServer.Port},
	}
	for _, p := range ports {
		if p.p > 65535 {
			errs = append(errs, fmt.Sprintf("%s: must be a port number from 0 to 65535, got %d", p.name, p.p))
		}
	}
	if c.MonitoringAssignmentServer.DefaultFetchTimeout <= 0 {
		errs = append(errs, "monitoringAssignmentServer.defaultFetchTimeout (KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT): must be positive")
	}
	if m := c.MonitoringAssignmentServer; m.MaxFetchTimeout < m.DefaultFetchTimeout {
		errs = append(errs, fmt.Sprintf("monitoringAssignmentServer.maxFetchTimeout (KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_FETCH_TIMEOUT): must be at least the default fetch timeout %s, got %s",
			time.Duration(m.DefaultFetchTimeout), time.Duration(m.MaxFetchTimeout)))
	}
	positive := []struct {
		name string
		v    int64
	}{
		{"monitoringAssignmentServer.maxHeldLongPolls (KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS)", int64(c.MonitoringAssignmentServer.MaxHeldLongPolls)},
		{"apiServer.maxErrorCauses (KUMA_API_SERVER_MAX_ERROR_CAUSES)", int64(c.APIServer.MaxErrorCauses)},
		{"serverLimits.http.readHeaderTimeout (KUMA_SERVER_LIMITS_HTTP_READ_HEADER_TIMEOUT)", int64(c.ServerLimits.HTTP.ReadHeaderTimeout)},
		{"serverLimits.http.readTimeout (KUMA_SERVER_LIMITS_HTTP_READ_TIMEOUT)", int64(c.ServerLimits.HTTP.ReadTimeout)},
		{"serverLimits.http.idleTimeout (KUMA_SERVER_LIMITS_HTTP_IDLE_TIMEOUT)", int64(c.ServerLimits.HTTP.IdleTimeout)},
		{"serverLimits.http.maxHeaderBytes (KUMA_SERVER_LIMITS_HTTP_MAX_HEADER_BYTES)", int64(c.ServerLimits.HTTP.MaxHeaderBytes)},
		{"serverLimits.grpc.maxConcurrentStreams (KUMA_SERVER_LIMITS_GRPC_MAX_CONCURRENT_STREAMS)", int64(c.ServerLimits.GRPC.MaxConcurrentStreams)},
		{"serverLimits.grpc.keepaliveTime (KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIME)", int64(c.ServerLimits.GRPC.KeepaliveTime)},
		{"serverLimits.grpc.keepaliveTimeout (KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_TIMEOUT)", int64(c.ServerLimits.GRPC.KeepaliveTimeout)},
		{"serverLimits.grpc.keepaliveMinTime (KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_MIN_TIME)", int64(c.ServerLimits.GRPC.KeepaliveMinTime)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			errs = append(errs, p.name+": must be positive")
		}
	}
	if mt := time.Duration(c.ServerLimits.GRPC.KeepaliveMinTime); mt > dpKeepaliveInterval {
		errs = append(errs, fmt.Sprintf("serverLimits.grpc.keepaliveMinTime (KUMA_SERVER_LIMITS_GRPC_KEEPALIVE_MIN_TIME): must be at most %s, as often as kuma-dp pings, got %s", dpKeepaliveInterval, mt))
	}
	for _, r := range []struct {
		name string
		v    int
	}{
		{"runtime.kubernetes.clientConfig.qps (KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_QPS)", c.Runtime.Kubernetes.ClientConfig.QPS},
		{"runtime.kubernetes.clientConfig.burstQps (KUMA_RUNTIME_KUBERNETES_CLIENT_CONFIG_BURST_QPS)", c.Runtime.Kubernetes.ClientConfig.BurstQPS},
	} {
		if r.v < 0 {
			errs = append(errs, fmt.Sprintf("%s: must not be negative (0 is client-go's default), got %d", r.name, r.v))
		}
	}
	if c.Runtime.Universal.DataplaneCleanupAge < 0 {
		errs = append(errs, "runtime.universal.dataplaneCleanupAge (KUMA_RUNTIME_UNIVERSAL_DATAPLANE_CLEANUP_AGE): must not be negative (0 turns the cleanup off)")
	}
	if (c.DPServer.TLSCertFile == "") != (c.DPServer.TLSKeyFile == "") {
		errs = append(errs, "dpServer.tlsCertFile and .tlsKeyFile (KUMA_DP_SERVER_TLS_CERT_FILE, _KEY_FILE): set both or neither")
	}
	if (c.APIServer.HTTPS.TLSCertFile == "") != (c.APIServer.HTTPS.TLSKeyFile == "") {
		errs = append(errs, "apiServer.https.tlsCertFile and .tlsKeyFile (KUMA_API_SERVER_HTTPS_TLS_CERT_FILE, _KEY_FILE): set both or neither")
	}
	if c.APIServer.Auth.ClientCertsDir != "" && !c.APIServer.HTTPS.Enabled {
		errs = append(errs, "apiServer.auth.clientCertsDir (KUMA_API_SERVER_AUTH_CLIENT_CERTS_DIR): client certificates are presented over HTTPS only; "+
			"set apiServer.https.enabled (KUMA_API_SERVER_HTTPS_ENABLED) to true")
	}
	errs = append(errs, c.MonitoringAssignmentServer.validate()...)
	errs = append(errs, c.validateInjector()...)
	switch t := c.DPServer.Authn.DPProxy.Type; {
	case t == DPProxyAuthnServiceAccountToken && c.Environment != EnvironmentKubernetes:
		errs = append(errs, fmt.Sprintf("dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE) %s needs environment (KUMA_ENVIRONMENT) %s, got %q",
			DPProxyAuthnServiceAccountToken, EnvironmentKubernetes, c.Environment))
	case t != DPProxyAuthnDPToken && t != DPProxyAuthnServiceAccountToken && t != DPProxyAuthnNone:
		errs = append(errs, fmt.Sprintf("dpServer.authn.dpProxy.type (KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE): must be %s, %s or %s, got %q",
			DPProxyAuthnDPToken, DPProxyAuthnServiceAccountToken, DPProxyAuthnNone, t))
	}
	if c.General.WorkDir == "" {
		errs = append(errs, "general.workDir (KUMA_GENERAL_WORK_DIR): must not be empty")
	}
	if len(errs) > 0 {
		return errors.New("invalid configuration: " + strings.Join(errs, "; "))
	}
	return nil
}

// validate checks the PostgreSQL settings (when the store is postgres).
func (p PostgresStore) validate() []string {
	var errs []string
	if p.Host == "" {
		errs = append(errs, "store.postgres.host (KUMA_STORE_POSTGRES_HOST): must not be empty")
	}
	if p.Port == 0 || p.Port > 65535 {
		errs = append(errs, fmt.Sprintf("store.postgres.port (KUMA_STORE_POSTGRES_PORT): must be a port number from 1 to 65535, got %d", p.Port))
	}
	if p.User == "" {
		errs = append(errs, "store.postgres.user (KUMA_STORE_POSTGRES_USER): must not be empty")
	}
	if p.DBName == "" {
		errs = append(errs, "store.postgres.dbName (KUMA_STORE_POSTGRES_DB_NAME): must not be empty")
	}
	if p.ConnectionTimeout <= 0 {
		errs = append(errs, fmt.Sprintf("store.postgres.connectionTimeout (KUMA_STORE_POSTGRES_CONNECTION_TIMEOUT): must be a positive number of seconds, got %d", p.ConnectionTimeout))
	}
	if p.MaxOpenConnections <= 0 {
		errs = append(errs, fmt.Sprintf("store.postgres.maxOpenConnections (KUMA_STORE_POSTGRES_MAX_OPEN_CONNECTIONS): must be positive, got %d", p.MaxOpenConnections))
	}
	if p.MinReconnectInterval <= 0 {
		errs = append(errs, fmt.Sprintf("store.postgres.minReconnectInterval (KUMA_STORE_POSTGRES_MIN_RECONNECT_INTERVAL): must be positive, got %s", time.Duration(p.MinReconnectInterval)))
	}
	if p.MaxReconnectInterval < p.MinReconnectInterval {
		errs = append(errs, fmt.Sprintf("store.postgres.maxReconnectInterval (KUMA_STORE_POSTGRES_MAX_RECONNECT_INTERVAL): must not be less than minReconnectInterval (%s), got %s",
			time.Duration(p.MinReconnectInterval), time.Duration(p.MaxReconnectInterval)))
	}
	switch p.TLS.Mode {
	case PostgresTLSDisable, PostgresTLSVerifyNone, PostgresTLSVerifyCA, PostgresTLSVerifyFull:
	default:
		errs = append(errs, fmt.Sprintf("store.postgres.tls.mode (KUMA_STORE_POSTGRES_TLS_MODE): must be %s, %s, %s or %s, got %q",
			PostgresTLSDisable, PostgresTLSVerifyNone, PostgresTLSVerifyCA, PostgresTLSVerifyFull, p.TLS.Mode))
	}
	if (p.TLS.CertPath == "") != (p.TLS.KeyPath == "") {
		errs = append(errs, "store.postgres.tls.certPath (KUMA_STORE_POSTGRES_TLS_CERT_PATH) and store.postgres.tls.keyPath (KUMA_STORE_POSTGRES_TLS_KEY_PATH): set both or neither")
	}
	if p.TLS.Mode == PostgresTLSVerifyCA && p.TLS.CAPath == "" {
		errs = append(errs, "store.postgres.tls.caPath (KUMA_STORE_POSTGRES_TLS_CA_PATH): needed by tls.mode verifyCa")
	}
	return errs
}
