package kumadp

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/stats"
	"github.com/kumametrics/mesh/pkg/store"
)

const waitTimeout = 30 * time.Second

// testControlPlane is a real kuma-cp, in-process on 127.0.0.1 ports chosen
// by the system, with a memory store.
type testControlPlane struct {
	cp      *controlplane.ControlPlane
	workDir string
}

func startControlPlane(t *testing.T) *testControlPlane {
	t.Helper()
	cfg := cpconfig.Default()
	cfg.General.WorkDir = t.TempDir()
	cfg.Store.Type = cpconfig.StoreMemory
	cfg.ListenOn("127.0.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	cp, err := controlplane.New(ctx, cfg, nil)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	return &testControlPlane{cp: cp, workDir: cfg.General.WorkDir}
}

// token issues a dataplane token with the control plane's key; validFor < 0
// issues one that expired -validFor ago.
func (c *testControlPlane) token(t *testing.T, name string, tags map[string][]string, validFor time.Duration) string {
	t.Helper()
	now := time.Now
	if validFor < 0 {
		shift := 2 * validFor
		now = func() time.Time { return time.Now().Add(shift) }
		validFor = -validFor
	}
	iss, err := authn.Load(c.workDir, now)
	require.NoError(t, err)
	token, err := iss.IssueDataplane("default", name, tags, validFor)
	require.NoError(t, err)
	return token
}

// refusedAtLeast waits until dp_server_dataplane_refused_total{reason} of
// the control plane's metrics reaches n.
func (c *testControlPlane) refusedAtLeast(t *testing.T, reason string, n float64) {
	t.Helper()
	series := fmt.Sprintf(`dp_server_dataplane_refused_total{reason=%q,zone="Standalone"}`, reason)
	eventually(t, func() error {
		_, body := adminGet(t, "http://"+c.cp.Addrs()["diagnostics"]+"/metrics")
		v, err := strconv.ParseFloat(metricValue(body, series), 64)
		if err != nil || v < n {
			return fmt.Errorf("%s = %v (%v)", series, v, err)
		}
		return nil
	})
}

// metricValue is the value of the series (name with its labels as rendered)
// in a Prometheus text body; "" when absent.
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// dataplaneHeldPort is a Dataplane whose inbound port the test holds, so
// that nothing of the proxy's can take a port another test needs: the proxy
// cannot bind it and rejects the config, which does not matter to tests of
// the connection to the control plane.
func dataplaneHeldPort(t *testing.T, name, service string) *resource.Object {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	dp, err := loadDataplane("", fmt.Sprintf("type: Dataplane\nmesh: default\nname: %s\nnetworking:\n  address: 127.0.0.1\n  inbound:\n  - port: %d\n    tags:\n      kuma.io/service: %s\n",
		name, ln.Addr().(*net.TCPAddr).Port, service))
	require.NoError(t, err)
	return dp
}

// runningAgent is an Agent running against a test control plane.
type runningAgent struct {
	*Agent
	log *syncbuffer.Buffer
}

func runAgent(t *testing.T, c *testControlPlane, dp *resource.Object, configure func(*Config)) *runningAgent {
	t.Helper()
	return runAgentAt(t, c.cp.Addrs()["dp-server"], filepath.Join(c.workDir, dpconfig.ServerCAFile), dp, configure)
}

// runAgentAt runs an Agent against the dataplane server at cpAddr, trusted
// by caFile, until the test ends; its log is shown when the test failed.
func runAgentAt(t *testing.T, cpAddr, caFile string, dp *resource.Object, configure func(*Config)) *runningAgent {
	t.Helper()
	log := &syncbuffer.Buffer{}
	cfg := Config{
		CPAddress: "https://" + cpAddr, CACertFile: caFile,
		Dataplane: dp, AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond, TokenPollInterval: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	configure(&cfg)
	a, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		if t.Failed() {
			t.Logf("kuma-dp log:\n%s", log.String())
		}
	})
	return &runningAgent{Agent: a, log: log}
}

// stat reads one series of the proxy's statistics, as the metrics endpoint
// renders them.
func (r *runningAgent) stat(t *testing.T, series string) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, r.Stats().WritePrometheus(&b, stats.RenderOptions{}))
	return metricValue(b.String(), series)
}

