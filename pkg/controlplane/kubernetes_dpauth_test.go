package controlplane_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/kumadp"
	"github.com/kumametrics/mesh/pkg/kumadp/kumadptest"
)

// TestKubernetesModeAuthenticatesProxiesByServiceAccount: in Kubernetes
// mode proxies authenticate with their Pod's ServiceAccount token by
// default. kuma-dp --name <pod>.<namespace> --mesh default with the Pod's
// token gets the Pod's Dataplane's config; a proxy with another
// ServiceAccount's token for it is refused; the Dataplane stays after the
// proxy deregisters (the pod controller owns it).
func TestKubernetesModeAuthenticatesProxiesByServiceAccount(t *testing.T) {
	env := k8stest.Get(t)
	c := env.Client(t)
	ctx := t.Context()
	cp, cfg := startKubernetesMode(t, nil)
	require.Equal(t, cpconfig.DPProxyAuthnServiceAccountToken, cfg.DPServer.Authn.DPProxy.Type, "the default in Kubernetes mode")

	// A Pod running as ServiceAccount web, and its Dataplane as the pod
	// controller makes it.
	ns := env.Namespace(t, "kuma-example", nil)
	for _, sa := range []string{"web", "db"} {
		require.NoError(t, c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1"},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	require.NoError(t, c.Create(ctx, pod))
	host := loopback.Host()
	yes := true
	require.NoError(t, c.Create(ctx, &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, Controller: &yes}}},
		Mesh: "default",
		Spec: json.RawMessage(`{"networking":{"address":"` + host + `","inbound":[{"port":8080,"tags":{"kuma.io/service":"web_` + ns + `_svc_80"}}]}}`),
	}))
	token := func(sa string, bound *corev1.Pod) string {
		t.Helper()
		tr := &authenticationv1.TokenRequest{}
		if bound != nil {
			tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		require.NoError(t, c.SubResource("token").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}, tr))
		return tr.Status.Token
	}

	name := "web-1." + ns
	proxy := func(token string) *kumadptest.Proxy {
		t.Helper()
		file := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(file, []byte(token), 0o600))
		return kumadptest.Run(t, kumadp.Config{CPAddress: "https://" + cp.Addrs()["dp-server"], CACertFile: filepath.Join(cfg.General.WorkDir, "dp-server-ca.pem"),
			Name: name, Mesh: "default", Token: token, TokenFile: file, AdminAddress: "127.0.0.1:0", DrainTimeout: time.Second,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	}

	other := proxy(token("db", nil))
	require.Eventually(t, func() bool { return refused(t, cp, dpserver.ReasonWrongServiceAccount) >= 1 }, 30*time.Second, 20*time.Millisecond)
	other.Stop()
	cfgNow, _ := other.Current()
	require.Nil(t, cfgNow, "refused: no config")

	own := proxy(token("web", pod))
	require.Eventually(t, func() bool { got, _ := own.Current(); return got != nil }, 30*time.Second, 20*time.Millisecond)
	got, _ := own.Current()
	require.Equal(t, name, got.GetName())
	require.Equal(t, host, got.GetInbounds()[0].GetAddress())
	own.Stop()
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &v1alpha1.Dataplane{}), "the Dataplane stays with its Pod")
}

// startKubernetesMode runs a control plane in Kubernetes mode on the test's
// API server, outside the cluster on a kubeconfig, every listener on
// 127.0.0.1: its configuration is loaded with KUMA_ENVIRONMENT=kubernetes,
// then changed by configure (may be nil).
func startKubernetesMode(t *testing.T, configure func(*cpconfig.Config)) (*controlplane.ControlPlane, cpconfig.Config) {
	t.Helper()
	env := k8stest.Get(t)
	env.EnsureNamespace(t, "kuma-system")
	t.Setenv("KUBECONFIG", env.KubeconfigPath)
	cfg, err := cpconfig.Load("", func(k string) (string, bool) {
		if k == "KUMA_ENVIRONMENT" {
			return cpconfig.EnvironmentKubernetes, true
		}
		return "", false
	})
	require.NoError(t, err)
	cfg.General.WorkDir = t.TempDir()
	cfg.ListenOn("127.0.0.1")
	if configure != nil {
		configure(&cfg)
	}
	cp, err := controlplane.New(t.Context(), cfg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return cp, cfg
}

// refused reads dp_server_dataplane_refused_total{reason} from the control
// plane's diagnostics.
func refused(t *testing.T, cp *controlplane.ControlPlane, reason string) float64 {
	t.Helper()
	_, body := do(t, "GET", "http://"+cp.Addrs()["diagnostics"]+"/metrics", "")
	prefix := `dp_server_dataplane_refused_total{reason="` + reason + `",zone="Standalone"} `
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no %s in the control plane's metrics", prefix)
	return 0
}
