package kumadp

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/dpserver/dpservertest"
	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// TestFailsOverToTheNextControlPlane: `--cp-address A,B` with two replicas
// of one control plane (one store, one CA): the proxy connects to A, and
// when A dies it connects to B while its data path answers every request.
func TestFailsOverToTheNextControlPlane(t *testing.T) {
	iss, err := authn.NewIssuer([]byte("u-key-u-key-u-key-u-key-u-key-32"), []byte("d-key-d-key-d-key-d-key-d-key-32"), nil)
	require.NoError(t, err)
	st := memory.New()
	caDir := t.TempDir()
	replica := func(o *dpserver.Options) {
		o.Dataplanes, o.Writer, o.Authenticator = dpserver.FromStore, nil, dpserver.DataplaneTokens{Verifier: iss}
		cert, err := dpserver.ServerCertificate(caDir, "", "", time.Now())
		require.NoError(t, err)
		o.Certificate = cert
	}
	a := dpservertest.Start(t, st, replica)
	b := dpservertest.Start(t, st, replica)

	const name, service = "web-1", "web"
	token, err := iss.IssueDataplane("default", name, map[string][]string{"kuma.io/service": {service}}, 0)
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, token+"\n")
	host := loopback.Host()
	app, _ := proxytest.LineApp(t, "app")
	appHost, appPort := splitHostPort(t, app)
	apply(t, a, fmt.Sprintf(`type: Dataplane
mesh: default
name: %s
networking:
  address: %s
  inbound:
  - port: 8080
    serviceAddress: %s
    servicePort: %d
    tags:
      kuma.io/service: %s
`, name, host, appHost, appPort, service))

	log := &syncbuffer.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	root := NewRootCommand(func(string) (string, bool) { return "", false }, log, Run)
	root.SetArgs([]string{"run", "--cp-address", "https://" + a.Addr + ", https://" + b.Addr, "--ca-cert-file", filepath.Join(caDir, dpconfig.ServerCAFile),
		"--name", name, "--mesh", "default", "--dataplane-token-file", tokenFile, "--admin-port", "0", "--drain-time", "1s"})
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		if t.Failed() {
			t.Logf("kuma-dp log:\n%s", log.String())
		}
	})
	inbound := net.JoinHostPort(host, "8080")
	eventually(t, func() error {
		if answer, err := ask(inbound, "hello"); err != nil || answer != "app:hello" {
			return fmt.Errorf("through the inbound: %q, %v", answer, err)
		}
		return nil
	})
	eventually(t, func() error {
		if !connectedTo(log.String(), a.Addr) {
			return fmt.Errorf("not connected to the first address %s yet", a.Addr)
		}
		return nil
	})

	// Requests through the proxy for the whole switch.
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent.Add(1)
			if answer, err := ask(inbound, "hello"); err != nil || answer != "app:hello" {
				failed.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("%q %v", answer, err))
			}
		}
	}()
	a.Stop()
	eventually(t, func() error {
		if !connectedTo(log.String(), b.Addr) {
			return fmt.Errorf("not connected to %s after %s stopped", b.Addr, a.Addr)
		}
		return nil
	})
	before := sent.Load()
	eventually(t, func() error {
		if n := sent.Load() - before; n < 50 {
			return fmt.Errorf("%d requests since the switch", n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	require.Zero(t, failed.Load(), "of %d requests; first: %v", sent.Load(), firstFailure.Load())
}

// TestControlPlaneAddresses: each address of a --cp-address list is
// checked, and an error names the one that is wrong.
func TestControlPlaneAddresses(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	_, err := dpserver.ServerCertificate(filepath.Dir(ca), "", "", time.Now())
	require.NoError(t, err)
	ca = filepath.Join(filepath.Dir(ca), dpconfig.ServerCAFile)
	for _, tc := range []struct{ addrs, want string }{
		{"https://a:5678,http://b:5678", `--cp-address "http://b:5678": the dataplane server speaks TLS only`},
		{"https://a:5678,,https://c", `--cp-address "": must be https://host:port (several separated by commas)`},
		{"https://a:5678,b", `--cp-address "b": must be https://host:port`},
	} {
		_, _, err := dialSettings(Config{CPAddress: tc.addrs, CACertFile: ca})
		require.ErrorContains(t, err, tc.want, tc.addrs)
	}
	one, _, err := dialSettings(Config{CPAddress: "https://cp", CACertFile: ca})
	require.NoError(t, err)
	require.Equal(t, "cp:5678", one.target)
	require.Nil(t, one.resolver)
	two, _, err := dialSettings(Config{CPAddress: "https://cp-a:5678, grpcs://cp-b:6000", CACertFile: ca})
	require.NoError(t, err)
	require.NotNil(t, two.resolver)
	require.Equal(t, "kuma-cp:///control-planes", two.target)
}

// connectedTo tells whether the log says the agent connected to addr.
func connectedTo(log, addr string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `msg="connected to the control plane"`) && strings.HasSuffix(line, " address="+addr) {
			return true
		}
	}
	return false
}