func eventually(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", waitTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// TestTokenRotationWithoutRestart: a proxy whose token expired says so at
// once, is refused by the control plane (said once, not at every retry),
// and connects without a restart once a new token is written to its file.
func TestTokenRotationWithoutRestart(t *testing.T) {
	c := startControlPlane(t)
	dp := dataplaneHeldPort(t, "web-1", "web")
	tokenFile := filepath.Join(t.TempDir(), "web-1.token")
	writeFile(t, tokenFile, c.token(t, "web-1", map[string][]string{"kuma.io/service": {"web"}}, -time.Hour)+"\n")
	tok, err := loadToken(tokenFile, "")
	require.NoError(t, err)
	exp, err := authn.InspectDataplaneToken(tok)
	require.NoError(t, err)
	a := runAgent(t, c, dp, func(cfg *Config) { cfg.Token, cfg.TokenFile = tok, tokenFile })

	// Said at once, before any connection: the log and the gauges.
	require.Contains(t, a.log.String(), `msg="the dataplane token expired: the control plane refuses it from the next connection on"`)
	require.Contains(t, a.log.String(), "expired_at="+exp.ExpiresAt.UTC().Format(time.RFC3339))
	require.Equal(t, "1", a.stat(t, "kuma_dp_dataplane_token_expired"))
	require.Equal(t, fmt.Sprint(exp.ExpiresAt.Unix()), a.stat(t, "kuma_dp_dataplane_token_expiration_timestamp_seconds"))

	// Refused again and again, said once.
	c.refusedAtLeast(t, dpserver.ReasonExpiredToken, 3)
	require.Equal(t, "1", a.stat(t, "kuma_dp_dataplane_token_refused"))
	logs := a.log.String()
	require.Equal(t, 1, strings.Count(logs, `msg="the control plane refused this proxy"`), logs)
	require.Contains(t, logs, "code=Unauthenticated")
	require.Contains(t, logs, "token expired at")
	require.Contains(t, logs, "write a token the control plane accepts (kumactl generate dataplane-token --mesh default --name web-1) to "+tokenFile)
	require.NotContains(t, logs, "the last config stays applied", "no config was ever received")
	require.NotContains(t, logs, "control plane stream ended")

	// A new token in the file: the proxy connects, without a restart.
	writeFile(t, tokenFile, c.token(t, "web-1", map[string][]string{"kuma.io/service": {"web"}}, time.Hour))
	eventually(t, func() error {
		if v := a.stat(t, "envoy_control_plane_connected_state"); v != "1" {
			return fmt.Errorf("connected_state %s", v)
		}
		return nil
	})
	require.Equal(t, "0", a.stat(t, "kuma_dp_dataplane_token_refused"))
	require.Equal(t, "0", a.stat(t, "kuma_dp_dataplane_token_expired"))
	require.NotEqual(t, fmt.Sprint(exp.ExpiresAt.Unix()), a.stat(t, "kuma_dp_dataplane_token_expiration_timestamp_seconds"))
	require.Contains(t, a.log.String(), "the dataplane token file changed")
	stored, err := c.cp.Store().Get(t.Context(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "web-1"})
	require.NoError(t, err)
	require.Equal(t, []string{"web"}, stored.Dataplane().Services())
}

// TestRefusedServiceIsSaidOnce: a token that does not allow the Dataplane's
// service is noticed at start, refused by the control plane with
// PermissionDenied, and said once.
func TestRefusedServiceIsSaidOnce(t *testing.T) {
	c := startControlPlane(t)
	dp := dataplaneHeldPort(t, "frontend-1", "payments")
	token := c.token(t, "frontend-1", map[string][]string{"kuma.io/service": {"frontend"}}, 0)
	a := runAgent(t, c, dp, func(cfg *Config) { cfg.Token = token })
	require.Contains(t, a.log.String(), `msg="the dataplane token does not allow this Dataplane: the control plane will refuse it"`)
	require.Equal(t, "0", a.stat(t, "kuma_dp_dataplane_token_expiration_timestamp_seconds"), "it never expires")
	c.refusedAtLeast(t, dpserver.ReasonServiceNotAllowed, 3)
	logs := a.log.String()
	require.Equal(t, 1, strings.Count(logs, `msg="the control plane refused this proxy"`), logs)
	require.Contains(t, logs, "code=PermissionDenied")
	require.Contains(t, logs, `networking.inbound[0] has kuma.io/service \"payments\", but the dataplane token allows only \"frontend\"`)
	require.Contains(t, logs, "restart kuma-dp with a token the control plane accepts")
	require.NotContains(t, logs, "the last config stays applied")
	require.Equal(t, "1", a.stat(t, "kuma_dp_dataplane_token_refused"))
	require.Equal(t, "0", a.stat(t, "envoy_control_plane_connected_state"))
	_, err := c.cp.Store().Get(t.Context(), resource.KindDataplane, resource.Key{Mesh: "default", Name: "frontend-1"})
	require.ErrorIs(t, err, store.ErrNotFound)
}

// TestStreamEndMessages: "the last config stays applied" is said only when
// a config was applied.
func TestStreamEndMessages(t *testing.T) {
	dp, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	log := &syncbuffer.Buffer{}
	a, err := New(Config{CPAddress: "https://127.0.0.1:1", InsecureSkipVerify: true, Dataplane: dp,
		Log: slog.New(slog.NewTextHandler(log, nil))})
	require.NoError(t, err)
	defer a.metrics.close()
	defer a.proxy.Close()
	lastRefusal := ""
	unavailable := status.Error(codes.Unavailable, "connection refused")
	a.reportStreamEnd(unavailable, &lastRefusal, time.Second)
	require.Contains(t, log.String(), `msg="control plane stream ended before any config was received"`)
	require.NotContains(t, log.String(), "stays applied")

	cfg, err := anypb.New(&meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Outbounds: []*meshv1.Outbound{{
		Address: "127.0.0.1", Port: 0, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:test",
	}}})
	require.NoError(t, err)
	require.NoError(t, a.apply(&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: []*anypb.Any{cfg}}))
	a.reportStreamEnd(unavailable, &lastRefusal, time.Second)
	require.Contains(t, log.String(), `msg="control plane stream ended; the last config stays applied"`)

	refused := status.Error(codes.PermissionDenied, "dataplane default/web-1: no")
	a.reportStreamEnd(refused, &lastRefusal, time.Second)
	a.reportStreamEnd(refused, &lastRefusal, time.Second)
	require.Equal(t, 1, strings.Count(log.String(), "the control plane refused this proxy"), "said once")
	a.reportStreamEnd(status.Error(codes.PermissionDenied, "dataplane default/web-1: another reason"), &lastRefusal, time.Second)
	require.Equal(t, 2, strings.Count(log.String(), "the control plane refused this proxy"), "a new reason is said")

	// No Dataplane yet (Kubernetes: the pod controller makes it): said once.
	notFound := status.Error(codes.NotFound, "dataplane default/web-1: no such Dataplane is stored")
	for range 3 {
		a.reportStreamEnd(notFound, &lastRefusal, time.Second)
	}
	require.Equal(t, 1, strings.Count(log.String(), `msg="the control plane has no Dataplane for this proxy yet; retrying" reason="dataplane default/web-1: no such Dataplane is stored"`))
	require.Equal(t, 2, strings.Count(log.String(), "the control plane refused this proxy"), "not a refusal")
}

