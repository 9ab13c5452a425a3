package promsd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kumametrics/mesh/internal/loopback"
)

// Defaults of the flags of `kuma-prometheus-sd run`.
const (
	DefaultCPAddress  = "grpc://localhost:5676"
	DefaultOutputFile = "/var/run/kuma-prometheus-sd/kuma.file_sd.json"
	DefaultName       = "kuma_sd"
	// DefaultCPPort is the port used when --cp-address names none.
	DefaultCPPort = 5676
)

// Environment variables read when the matching flag is not given.
const (
	EnvCPAddress  = "KUMA_MONITORING_ASSIGNMENT_CLIENT_URL"
	EnvName       = "KUMA_MONITORING_ASSIGNMENT_CLIENT_NAME"
	EnvOutputFile = "KUMA_PROMETHEUS_OUTPUT_FILE"
)

// Flag names, used in error messages.
const (
	FlagCPAddress          = "cp-address"
	FlagOutputFile         = "output-file"
	FlagName               = "name"
	FlagCACertFile         = "ca-cert-file"
	FlagInsecureSkipVerify = "insecure-skip-verify"
	FlagAuthTokenFile      = "auth-token-file"
	FlagClientCertFile     = "client-cert-file"
	FlagClientKeyFile      = "client-key-file"
	FlagLogLevel           = "log-level"
)

// Config is what the client needs to run. The zero value is not valid; start
// from DefaultConfig.
type Config struct {
	// CPAddress is the control plane's MADS endpoint, grpc://host[:port] or
	// grpcs://host[:port] (port 5676 when omitted).
	CPAddress string
	// Name is the client's xDS node.id.
	Name string
	// OutputFile is the Prometheus file_sd file to maintain.
	OutputFile string
	// CACertFile is a PEM bundle that verifies the control plane's certificate
	// (grpcs:// only).
	CACertFile string
	// InsecureSkipVerify accepts any control-plane certificate (grpcs:// only).
	InsecureSkipVerify bool
	// AuthTokenFile holds a user token of the control plane, sent as
	// `authorization: Bearer <token>`. It is read at every connection, so a
	// rotated token is picked up. Over plain grpc:// only to a loopback host.
	AuthTokenFile string
	// ClientCertFile and ClientKeyFile (both or neither, grpcs:// only) are
	// the certificate presented to the control plane, read at every
	// connection.
	ClientCertFile, ClientKeyFile string
	// LogLevel is the minimum level logged by the command.
	LogLevel slog.Level
}

// DefaultConfig returns the configuration of `kuma-prometheus-sd run` without
// flags or environment.
func DefaultConfig() Config {
	return Config{
		CPAddress:  DefaultCPAddress,
		Name:       DefaultName,
		OutputFile: DefaultOutputFile,
		LogLevel:   slog.LevelInfo,
	}
}

// endpoint is a parsed --cp-address.
type endpoint struct {
	secure bool
	host   string // without port, IPv6 without brackets
	target string // host:port, for grpc.NewClient
}

// parseCPAddress parses grpc://host[:port] or grpcs://host[:port].
func parseCPAddress(raw string) (endpoint, error) {
	if raw == "" {
		return endpoint{}, errors.New("must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("not a URL: %w", err)
	}
	var ep endpoint
	switch u.Scheme {
	case "grpc":
	case "grpcs":
		ep.secure = true
	case "":
		return endpoint{}, fmt.Errorf("%q has no scheme, want grpc:// or grpcs://", raw)
	default:
		return endpoint{}, fmt.Errorf("unsupported scheme %q, want grpc or grpcs", u.Scheme)
	}
	if u.Opaque != "" {
		return endpoint{}, fmt.Errorf("%q is not of the form %s://host:port", raw, u.Scheme)
	}
	if u.User != nil {
		return endpoint{}, errors.New("user information is not supported")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return endpoint{}, fmt.Errorf("%q must not have a path, query or fragment", raw)
	}
	ep.host = u.Hostname()
	if ep.host == "" {
		return endpoint{}, fmt.Errorf("%q has no host", raw)
	}
	port := DefaultCPPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return endpoint{}, fmt.Errorf("port %q must be in the range 1-65535", p)
		}
		port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return endpoint{}, fmt.Errorf("%q has an empty port", raw)
	}
	ep.target = net.JoinHostPort(ep.host, strconv.Itoa(port))
	return ep, nil
}

