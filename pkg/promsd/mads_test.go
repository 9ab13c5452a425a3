package promsd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// securedMADS is the control plane's real monitoring assignment server,
// requiring user tokens, with one dataplane, on 127.0.0.1.
type securedMADS struct {
	addr   string
	tokens *authn.Issuer
}

func startSecuredMADS(t *testing.T, configure func(*mads.Options)) *securedMADS {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(ctx))
	mesh := resource.New("", "default", &resource.MeshSpec{Metrics: &resource.Metrics{
		EnabledBackend: "prometheus-1", Backends: []resource.MetricsBackend{{Name: "prometheus-1", Type: "prometheus"}},
	}})
	_, err := mgr.Apply(ctx, mesh, 0)
	require.NoError(t, err)
	_, err = mgr.Apply(ctx, resource.New("default", "web-1", &resource.DataplaneSpec{Networking: &resource.Networking{
		Address: "10.0.0.1", Inbound: []resource.Inbound{{Port: 8080, Tags: map[string]string{resource.ServiceTag: "web"}}},
	}}), 0)
	require.NoError(t, err)
	iss, err := authn.Load(t.TempDir(), nil)
	require.NoError(t, err)
	mir := mirror.New(st, nil, resource.KindMesh, resource.KindDataplane)
	opts := mads.Options{Views: mir, Tokens: iss, Debounce: 5 * time.Millisecond}
	if configure != nil {
		configure(&opts)
	}
	srv, err := mads.New(opts)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = mir.Run(ctx) }()
	go func() { defer wg.Done(); srv.Reconcile(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &securedMADS{addr: ln.Addr().String(), tokens: iss}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

func waitForTarget(t *testing.T, path, dataplane string) {
	t.Helper()
	waitFor(t, dataplane+" in "+path, func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), `"dataplane": "`+dataplane+`"`) || strings.Contains(string(b), `"dataplane":"`+dataplane+`"`)
	})
}

func TestClientWithATokenOverPlainGRPCToLoopback(t *testing.T) {
	m := startSecuredMADS(t, nil)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	// First a token of another control plane: refused.
	other, err := authn.Load(t.TempDir(), nil)
	require.NoError(t, err)
	stranger, err := other.IssueUser("prometheus", nil, time.Hour)
	require.NoError(t, err)
	writeFile(t, tokenFile, []byte(stranger+"\n"))

	cfg := clientConfig(t, m.addr)
	cfg.AuthTokenFile = tokenFile
	logs := startClient(t, cfg)
	waitFor(t, "the token refused", func() bool {
		return len(logs.lines("Unauthenticated", "the user token was refused")) >= 2
	})
	require.NoFileExists(t, cfg.OutputFile)

	// The file is read at every connection: a valid token is picked up.
	valid, err := m.tokens.IssueUser("prometheus", nil, time.Hour)
	require.NoError(t, err)
	writeFile(t, tokenFile, []byte(valid+"\n"))
	waitForTarget(t, cfg.OutputFile, "web-1")
}

func TestClientWithATokenAndAClientCertificateOverGRPCS(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	serverCA, err := pki.NewCA("mads CA", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	server, err := pki.Issue(serverCA, pki.Leaf{CommonName: "mads", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	scrapers, err := pki.NewCA("scrapers", pki.KeyType{}, now, time.Hour)
	require.NoError(t, err)
	client, err := pki.Issue(scrapers, pki.Leaf{CommonName: "prometheus", Client: true, Lifetime: time.Hour}, now)
	require.NoError(t, err)
	files := map[string][]byte{
		"server.pem": server.CertPEM, "server.key": server.KeyPEM, "server-ca.pem": serverCA.CertPEM,
		"scrapers-ca.pem": scrapers.CertPEM, "client.pem": client.CertPEM, "client.key": client.KeyPEM,
	}
	for name, data := range files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	m := startSecuredMADS(t, func(o *mads.Options) {
		o.TLSCertFile, o.TLSKeyFile, o.TLSClientCAFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "scrapers-ca.pem")
	})
	token, err := m.tokens.IssueUser("prometheus", nil, time.Hour)
	require.NoError(t, err)
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, []byte(token))

	secured := func(t *testing.T, configure func(*Config)) Config {
		cfg := clientConfig(t, m.addr)
		cfg.CPAddress = "grpcs://" + m.addr
		cfg.CACertFile = filepath.Join(dir, "server-ca.pem")
		configure(&cfg)
		return cfg
	}
	t.Run("no client certificate", func(t *testing.T) {
		cfg := secured(t, func(c *Config) { c.AuthTokenFile = tokenFile })
		logs := startClient(t, cfg)
		waitFor(t, "a refused handshake", func() bool {
			return len(logs.lines("cannot connect to the control plane", "certificate required")) >= 1
		})
		require.NoFileExists(t, cfg.OutputFile)
	})
	t.Run("no token", func(t *testing.T) {
		cfg := secured(t, func(c *Config) {
			c.ClientCertFile, c.ClientKeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
		})
		logs := startClient(t, cfg)
		waitFor(t, "a refused stream", func() bool { return len(logs.lines("Unauthenticated", "need a user token")) >= 1 })
		require.NoFileExists(t, cfg.OutputFile)
	})
	t.Run("both", func(t *testing.T) {
		cfg := secured(t, func(c *Config) {
			c.AuthTokenFile, c.ClientCertFile, c.ClientKeyFile = tokenFile, filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
		})
		startClient(t, cfg)
		waitForTarget(t, cfg.OutputFile, "web-1")
	})
}