func TestTokenFileThatCannotBeReadKeepsTheToken(t *testing.T) {
	dp, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "token")
	log := &syncbuffer.Buffer{}
	src := newTokenSource("first", file, time.Hour, dp.Meta.Key(), dp, stats.NewStore(), slog.New(slog.NewTextHandler(log, nil)))
	require.Contains(t, log.String(), "the dataplane token cannot be read")
	src.reload()
	src.reload()
	require.Equal(t, "first", src.current())
	require.Equal(t, 1, strings.Count(log.String(), "cannot read the dataplane token file; the current token stays in use"), "said once")
	writeFile(t, file, "  \n")
	src.reload()
	require.Equal(t, "first", src.current())
	require.Contains(t, log.String(), "the file is empty")
	writeFile(t, file, "second\n")
	src.reload()
	require.Equal(t, "second", src.current())
	select {
	case <-src.changed:
	default:
		t.Fatal("a new token is signalled")
	}
	md, err := src.GetRequestMetadata(t.Context())
	require.NoError(t, err)
	require.Equal(t, map[string]string{"authorization": "Bearer second"}, md)
	none := newTokenSource("", "", 0, dp.Meta.Key(), dp, stats.NewStore(), slog.New(slog.DiscardHandler))
	md, err = none.GetRequestMetadata(t.Context())
	require.NoError(t, err)
	require.Empty(t, md, "no token, no header")
}

