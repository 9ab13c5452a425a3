// Package config reads and writes kumactl's configuration file: the control
// planes kumactl knows, the contexts that name them and the current context.
// The file has Kuma's shape:
//
//	contexts:
//	- name: local
//	  controlPlane: local
//	controlPlanes:
//	- name: local
//	  coordinates:
//	    apiServer:
//	      url: http://localhost:5681
//	currentContext: local
//
// A control plane that wants a user token says so in its apiServer:
//
//	url: https://cp.example:5682
//	authType: tokens
//	authConf:
//	  token: eyJhbGciOiJIUzI1NiIs...
//
// An https:// control plane is verified against caCertFile (else the
// system's trusted roots, or not at all with skipVerify: true), and kumactl
// presents clientCertFile/clientKeyFile when they are set; the files are
// referenced, not copied:
//
//	url: https://cp.example:5682
//	caCertFile: /home/me/.kumactl/cp-ca.pem
//	clientCertFile: /home/me/.kumactl/admin.pem
//	clientKeyFile: /home/me/.kumactl/admin.key
//
// A missing file reads as Default(). Save writes atomically (a temporary file
// renamed over the old one) with mode 0600, creating the directory with mode
// 0700.
package config

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/internal/atomicfile"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Config is the whole configuration file.
type Config struct {
	Contexts       []Context      `json:"contexts"`
	ControlPlanes  []ControlPlane `json:"controlPlanes"`
	CurrentContext string         `json:"currentContext"`
}

// Context selects a control plane.
type Context struct {
	Name         string `json:"name"`
	ControlPlane string `json:"controlPlane"`
}

// ControlPlane is a control plane kumactl can talk to.
type ControlPlane struct {
	Name        string      `json:"name"`
	Coordinates Coordinates `json:"coordinates"`
}

// Coordinates tell how to reach a control plane.
type Coordinates struct {
	APIServer APIServer `json:"apiServer"`
}

// APIServer is the address of a control plane's REST API and how to
// authenticate to it.
type APIServer struct {
	URL string `json:"url"`
	// AuthType is empty (no credentials) or AuthTypeTokens.
	AuthType string `json:"authType,omitempty"`
	// AuthConf configures the auth type: for tokens, {"token": <user token>}.
	AuthConf map[string]string `json:"authConf,omitempty"`
	// CACertFile is a PEM bundle of the CAs that verify an https:// control
	// plane; empty means the system's trusted roots.
	CACertFile string `json:"caCertFile,omitempty"`
	// SkipVerify accepts any certificate of an https:// control plane.
	SkipVerify bool `json:"skipVerify,omitempty"`
	// ClientCertFile and ClientKeyFile (both or neither) are the certificate
	// kumactl presents to an https:// control plane.
	ClientCertFile string `json:"clientCertFile,omitempty"`
	ClientKeyFile  string `json:"clientKeyFile,omitempty"`
}

// Auth types.
const (
	// AuthTypeTokens sends a user token (AuthConf[AuthConfToken]) as a bearer token.
	AuthTypeTokens = "tokens"
	// AuthConfToken is the AuthConf key of the user token.
	AuthConfToken = "token"
)

// Token returns the user token to send, or "" when the control plane has no
// auth configured.
func (a APIServer) Token() string {
	if a.AuthType != AuthTypeTokens {
		return ""
	}
	return a.AuthConf[AuthConfToken]
}