// Validate checks every field and reads the CA bundle. Errors name the flag
// of the offending field. Validate does not decide whether grpcs:// may be
// used without a way to verify the server: NewClient does.
func (c Config) Validate() error {
	ep, err := parseCPAddress(c.CPAddress)
	if err != nil {
		return flagError(FlagCPAddress, err)
	}
	if c.Name == "" {
		return flagError(FlagName, errors.New("must not be empty"))
	}
	if err := validateOutputFile(c.OutputFile); err != nil {
		return flagError(FlagOutputFile, err)
	}
	if c.AuthTokenFile != "" {
		if !ep.secure && !loopback.IsHost(ep.host) {
			return flagError(FlagAuthTokenFile, fmt.Errorf("refusing to send a token in clear over grpc:// to %s, which is not a loopback host; use grpcs://", ep.host))
		}
		if _, err := readToken(c.AuthTokenFile); err != nil {
			return flagError(FlagAuthTokenFile, err)
		}
	}
	if !ep.secure {
		for _, f := range []struct {
			flag string
			set  bool
		}{{FlagCACertFile, c.CACertFile != ""}, {FlagInsecureSkipVerify, c.InsecureSkipVerify}, {FlagClientCertFile, c.ClientCertFile != ""}, {FlagClientKeyFile, c.ClientKeyFile != ""}} {
			if f.set {
				return flagError(f.flag, fmt.Errorf("only applies to a grpcs:// --%s, got %q", FlagCPAddress, c.CPAddress))
			}
		}
		return nil
	}
	if c.CACertFile != "" && c.InsecureSkipVerify {
		return fmt.Errorf("--%s and --%s exclude each other: verify the control plane or do not", FlagCACertFile, FlagInsecureSkipVerify)
	}
	if c.CACertFile != "" {
		if _, err := loadCAPool(c.CACertFile); err != nil {
			return flagError(FlagCACertFile, err)
		}
	}
	switch {
	case c.ClientCertFile != "" && c.ClientKeyFile == "":
		return flagError(FlagClientKeyFile, fmt.Errorf("is required with --%s", FlagClientCertFile))
	case c.ClientCertFile == "" && c.ClientKeyFile != "":
		return flagError(FlagClientCertFile, fmt.Errorf("is required with --%s", FlagClientKeyFile))
	case c.ClientCertFile != "":
		if _, err := c.loadClientCertificate(); err != nil {
			return err
		}
	}
	return nil
}

func validateOutputFile(path string) error {
	if path == "" {
		return errors.New("must not be empty")
	}
	if strings.HasSuffix(path, "/") || strings.HasSuffix(path, string(filepath.Separator)) {
		return fmt.Errorf("%q names a directory, want a file", path)
	}
	switch filepath.Base(path) {
	case ".", "..":
		return fmt.Errorf("%q names a directory, want a file", path)
	}
	return nil
}

// fieldError is an invalid value of one flag.
type fieldError struct {
	flag string
	err  error
}

func (e *fieldError) Error() string { return "--" + e.flag + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func flagError(flag string, err error) error {
	return &fieldError{flag: flag, err: err}
}

func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// transportCredentials returns the credentials for ep. A grpcs:// endpoint is
// verified against --ca-cert-file, else against the system's trusted roots;
// only --insecure-skip-verify turns verification off.
func (c Config) transportCredentials(ep endpoint) (credentials.TransportCredentials, error) {
	if !ep.secure {
		return insecure.NewCredentials(), nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: ep.host}
	switch {
	case c.CACertFile != "":
		pool, err := loadCAPool(c.CACertFile)
		if err != nil {
			return nil, flagError(FlagCACertFile, err)
		}
		cfg.RootCAs = pool
	case c.InsecureSkipVerify:
		cfg.InsecureSkipVerify = true //nolint:gosec // asked for with --insecure-skip-verify.
	}
	if c.ClientCertFile != "" {
		// Read at every handshake: a renewed certificate is picked up.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.loadClientCertificate() }
	}
	return credentials.NewTLS(cfg), nil
}

// loadClientCertificate reads --client-cert-file and --client-key-file.
func (c Config) loadClientCertificate() (*tls.Certificate, error) {
	if _, err := os.Stat(c.ClientCertFile); err != nil {
		return nil, flagError(FlagClientCertFile, err)
	}
	if _, err := os.Stat(c.ClientKeyFile); err != nil {
		return nil, flagError(FlagClientKeyFile, err)
	}
	pair, err := tls.LoadX509KeyPair(c.ClientCertFile, c.ClientKeyFile)
	if err != nil {
		return nil, flagError(FlagClientKeyFile, fmt.Errorf("%s and %s do not make a key pair: %w", c.ClientCertFile, c.ClientKeyFile, err))
	}
	return &pair, nil
}

// readToken reads a token file: its content without surrounding white space.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s holds no token", path)
	}
	return token, nil
}

// tokenCredentials send the token of a file with every call, reading the
// file each time gRPC asks (at every stream, so once per connection here).
type tokenCredentials struct {
	path string
	// secure: gRPC must refuse to send the token over a plain connection
	// (plain grpc:// is allowed to a loopback host only, see Validate).
	secure bool
}

func (t tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	token, err := readToken(t.path)
	if err != nil {
		return nil, flagError(FlagAuthTokenFile, err)
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

func (t tokenCredentials) RequireTransportSecurity() bool { return t.secure }