// serviceAccountToken is a token as Kubernetes projects it into a Pod
// (RS256; kuma-dp reads it without the key).
func serviceAccountToken(ns, sa, pod string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"aud":["https://kubernetes.default.svc"],"exp":%d,"kubernetes.io":{"namespace":%q,"pod":{"name":%q,"uid":"u"},`+
			`"serviceaccount":{"name":%q,"uid":"s"}},"sub":"system:serviceaccount:%s:%s"}`, exp.Unix(), ns, pod, sa, ns, sa))) + ".c2ln"
}

// TestServiceAccountTokenIsShown: on Kubernetes kuma-dp presents its Pod's
// ServiceAccount token; it says which one it holds, publishes its expiry and
// warns when it cannot stand for the dataplane, instead of calling it an
// unreadable dataplane token.
func TestServiceAccountTokenIsShown(t *testing.T) {
	key := resource.Key{Mesh: "default", Name: "web-5c89f4d995-85znn.kuma-example"}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	file := filepath.Join(t.TempDir(), "token")
	for _, tc := range []struct {
		name, token string
		warn        string
	}{
		{"the Pod's", serviceAccountToken("kuma-example", "web", "web-5c89f4d995-85znn", exp), ""},
		{"bound to no Pod", serviceAccountToken("kuma-example", "web", "", exp), ""},
		{"of another namespace", serviceAccountToken("other", "web", "web-5c89f4d995-85znn", exp),
			`msg="the ServiceAccount token is of another namespace than the dataplane <pod>.<namespace>: the control plane will refuse it" token_namespace=other`},
		{"bound to another Pod", serviceAccountToken("kuma-example", "web", "web-1", exp),
			`msg="the ServiceAccount token is bound to another Pod than the dataplane's: the control plane will refuse it" token_pod=web-1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := &syncbuffer.Buffer{}
			st := stats.NewStore()
			src := newTokenSource(tc.token, file, time.Hour, key, nil, st, slog.New(slog.NewTextHandler(log, nil)))
			logs := log.String()
			require.Contains(t, logs, `msg="Kubernetes ServiceAccount token loaded" namespace=`)
			require.NotContains(t, logs, "cannot be read")
			require.NotContains(t, logs, "dataplane token does not name the services")
			if tc.warn == "" {
				require.NotContains(t, logs, "level=WARN")
			} else {
				require.Contains(t, logs, tc.warn)
			}
			var b bytes.Buffer
			require.NoError(t, st.WritePrometheus(&b, stats.RenderOptions{}))
			require.Equal(t, fmt.Sprint(exp.Unix()), metricValue(b.String(), "kuma_dp_dataplane_token_expiration_timestamp_seconds"))
			require.Equal(t, "0", metricValue(b.String(), "kuma_dp_dataplane_token_expired"))
			require.Contains(t, src.fix(), "the token of the ServiceAccount of the Pod that owns the Dataplane "+key.Name)
		})
	}

	// A name without a namespace is in the control plane's namespace: not
	// said to be another one.
	log := &syncbuffer.Buffer{}
	newTokenSource(serviceAccountToken("kuma-system", "gateway", "", exp), "", time.Hour, resource.Key{Mesh: "default", Name: "gateway-1"}, nil,
		stats.NewStore(), slog.New(slog.NewTextHandler(log, nil)))
	require.NotContains(t, log.String(), "level=WARN")

	// A dataplane token after a ServiceAccount token: the fix is kumactl's again.
	src := newTokenSource(serviceAccountToken("kuma-example", "web", "", exp), "", time.Hour, key, nil, stats.NewStore(), slog.New(slog.DiscardHandler))
	src.set("a.b.c")
	require.Contains(t, src.fix(), "kumactl generate dataplane-token --mesh default --name "+key.Name)
}
