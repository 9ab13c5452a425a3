package kumadp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/dpserver/dpservertest"
	"github.com/kumametrics/mesh/pkg/proxy/proxytest"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// TestRunWithoutADataplaneFile: `kuma-dp run --name --mesh` with no
// Dataplane against a dataplane server that serves the stored Dataplanes
// (Kubernetes' way): refused while none is stored, it connects once its
// owner stores it, and gets everything from the stream (the inbound in front
// of the application, the metrics endpoint on the Dataplane's port and
// path); it presents nothing and writes nothing, and deregistering leaves
// the Dataplane to its owner.
func TestRunWithoutADataplaneFile(t *testing.T) {
	iss, err := authn.NewIssuer([]byte("u-key-u-key-u-key-u-key-u-key-32"), []byte("d-key-d-key-d-key-d-key-d-key-32"), nil)
	require.NoError(t, err)
	srv := dpservertest.Start(t, nil, func(o *dpserver.Options) {
		o.Dataplanes, o.Writer, o.Authenticator = dpserver.FromStore, nil, dpserver.DataplaneTokens{Verifier: iss}
	})
	key := resource.Key{Mesh: "default", Name: "web-5c89f4d995-85znn.kuma-example"}
	const service = "web_kuma-example_svc_80"
	token, err := iss.IssueDataplane(key.Mesh, key.Name, map[string][]string{resource.ServiceTag: {service}}, 0)
	require.NoError(t, err)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, token+"\n")

	log := &syncbuffer.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	root := NewRootCommand(func(string) (string, bool) { return "", false }, log, Run)
	root.SetArgs([]string{"run", "--cp-address", "https://" + srv.Addr, "--ca-cert-file", srv.CAFile,
		"--name", key.Name, "--mesh", key.Mesh, "--dataplane-token-file", tokenFile,
		"--admin-port", "0", "--drain-time", "1s"})
	go func() { done <- root.ExecuteContext(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("kuma-dp log:\n%s", log.String())
		}
	})

	// Nothing stored yet: refused, and retried.
	eventually(t, func() error {
		if n := srv.Refused(t, dpserver.ReasonDataplaneNotFound); n < 1 {
			return fmt.Errorf("refused %v times", n)
		}
		return nil
	})
	_, err = srv.Store.Get(t.Context(), resource.KindDataplane, key)
	require.ErrorIs(t, err, store.ErrNotFound, "kuma-dp presented nothing")

	// The owner stores it (and the mesh's metrics are on).
	host := loopback.Host()
	app, _ := proxytest.LineApp(t, "app")
	appHost, appPort := splitHostPort(t, app)
	apply(t, srv, "type: Mesh\nname: default\nmetrics:\n  enabledBackend: prometheus-1\n  backends:\n  - name: prometheus-1\n    type: prometheus\n")
	stored := apply(t, srv, fmt.Sprintf(`type: Dataplane
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
metrics:
  type: prometheus
  conf:
    port: 1234
    path: /non-standard-path
`, key.Name, host, appHost, appPort, service))

	inbound := net.JoinHostPort(host, "8080")
	eventually(t, func() error {
		answer, err := ask(inbound, "hello")
		if err != nil || answer != "app:hello" {
			return fmt.Errorf("through the inbound: %q, %v", answer, err)
		}
		return nil
	})
	eventually(t, func() error {
		code, body, err := httpStatus("http://" + net.JoinHostPort(host, "1234") + "/non-standard-path")
		if err != nil || code != 200 || !strings.Contains(body, "envoy_server_live 1") {
			return fmt.Errorf("metrics endpoint: %d, %v", code, err)
		}
		return nil
	})
	require.Contains(t, log.String(), `msg="connected to the control plane"`)
	require.Equal(t, 1, strings.Count(log.String(), `msg="the control plane has no Dataplane for this proxy yet; retrying"`), "said once")
	require.Contains(t, log.String(), "dataplane="+key.String())
	have, err := srv.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, stored.Meta.Version, have.Meta.Version, "the stored Dataplane is its owner's")

	// Ctrl-C: kuma-dp deregisters and stops; the Dataplane stays, offline.
	stop()
	require.Contains(t, log.String(), `msg="kuma-dp stopped"`)
	require.NotContains(t, log.String(), "deregistering failed")
	have, err = srv.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, stored.Meta.Version, have.Meta.Version)
	eventually(t, func() error {
		in, err := srv.Store.Get(t.Context(), resource.KindDataplaneInsight, key)
		if err != nil {
			return err
		}
		if l := in.DataplaneInsight().Latest(); l == nil || l.DisconnectTime == nil {
			return errors.New("still online")
		}
		return nil
	})
}

// apply writes a resource as its owner would and returns it as stored.
func apply(t *testing.T, srv *dpservertest.Server, yaml string) *resource.Object {
	t.Helper()
	obj, err := resource.DecodeYAML([]byte(yaml), 1)
	require.NoError(t, err)
	res, err := srv.Manager.Apply(t.Context(), obj, 0)
	require.NoError(t, err)
	return res.Object
}
