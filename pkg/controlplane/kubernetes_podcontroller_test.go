package controlplane_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/mads"
)

// startKubernetesMode runs a control plane in Kubernetes mode on the
// harness's API server, outside the cluster on its kubeconfig, every
// listener on 127.0.0.1, until the test ends. Proxies are not
// authenticated unless configure (may be nil) says otherwise.
func startKubernetesMode(t *testing.T, env *k8stest.Env, configure func(*cpconfig.Config)) *controlplane.ControlPlane {
	t.Helper()
	env.EnsureNamespace(t, "kuma-system")
	t.Setenv("KUBECONFIG", env.KubeconfigPath)
	cfg, err := cpconfig.Load("", func(k string) (string, bool) {
		if k == "KUMA_ENVIRONMENT" {
			return cpconfig.EnvironmentKubernetes, true
		}
		return "", false
	})
	require.NoError(t, err)
	require.Equal(t, cpconfig.StoreKubernetes, cfg.Store.Type)
	cfg.General.WorkDir = t.TempDir()
	cfg.ListenOn("127.0.0.1")
	cfg.DPServer.Authn.DPProxy.Type = cpconfig.DPProxyAuthnNone
	if configure != nil {
		configure(&cfg)
	}

	cp, err := controlplane.New(t.Context(), cfg, nil)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return cp
}

// TestKubernetesModePodController: in Kubernetes mode the control plane
// turns the guide's Pod into a Dataplane, MADS tells Prometheus its metrics
// endpoint (port 1234, /non-standard-path) with the Pod's name and
// namespace, and the target goes with the Pod.
func TestKubernetesModePodController(t *testing.T) {
	env := k8stest.Get(t)
	c := env.Client(t)
	ctx := t.Context()
	addrs := startKubernetesMode(t, env, nil).Addrs()

	// A mesh with metrics on, the Pod's (kuma.io/mesh).
	mesh := &v1alpha1.Mesh{ObjectMeta: metav1.ObjectMeta{GenerateName: "podctl-"},
		Spec: json.RawMessage(`{"metrics":{"enabledBackend":"prometheus-1","backends":[{"name":"prometheus-1","type":"prometheus"}]}}`)}
	require.NoError(t, c.Create(ctx, mesh))
	t.Cleanup(func() { _ = c.Delete(context.Background(), mesh) })

	ns := env.Namespace(t, "kuma-example", map[string]string{podcontroller.SidecarInjection: "enabled"})
	require.NoError(t, c.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kuma-tcp-echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "kuma-tcp-echo"},
			Ports: []corev1.ServicePort{{Port: 8000, TargetPort: intstr.FromInt32(9000)}}},
	}))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "kuma-tcp-echo-5c89f4d995-85znn", Labels: map[string]string{"app": "kuma-tcp-echo"},
			Annotations: map[string]string{
				podcontroller.Mesh:        mesh.Name,
				podcontroller.MetricsPort: "1234",
				podcontroller.MetricsPath: "/non-standard-path",
			}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "kuma-tcp-echo"}}},
	}
	require.NoError(t, c.Create(ctx, pod))
	ip := loopback.Host()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	require.NoError(t, c.Status().Update(ctx, pod))

	dataplane := pod.Name + "." + ns
	target := func() *mads.TargetGroup {
		for _, g := range httpSD(t, addrs["mads"]) {
			if g.Labels[mads.MetaDataplane] == dataplane {
				return &g
			}
		}
		return nil
	}
	var group *mads.TargetGroup
	require.Eventually(t, func() bool { group = target(); return group != nil }, 60*time.Second, 50*time.Millisecond,
		"MADS target of %s", dataplane)
	require.Equal(t, []string{ip + ":1234"}, group.Targets)
	require.Equal(t, "/non-standard-path", group.Labels["__metrics_path__"])
	require.Equal(t, mesh.Name, group.Labels[mads.MetaMesh])
	require.Equal(t, "kuma-tcp-echo_"+ns+"_svc_8000", group.Labels[mads.MetaService])
	require.Equal(t, pod.Name, group.Labels[mads.MetaLabelPrefix+"k8s_kuma_io_name"])
	require.Equal(t, ns, group.Labels[mads.MetaLabelPrefix+"k8s_kuma_io_namespace"])

	// The controller's work is counted on the control plane's /metrics.
	status, body := do(t, http.MethodGet, "http://"+addrs["diagnostics"]+"/metrics", "")
	require.Equal(t, http.StatusOK, status)
	require.True(t, strings.Contains(body, `k8s_pod_controller_reconciles_total{result="created",zone="Standalone"}`), "no reconcile metric")

	require.NoError(t, c.Delete(ctx, pod, client.GracePeriodSeconds(0)))
	require.Eventually(t, func() bool { return target() == nil }, 60*time.Second, 50*time.Millisecond,
		"the MADS target of the deleted Pod stays")
}
