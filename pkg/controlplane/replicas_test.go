package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/authn"

	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// handElector is an election the test decides: the instance leads from a
// grant until a revoke. It stands for the shared store's elector, which
// these tests do not have (the PostgreSQL one is tested with its store).
type handElector struct {
	grant, revoke chan struct{}
}

func newHandElector() *handElector {
	return &handElector{grant: make(chan struct{}), revoke: make(chan struct{})}
}

func (e *handElector) Run(ctx context.Context, lead func(context.Context)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.grant:
		}
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-e.revoke:
			case <-lctx.Done():
			}
			cancel()
		}()
		lead(lctx)
		cancel()
	}
}

// dyingStore is a replica's way to the shared store, which the test can
// cut as a SIGKILL would: after die, every write fails.
type dyingStore struct {
	store.Store
	dead atomic.Bool
}

var errDead = errors.New("this replica is dead")

func (s *dyingStore) Create(ctx context.Context, objs ...*resource.Object) error {
	if s.dead.Load() {
		return errDead
	}
	return s.Store.Create(ctx, objs...)
}

func (s *dyingStore) Update(ctx context.Context, obj *resource.Object) error {
	if s.dead.Load() {
		return errDead
	}
	return s.Store.Update(ctx, obj)
}

func (s *dyingStore) Upsert(ctx context.Context, obj *resource.Object, withNew ...*resource.Object) (bool, error) {
	if s.dead.Load() {
		return false, errDead
	}
	return s.Store.Upsert(ctx, obj, withNew...)
}

func (s *dyingStore) Delete(ctx context.Context, kind resource.Kind, key resource.Key, version int64) error {
	if s.dead.Load() {
		return errDead
	}
	return s.Store.Delete(ctx, kind, key, version)
}

// testClock is a settable clock shared by the replicas of a test.
type testClock struct{ t atomic.Pointer[time.Time] }

func newTestClock() *testClock {
	c := &testClock{}
	now := time.Now()
	c.t.Store(&now)
	return c
}

func (c *testClock) now() time.Time { return *c.t.Load() }
func (c *testClock) advance(d time.Duration) {
	t := c.now().Add(d)
	c.t.Store(&t)
}

// replicaConfig is a control plane whose every listener is on a free port
// of 127.0.0.1, loopback callers admin, proxies authenticated by dataplane
// tokens.
func replicaConfig(t *testing.T, workDir string) cpconfig.Config {
	t.Helper()
	cfg := cpconfig.Default()
	cfg.General.WorkDir = workDir
	cfg.Store.Type = cpconfig.StoreMemory
	cfg.ListenOn("127.0.0.1")
	cfg.APIServer.Authn.LocalhostIsAdmin = true
	require.NoError(t, cfg.Validate())
	return cfg
}

