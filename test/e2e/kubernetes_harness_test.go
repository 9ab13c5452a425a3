package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/mads"
)

// The admission webhook's port (kuma-cp's default), on the control plane's host.
const cpAdmissionPort = "5443"

// startKubernetesControlPlane runs the built kuma-cp in Kubernetes mode
// outside the cluster of env, as a user would on a kubeconfig (its servers
// on a loopback host of its own), and registers its validating webhook by
// URL with the CA of its work directory. The webhook is deleted at cleanup,
// before kuma-cp stops.
func startKubernetesControlPlane(t *testing.T, env *k8stest.Env) *controlPlane {
	t.Helper()
	env.EnsureNamespace(t, "kuma-system")
	cp := newControlPlane(t, t.TempDir())
	cp.env = append(cp.env,
		"KUMA_ENVIRONMENT=kubernetes", "KUBECONFIG="+env.KubeconfigPath,
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS="+cp.host,
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT="+cpAdmissionPort,
	)
	cp.start()
	// Registered by URL as the README tells a user of a control plane
	// outside the cluster: kumactl install webhooks. The validating one
	// only: no kubelet runs these Pods (the test plays its part, without
	// the transparent proxy the injector would set up).
	var stderr strings.Builder
	cmd := exec.Command(filepath.Join(binDir, "kumactl"), "install", "webhooks", "--webhooks", "validating",
		"--url", "https://"+net.JoinHostPort(cp.host, cpAdmissionPort),
		"--ca-cert-file", filepath.Join(cp.workDir, "admission-server-ca.pem"))
	cmd.Stderr = &stderr
	registration, err := cmd.Output()
	require.NoError(t, err, "kumactl install webhooks: %s", stderr.String())
	env.RegisterValidatingWebhook(t, install.WebhookConfigurationName, registration, invalidMesh, invalidMeshCause)
	return cp
}

// invalidMesh is a Mesh the CRD's schema accepts and the webhook refuses
// with invalidMeshCause.
const (
	invalidMesh = `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: invalid
spec:
  metrics:
    enabledBackend: prometheus-2
    backends:
    - name: prometheus-1
      type: prometheus
`
	invalidMeshCause = "spec.metrics.enabledBackend: names no backend; defined backends: prometheus-1"
)

// kubectl runs the harness's kubectl with stdin (may be empty) and fails
// the test when it fails; it returns stdout.
func kubectl(t *testing.T, env *k8stest.Env, stdin string, args ...string) string {
	t.Helper()
	var in []byte
	if stdin != "" {
		in = []byte(stdin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, _, err := env.Kubectl(ctx, in, args...)
	require.NoError(t, err)
	return out
}

// pod is a Pod of the test (no kubelet runs: the test plays its part) and
// the processes that stand for its containers.
type pod struct {
	name, namespace string
	// ip is the Pod's IP, a loopback address of its own: its proxy's
	// inbound and metrics endpoint listen there.
	ip string
	// appPort is where its application listens on 127.0.0.1 (the
	// container port: the Dataplane's inbound forwards there).
	appPort int
	app     *process
	proxy   *dataplane
}

// dataplaneName is the Pod's Dataplane in the control plane's view.
func (p *pod) dataplaneName() string { return p.name + "." + p.namespace }

var listeningOn = regexp.MustCompile(`msg=listening .*address=127\.0\.0\.1:(\d+)`)

// startPodApp runs the demo backend for a Pod on 127.0.0.1 and a port the
// kernel picks (the Pod's container port), standing for its container.
func startPodApp(t *testing.T, name string) (*process, int) {
	t.Helper()
	app := startApp(t, "backend", "--name", name, "--listen", "127.0.0.1:0", "--error-rate", "0", "--latency", "0")
	var port int
	eventually(t, 30*time.Second, func() error {
		m := listeningOn.FindStringSubmatch(app.log.String())
		if m == nil {
			return fmt.Errorf("demo-app did not say where it listens: %s", app.log.String())
		}
		port, _ = strconv.Atoi(m[1])
		return nil
	})
	return app, port
}

// podManifest is a Pod of the guide's kuma-tcp-echo workload, with the
// guide's metrics annotations (or others), running as ServiceAccount sa,
// its container port named http.
func podManifest(name, namespace, sa string, port int, annotations map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    app: kuma-tcp-echo\n", name, namespace)
	if len(annotations) > 0 {
		b.WriteString("  annotations:\n")
		for k, v := range annotations {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
	}
	fmt.Fprintf(&b, "spec:\n  serviceAccountName: %s\n  containers:\n  - name: kuma-tcp-echo\n    image: kumahq/kuma-tcp-echo:0.1.0\n"+
		"    ports:\n    - name: http\n      containerPort: %d\n", sa, port)
	return b.String()
}

// setPodRunning does the kubelet's part: the Pod runs with ip and is Ready.
func setPodRunning(t *testing.T, c client.Client, namespace, name, ip string) {
	t.Helper()
	ctx := t.Context()
	var p corev1.Pod
	require.NoError(t, c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &p))
	now := metav1.Now()
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "127.0.0.1", StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: p.Spec.Containers[0].Name, Image: p.Spec.Containers[0].Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	require.NoError(t, c.Status().Update(ctx, &p))
}

// startPodProxy runs kuma-dp for the Pod as its sidecar would: named
// <pod>.<namespace> in mesh default, without a Dataplane file, presenting a
// ServiceAccount token bound to the Pod (what the kubelet mounts; here from
// `kubectl create token`). It waits until the proxy applied its config.
func startPodProxy(t *testing.T, env *k8stest.Env, cp *controlPlane, p *pod, sa string) {
	t.Helper()
	token := kubectl(t, env, "", "create", "token", sa, "--namespace", p.namespace, "--bound-object-kind", "Pod", "--bound-object-name", p.name)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(strings.TrimSpace(token)), 0o600))
	adminHost := loopback.Host()
	p.proxy = &dataplane{name: p.dataplaneName(), adminAddr: hostPort(adminHost, adminPort), tokenFile: tokenFile}
	p.proxy.process = startProcess(t, filepath.Join(binDir, "kuma-dp"), nil, "run",
		"--cp-address", "https://"+cp.dpAddr,
		"--ca-cert-file", filepath.Join(cp.workDir, "dp-server-ca.pem"),
		"--name", p.dataplaneName(), "--mesh", "default",
		"--dataplane-token-file", tokenFile,
		"--admin-address", adminHost, "--admin-port", strconv.Itoa(adminPort), "--drain-time", "1s")
	eventually(t, 60*time.Second, func() error {
		select {
		case err := <-p.proxy.done:
			p.proxy.done <- err
			return fmt.Errorf("kuma-dp exited: %v\n%s", err, p.proxy.log.String())
		default:
		}
		return httpOK(p.proxy.admin("/ready"))
	})
}

// httpSD returns MADS' http_sd target groups by dataplane.
func httpSD(t *testing.T, madsAddr string) map[string]mads.TargetGroup {
	t.Helper()
	var groups []mads.TargetGroup
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, "http://"+madsAddr+mads.HTTPSDPath)), &groups))
	out := map[string]mads.TargetGroup{}
	for _, g := range groups {
		out[g.Labels[mads.MetaDataplane]] = g
	}
	return out
}
