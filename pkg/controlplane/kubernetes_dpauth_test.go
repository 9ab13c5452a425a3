package controlplane_test

import (
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
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/kumadp"
	"github.com/kumametrics/mesh/pkg/kumadp/kumadptest"
)

// TestKubernetesModeAuthenticatesProxiesByServiceAccount: in Kubernetes
// mode (dpServer.authn.dpProxy.type serviceAccountToken, its default) the
// pod controller makes a Pod's Dataplane, and kuma-dp --name
// <pod>.<namespace> --mesh default with the Pod's ServiceAccount token and
// no Dataplane file gets its config; a proxy with another ServiceAccount's
// token for it is refused; the Dataplane stays after the proxy deregisters
// (it is the Pod's).
func TestKubernetesModeAuthenticatesProxiesByServiceAccount(t *testing.T) {
	env := k8stest.Get(t)
	c := env.Client(t)
	ctx := t.Context()
	var cfg cpconfig.Config
	cp := startKubernetesMode(t, env, func(c *cpconfig.Config) {
		// Kubernetes mode's default (cpconfig's TestDataplaneProxyAuthnFollowsTheEnvironment).
		c.DPServer.Authn.DPProxy.Type = cpconfig.DPProxyAuthnServiceAccountToken
		cfg = *c
	})

	// A Pod of a Service in a namespace with sidecar injection, running as
	// ServiceAccount web, with an IP (no kubelet here: the test sets it).
	ns := env.Namespace(t, "kuma-example", map[string]string{podcontroller.SidecarInjection: "enabled"})
	for _, sa := range []string{"web", "db"} {
		require.NoError(t, c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
	}
	require.NoError(t, c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	require.NoError(t, c.Create(ctx, pod))
	host := loopback.Host()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: host, PodIPs: []corev1.PodIP{{IP: host}}}
	require.NoError(t, c.Status().Update(ctx, pod))
	require.Eventually(t, func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &v1alpha1.Dataplane{}) == nil
	}, 60*time.Second, 50*time.Millisecond, "the pod controller makes the Pod's Dataplane")

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
	require.Equal(t, "web_"+ns+"_svc_80", got.GetInbounds()[0].GetTags()["kuma.io/service"], "the pod controller's Dataplane")
	own.Stop()
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web-1"}, &v1alpha1.Dataplane{}), "the Dataplane stays with its Pod")
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