// startReplica runs a control plane on st with elector e (and the other
// options); it stops with the test.
func startReplica(t *testing.T, cfg cpconfig.Config, opts ...controlplane.Option) *running {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	}
	cp, err := controlplane.New(t.Context(), cfg, log, opts...)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { defer close(done); runErr = cp.Run(ctx) }()
	r := &running{cp: cp}
	r.stop = func() {
		cancel()
		select {
		case <-done:
			require.NoError(t, runErr)
		case <-time.After(waitTimeout):
			t.Fatal("the control plane did not stop")
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return r
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// leaderMetrics returns the values of leader and cp_leader on r's /metrics.
func leaderMetrics(t *testing.T, r *running) (leader, cpLeader string) {
	t.Helper()
	res, err := http.Get("http://" + r.cp.Addrs()["diagnostics"] + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `leader{zone="Standalone"} `); ok {
			leader = v
		}
		if v, ok := strings.CutPrefix(line, `cp_leader{zone="Standalone"} `); ok {
			cpLeader = v
		}
	}
	return leader, cpLeader
}

func requireLeading(t *testing.T, r *running, want bool) {
	t.Helper()
	v := "0"
	if want {
		v = "1"
	}
	eventually(t, "leader metrics "+v, func() error {
		if l, c := leaderMetrics(t, r); l != v || c != v {
			return fmt.Errorf("leader %q, cp_leader %q", l, c)
		}
		return nil
	})
}

// put applies a resource through r's API (loopback callers are admin).
func (r *running) put(t *testing.T, path, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+r.cp.Addrs()["api"]+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	require.Less(t, res.StatusCode, 300, string(b))
}

// caSecrets lists the names of the CA secrets of mesh in st.
func caSecrets(t *testing.T, st store.Store, mesh string) []string {
	t.Helper()
	res, err := st.List(t.Context(), resource.KindSecret, store.ListOptions{Mesh: mesh})
	require.NoError(t, err)
	var names []string
	for _, o := range res.Items {
		names = append(names, o.Meta.Name)
	}
	return names
}

func mtlsMesh(name string) string {
	return `{"type":"Mesh","name":"` + name + `","mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]}}`
}

// Two control planes on one store: only the leader does the singleton work
// (the default mesh, the mesh CAs), the metrics say which leads, and the
// work moves with leadership.
func TestOnlyTheLeaderDoesTheSingletonWork(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	ea, eb := newHandElector(), newHandElector()
	a := startReplica(t, replicaConfig(t, t.TempDir()), controlplane.WithStore(st, ea, true))
	b := startReplica(t, replicaConfig(t, t.TempDir()), controlplane.WithStore(st, eb, true))
	requireLeading(t, a, false)
	requireLeading(t, b, false)
	n, err := st.Count(t.Context(), resource.KindMesh)
	require.NoError(t, err)
	require.Zero(t, n, "no leader yet: no default mesh")

	ea.grant <- struct{}{}
	requireLeading(t, a, true)
	requireLeading(t, b, false)
	require.True(t, a.cp.Leading())
	require.False(t, b.cp.Leading())
	eventually(t, "the leader creates the default mesh", func() error {
		_, err := st.Get(t.Context(), resource.KindMesh, resource.Key{Name: resource.DefaultMesh})
		return err
	})
	// A mesh created through the replica that does not lead gets its CA
	// from the leader, once.
	b.put(t, "/meshes/m1", mtlsMesh("m1"))
	want := []string{ca.CertSecretName("m1", "ca-1"), ca.KeySecretName("m1", "ca-1")}
	eventually(t, "the leader creates m1's CA", func() error {
		if got := caSecrets(t, st, "m1"); !sameSet(got, want) {
			return fmt.Errorf("secrets %v", got)
		}
		return nil
	})

	// Leadership moves to B: A stops, B takes over.
	ea.revoke <- struct{}{}
	requireLeading(t, a, false)
	eb.grant <- struct{}{}
	requireLeading(t, b, true)
	require.False(t, a.cp.Leading())
	a.put(t, "/meshes/m2", mtlsMesh("m2"))
	eventually(t, "the new leader creates m2's CA", func() error {
		want := []string{ca.CertSecretName("m2", "ca-1"), ca.KeySecretName("m2", "ca-1")}
		if got := caSecrets(t, st, "m2"); !sameSet(got, want) {
			return fmt.Errorf("secrets %v", got)
		}
		return nil
	})
	require.True(t, sameSet(caSecrets(t, st, "m1"), want), "m1's CA is left as it was")
}

func sameSet(got, want []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}

// Alone on its store (SQLite, memory), a control plane leads at once: the
// default mesh exists when New returns, and the metrics say it leads.
func TestAControlPlaneAloneLeadsAtOnce(t *testing.T) {
	cfg := replicaConfig(t, t.TempDir())
	cp, err := controlplane.New(t.Context(), cfg, nil)
	require.NoError(t, err)
	_, err = cp.Store().Get(t.Context(), resource.KindMesh, resource.Key{Name: resource.DefaultMesh})
	require.NoError(t, err, "the default mesh exists before Run")
	require.True(t, cp.Leading())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	r := &running{cp: cp}
	if l, c := leaderMetrics(t, r); l != "1" || c != "1" {
		t.Fatalf("leader %q, cp_leader %q", l, c)
	}
	cancel()
	require.NoError(t, <-done)
}

// dataplaneToken asks r's API for a token of web-1 (service web).
func (r *running) dataplaneToken(t *testing.T) string {
	t.Helper()
	res, err := http.Post("http://"+r.cp.Addrs()["api"]+"/tokens/dataplane", "application/json",
		strings.NewReader(`{"mesh":"default","name":"web-1","tags":{"kuma.io/service":["web"]}}`))
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, res.StatusCode, string(b))
	return strings.TrimSpace(string(b))
}

// connectProxy opens web-1's config stream to r's dataplane server, trusting
// the CA file caFile and presenting token (none when empty), and takes its
// first config.
func connectProxy(t *testing.T, r *running, caFile, token string) (disconnect func()) {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	conn, err := grpc.NewClient(r.cp.Addrs()["dp-server"], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})))
	require.NoError(t, err)
	ctx := t.Context()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	ctx, cancel := context.WithCancel(ctx)
	stream, err := meshv1.NewDataplaneConfigServiceClient(conn).StreamProxyConfig(ctx)
	require.NoError(t, err)
	md, err := structpb.NewStruct(map[string]any{dpconfig.MetadataDataplane: `{"type":"Dataplane","mesh":"default","name":"web-1",` +
		`"networking":{"address":"127.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`})
	require.NoError(t, err)
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "web-1", Metadata: md}, TypeUrl: dpconfig.TypeURL}))
	resp, err := stream.Recv()
	require.NoError(t, err, "the proxy is served")
	require.NoError(t, stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), TypeUrl: dpconfig.TypeURL}))
	stop := func() { cancel(); _ = conn.Close() }
	t.Cleanup(stop)
	return stop
}