// FieldError is an invalid setting of an apiServer: what CheckAuth, CheckTLS
// and TLSConfig return.
type FieldError struct {
	// Field is the setting's key: "authType", "authConf", "caCertFile",
	// "skipVerify", "clientCertFile" or "clientKeyFile".
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// CheckAuth checks an auth type and its configuration; errors are *FieldError.
func CheckAuth(authType string, conf map[string]string) error {
	switch authType {
	case "":
		if len(conf) > 0 {
			return &FieldError{"authConf", "needs an auth type"}
		}
		return nil
	case AuthTypeTokens:
		keys := make([]string, 0, len(conf))
		for k := range conf {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k != AuthConfToken {
				return &FieldError{"authConf", fmt.Sprintf("unknown key %q for auth type %s (known: %s)", k, AuthTypeTokens, AuthConfToken)}
			}
		}
		if strings.TrimSpace(conf[AuthConfToken]) == "" {
			return &FieldError{"authConf", fmt.Sprintf("auth type %s needs %s=<user token>", AuthTypeTokens, AuthConfToken)}
		}
		return nil
	}
	return &FieldError{"authType", fmt.Sprintf("unknown auth type %q (known: %s)", authType, AuthTypeTokens)}
}

// CheckTLS checks that the TLS settings fit together and the URL; errors
// are *FieldError. It does not read the files (TLSConfig does).
func (a APIServer) CheckTLS() error {
	secure := strings.HasPrefix(strings.ToLower(strings.TrimSpace(a.URL)), "https://")
	for _, f := range []struct {
		field string
		set   bool
	}{{"caCertFile", a.CACertFile != ""}, {"skipVerify", a.SkipVerify}, {"clientCertFile", a.ClientCertFile != ""}, {"clientKeyFile", a.ClientKeyFile != ""}} {
		if f.set && !secure {
			return &FieldError{f.field, fmt.Sprintf("only applies to an https:// address, got %q", a.URL)}
		}
	}
	if a.CACertFile != "" && a.SkipVerify {
		return &FieldError{"skipVerify", "excludes caCertFile: verify the control plane against a CA, or do not verify it"}
	}
	if (a.ClientCertFile == "") != (a.ClientKeyFile == "") {
		if a.ClientCertFile == "" {
			return &FieldError{"clientCertFile", "is required with clientKeyFile"}
		}
		return &FieldError{"clientKeyFile", "is required with clientCertFile"}
	}
	return nil
}

// TLSConfig reads the TLS files of an https:// control plane: nil for an
// http:// one. Errors are *FieldError naming the file's setting.
func (a APIServer) TLSConfig() (*tls.Config, error) {
	if err := a.CheckTLS(); err != nil {
		return nil, err
	}
	u, err := url.Parse(strings.TrimSpace(a.URL))
	if err != nil || u.Scheme != "https" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: a.SkipVerify} //nolint:gosec // skipVerify is the user's explicit choice.
	if a.CACertFile != "" {
		bundle, err := os.ReadFile(a.CACertFile)
		if err != nil {
			return nil, &FieldError{"caCertFile", err.Error()}
		}
		if cfg.RootCAs, err = pki.Pool(bundle); err != nil {
			return nil, &FieldError{"caCertFile", fmt.Sprintf("%s: %v", a.CACertFile, err)}
		}
	}
	if a.ClientCertFile != "" {
		certPEM, err := os.ReadFile(a.ClientCertFile)
		if err != nil {
			return nil, &FieldError{"clientCertFile", err.Error()}
		}
		keyPEM, err := os.ReadFile(a.ClientKeyFile)
		if err != nil {
			return nil, &FieldError{"clientKeyFile", err.Error()}
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, &FieldError{"clientKeyFile", fmt.Sprintf("%s and %s do not make a key pair: %v", a.ClientCertFile, a.ClientKeyFile, err)}
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// TokenInClear tells whether a user token would travel in clear: it is
// sent over http:// to a host that is not a loopback address or localhost.
func (a APIServer) TokenInClear() bool {
	if a.Token() == "" {
		return false
	}
	u, err := url.Parse(strings.TrimSpace(a.URL))
	if err != nil || u.Scheme != "http" {
		return false
	}
	return !loopback.IsHost(u.Hostname())
}

// Address returns the URL of the control plane's API.
func (cp ControlPlane) Address() string { return cp.Coordinates.APIServer.URL }

// Names of the built-in control plane and context.
const (
	LocalName    = "local"
	LocalAddress = "http://localhost:5681"
)

// Default is the configuration used when there is no file: the `local`
// control plane at http://localhost:5681, current.
func Default() *Config {
	return &Config{
		Contexts:       []Context{{Name: LocalName, ControlPlane: LocalName}},
		ControlPlanes:  []ControlPlane{{Name: LocalName, Coordinates: Coordinates{APIServer: APIServer{URL: LocalAddress}}}},
		CurrentContext: LocalName,
	}
}

// Load reads the configuration file. A missing file gives Default() and
// exists == false.
func Load(path string) (cfg *Config, exists bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read the kumactl config: %w", err)
	}
	cfg = &Config{}
	if err := yaml.Unmarshal(data, cfg); err != nil {
		return nil, true, fmt.Errorf("the kumactl config %s is not valid YAML: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, true, fmt.Errorf("the kumactl config %s is not valid: %w", path, err)
	}
	return cfg, true, nil
}

// Validate checks that names are set and unique, that every context names
// a known control plane and that auth settings are complete.
func (c *Config) Validate() error {
	cps := map[string]bool{}
	for i, cp := range c.ControlPlanes {
		switch {
		case cp.Name == "":
			return fmt.Errorf("controlPlanes[%d].name: must not be empty", i)
		case cps[cp.Name]:
			return fmt.Errorf("controlPlanes[%d].name: %q is used twice", i, cp.Name)
		case cp.Address() == "":
			return fmt.Errorf("controlPlanes[%d].coordinates.apiServer.url: must not be empty", i)
		}
		if err := CheckAuth(cp.Coordinates.APIServer.AuthType, cp.Coordinates.APIServer.AuthConf); err != nil {
			return fmt.Errorf("controlPlanes[%d].coordinates.apiServer.%w", i, err)
		}
		if err := cp.Coordinates.APIServer.CheckTLS(); err != nil {
			return fmt.Errorf("controlPlanes[%d].coordinates.apiServer.%w", i, err)
		}
		cps[cp.Name] = true
	}
	ctxs := map[string]bool{}
	for i, ctx := range c.Contexts {
		switch {
		case ctx.Name == "":
			return fmt.Errorf("contexts[%d].name: must not be empty", i)
		case ctxs[ctx.Name]:
			return fmt.Errorf("contexts[%d].name: %q is used twice", i, ctx.Name)
		case !cps[ctx.ControlPlane]:
			return fmt.Errorf("contexts[%d].controlPlane: no control plane is named %q", i, ctx.ControlPlane)
		}
		ctxs[ctx.Name] = true
	}
	if c.CurrentContext != "" && !ctxs[c.CurrentContext] {
		return fmt.Errorf("currentContext: no context is named %q", c.CurrentContext)
	}
	return nil
}

// Save writes the configuration file atomically with mode 0600, creating
// its directory (mode 0700) if needed. A symbolic link at path is followed.
func Save(path string, cfg *Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	out := *cfg
	if out.Contexts == nil {
		out.Contexts = []Context{}
	}
	if out.ControlPlanes == nil {
		out.ControlPlanes = []ControlPlane{}
	}
	js, err := json.Marshal(out)
	if err != nil {
		return err
	}
	data, err := resource.JSONToOrderedYAML(js)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the kumactl config directory: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write the kumactl config: %w", err)
	}
	return nil
}

// ControlPlane returns the control plane of that name, or nil.
func (c *Config) ControlPlane(name string) *ControlPlane {
	for i := range c.ControlPlanes {
		if c.ControlPlanes[i].Name == name {
			return &c.ControlPlanes[i]
		}
	}
	return nil
}

// Context returns the context of that name, or nil.
func (c *Config) Context(name string) *Context {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// CurrentControlPlane returns the control plane of the current context.
func (c *Config) CurrentControlPlane() (*ControlPlane, error) {
	if c.CurrentContext == "" {
		return nil, errors.New("no current context; add a control plane with `kumactl config control-planes add`")
	}
	ctx := c.Context(c.CurrentContext)
	if ctx == nil {
		return nil, fmt.Errorf("the current context %q does not exist", c.CurrentContext)
	}
	cp := c.ControlPlane(ctx.ControlPlane)
	if cp == nil {
		return nil, fmt.Errorf("context %q names control plane %q, which does not exist", ctx.Name, ctx.ControlPlane)
	}
	return cp, nil
}

// AddControlPlane adds a control plane and a context of the same name, and
// makes that context current. An existing control plane (or context) of that
// name is replaced only with overwrite.
func (c *Config) AddControlPlane(cp ControlPlane, overwrite bool) error {
	if cp.Name == "" {
		return errors.New("a control plane name is required")
	}
	if !overwrite && (c.ControlPlane(cp.Name) != nil || c.Context(cp.Name) != nil) {
		return fmt.Errorf("control plane %q already exists; use --overwrite to replace it", cp.Name)
	}
	if existing := c.ControlPlane(cp.Name); existing != nil {
		*existing = cp
	} else {
		c.ControlPlanes = append(c.ControlPlanes, cp)
	}
	if existing := c.Context(cp.Name); existing != nil {
		existing.ControlPlane = cp.Name
	} else {
		c.Contexts = append(c.Contexts, Context{Name: cp.Name, ControlPlane: cp.Name})
	}
	c.CurrentContext = cp.Name
	return nil
}

// SwitchContext makes the context of that name current. When no context has
// that name but a control plane does, the context naming that control plane
// becomes current.
func (c *Config) SwitchContext(name string) error {
	if c.Context(name) != nil {
		c.CurrentContext = name
		return nil
	}
	for _, ctx := range c.Contexts {
		if ctx.ControlPlane == name {
			c.CurrentContext = ctx.Name
			return nil
		}
	}
	return fmt.Errorf("there is no Control Plane with name %q", name)
}

// RemoveControlPlane removes a control plane and every context naming it.
// When the current context goes, the first remaining context (if any)
// becomes current.
func (c *Config) RemoveControlPlane(name string) error {
	if c.ControlPlane(name) == nil {
		return fmt.Errorf("there is no Control Plane with name %q", name)
	}
	cps := c.ControlPlanes[:0]
	for _, cp := range c.ControlPlanes {
		if cp.Name != name {
			cps = append(cps, cp)
		}
	}
	c.ControlPlanes = cps
	ctxs := c.Contexts[:0]
	for _, ctx := range c.Contexts {
		if ctx.ControlPlane != name {
			ctxs = append(ctxs, ctx)
		}
	}
	c.Contexts = ctxs
	if c.Context(c.CurrentContext) == nil {
		c.CurrentContext = ""
		if len(c.Contexts) > 0 {
			c.CurrentContext = c.Contexts[0].Name
		}
	}
	return nil
}