func requireStatus(t *testing.T, r *running, want string) apiclient.DataplaneOverview {
	t.Helper()
	var ov apiclient.DataplaneOverview
	eventually(t, "web-1 "+want, func() error {
		if ov = r.overview(t); ov.Status != want {
			return fmt.Errorf("status %s", ov.Status)
		}
		return nil
	})
	return ov
}

// A proxy fails over from replica A to replica B: A's dataplane token
// verifies on B, B's certificate verifies with A's dp-server-ca.pem, B shows
// the proxy online while it is connected to A, offline once A is dead for
// insight.HeartbeatTimeout (an injected clock), and online again, on B,
// after the reconnect.
func TestAProxyFailsOverToAnotherReplica(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	clock := newTestClock()
	dirA, dirB := t.TempDir(), t.TempDir()
	toA := &dyingStore{Store: st}
	// A beats at its start only (the clock stands still until A dies); B
	// beats often, so that it is alive at every time the test sets.
	a := startReplica(t, replicaConfig(t, dirA), controlplane.WithStore(toA, nil, true),
		controlplane.WithClock(clock.now), controlplane.WithHeartbeatInterval(time.Hour))
	b := startReplica(t, replicaConfig(t, dirB), controlplane.WithStore(st, newHandElector(), true),
		controlplane.WithClock(clock.now), controlplane.WithHeartbeatInterval(20*time.Millisecond))
	token := a.dataplaneToken(t)
	caOfA := filepath.Join(dirA, dpconfig.ServerCAFile)

	disconnect := connectProxy(t, a, caOfA, token)
	requireStatus(t, a, apiclient.StatusOnline)
	ov := requireStatus(t, b, apiclient.StatusOnline)
	idA := a.instanceID(t)
	require.Equal(t, idA, ov.DataplaneInsight.Subscriptions[0].ControlPlaneInstanceID, "connected to A, online on B")

	// A dies: it writes nothing more, its connections drop.
	toA.dead.Store(true)
	disconnect()
	require.Equal(t, apiclient.StatusOnline, b.overview(t).Status, "within the timeout A's proxies count as connected")
	clock.advance(30*time.Second + time.Second) // insight.HeartbeatTimeout, and a second
	ov = requireStatus(t, b, apiclient.StatusOffline)
	eventually(t, "B closes A's subscription", func() error {
		if sub := b.overview(t).DataplaneInsight.Subscriptions[0]; sub.DisconnectTime == nil {
			return errors.New("still open")
		}
		return nil
	})

	connectProxy(t, b, caOfA, token)
	ov = requireStatus(t, b, apiclient.StatusOnline)
	subs := ov.DataplaneInsight.Subscriptions
	require.Len(t, subs, 2)
	require.Equal(t, b.instanceID(t), subs[1].ControlPlaneInstanceID)
}

// A control plane upgraded from keeping its signing keys in the work
// directory moves them into its SQLite store: tokens issued before keep
// working, and the keys are GlobalSecrets, which only admins read.
func TestTokensIssuedBeforeTheUpgradeKeepWorking(t *testing.T) {
	dir := t.TempDir()
	old, err := authn.Load(dir, nil) // the keys as the previous version kept them
	require.NoError(t, err)
	token, err := old.IssueUser("alice", []string{authn.AdminGroup}, 0)
	require.NoError(t, err)
	user, err := old.IssueUser("bob", []string{"dev"}, 0)
	require.NoError(t, err)

	cfg := replicaConfig(t, dir)
	cfg.Store.Type = cpconfig.StoreSQLite
	cfg.APIServer.Authn.LocalhostIsAdmin = false
	r := startReplica(t, cfg)
	get := func(path, token string) int {
		req, err := http.NewRequest(http.MethodGet, "http://"+r.cp.Addrs()["api"]+path, nil)
		require.NoError(t, err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, http.StatusOK, get("/global-secrets/"+authn.UserSigningKeySecret, token), "the old admin token works")
	require.Equal(t, http.StatusForbidden, get("/global-secrets/"+authn.UserSigningKeySecret, user), "non-admins never read the keys")
	require.Equal(t, http.StatusUnauthorized, get("/global-secrets", ""))
	_, err = r.cp.Store().Get(t.Context(), resource.KindGlobalSecret, resource.Key{Name: authn.DataplaneSigningKeySecret})
	require.NoError(t, err, "the keys are in the store")
}

// A leader whose first-start steps fail (its store is away) retries them
// until they succeed.
func TestTheLeaderRetriesTheFirstStartSteps(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	away := &dyingStore{Store: st}
	e := newHandElector()
	r := startReplica(t, replicaConfig(t, t.TempDir()), controlplane.WithStore(away, e, true))
	away.dead.Store(true)
	e.grant <- struct{}{}
	requireLeading(t, r, true)
	away.dead.Store(false)
	eventually(t, "the default mesh, once the store is back", func() error {
		_, err := st.Get(t.Context(), resource.KindMesh, resource.Key{Name: resource.DefaultMesh})
		return err
	})
}
