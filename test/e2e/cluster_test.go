package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/netnstest"
	"github.com/kumametrics/mesh/internal/nodeagent"
	"github.com/kumametrics/mesh/internal/testproc"
	"github.com/kumametrics/mesh/pkg/dpconfig"
)

// prometheusModuleBinary is Prometheus built from its Go module by
// scripts/prometheus-tool.sh (make prometheus-bin), which has kuma_sd_configs.
func prometheusModuleBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("KUMA_TEST_PROMETHEUS")
	if path == "" {
		path = filepath.Join(filepath.Dir(k8stest.AssetsDir()), "prometheus-v3.16.0", "prometheus")
	}
	if _, err := os.Stat(path); err != nil {
		testproc.SkipOrFail(t, "Prometheus built from its Go module missing at %s: run `make prometheus-bin` (or set KUMA_TEST_PROMETHEUS)", path)
	}
	return path
}

// workloadManifest is a Deployment of one Pod in kuma-example, labelled
// app: name, its container of image listening on port, its template
// annotated with annotations (keys sorted), and a Service selecting it
// (port 80 to port).
func workloadManifest(name, image string, port int, annotations map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: apps/v1
kind: Deployment
metadata:
  namespace: kuma-example
  name: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
`, name)
	if len(annotations) > 0 {
		b.WriteString("      annotations:\n")
		for _, k := range slices.Sorted(maps.Keys(annotations)) {
			fmt.Fprintf(&b, "        %s: %q\n", k, annotations[k])
		}
	}
	fmt.Fprintf(&b, `    spec:
      containers:
      - name: %[1]s
        image: %[2]s
        ports:
        - containerPort: %[3]d
---
apiVersion: v1
kind: Service
metadata:
  namespace: kuma-example
  name: %[1]s
spec:
  selector:
    app: %[1]s
  ports:
  - port: 80
    targetPort: %[3]d
`, name, image, port)
	return b.String()
}

// clusterWorkloads are the guide's kuma-tcp-echo Deployment with its two
// metrics annotations, another meshed workload that calls it, and a
// workload exposing its own metrics with the guide's prometheus.io
// annotations ("Expose metrics from applications"), each with its Service.
var clusterWorkloads = strings.Join([]string{
	workloadManifest("kuma-tcp-echo", "kumahq/kuma-tcp-echo:0.1.0", 8000, guideMetricsAnnotations),
	workloadManifest("echo-client", "kumahq/kuma-tcp-echo:0.1.0", 8000, nil),
	workloadManifest("metrics-app", "kumahq/kuma-demo-app:0.1.0", 8080, map[string]string{
		"prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics",
	}),
}, "---\n")

// prometheusToApps lets Prometheus consume the application's metrics
// under mTLS (the guide: "you need Traffic Permission that lets Prometheus
// consume applications").
const prometheusToApps = `apiVersion: kuma.io/v1alpha1
kind: TrafficPermission
mesh: default
metadata:
  name: prometheus-to-apps
spec:
  sources:
  - match:
      kuma.io/service: prometheus-server_kuma-metrics_svc_80
  destinations:
  - match:
      kuma.io/service: metrics-app_kuma-example_svc_80
`

// prometheusVolume is where the Prometheus Pod's PersistentVolumeClaim
// binds (no provisioner runs): the node agent gives the Pod a directory of
// its own for it.
const prometheusVolume = `apiVersion: v1
kind: PersistentVolume
metadata:
  name: prometheus-server-test
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  hostPath:
    path: /nonexistent-the-node-agent-uses-its-own
`

// TestKubernetesCluster walks the guide on a real Kubernetes control plane
// whose Pods run here: kube-apiserver, kube-controller-manager and
// kube-scheduler, one Node played by the test node agent (network
// namespaces on a test bridge, the containers as local processes), kuma-cp
// on the host with the cluster's kubeconfig, its validating webhook and its
// sidecar injector registered by URL (kumactl install webhooks). The
// guide's kuma-tcp-echo Deployment in namespace kuma-example labelled for
// injection becomes a Pod (controller manager), injected (webhook), bound
// (scheduler) and run (agent) with its transparent proxy, serving its
// metrics on 1234 /non-standard-path; another meshed Pod's connection to
// the echo Service's ClusterIP is captured and counted on both sides;
// `kumactl install metrics | kubectl apply -f -` runs Prometheus (built
// from its module) in the mesh, which discovers the echo proxy through
// kuma_sd_configs and scrapes it; Grafana and kube-state-metrics are
// reported not runnable here and stay Pending.
func TestKubernetesCluster(t *testing.T) {
	began := time.Now()
	// Registered first, so it runs last: the whole test, teardown included.
	t.Cleanup(func() { t.Logf("the cluster test took %s, teardown included", time.Since(began).Round(time.Second)) })
	netnstest.RequireIPTables(t)
	if err := k8stest.CheckClusterAssets(); err != nil {
		testproc.SkipOrFail(t, "%v", err)
	}
	promBin := prometheusModuleBinary(t)
	require.NoError(t, os.Chmod(binDir, 0o755))
	n := netnstest.New(t)
	ctx := t.Context()

	// The cluster, its API server on the bridge's host address (the Pods'
	// in-cluster clients reach it there), its Service range the network's
	// blackholed one.
	cluster, err := k8stest.StartCluster(ctx, k8stest.ClusterOptions{Options: k8stest.Options{Host: n.Gateway.String(), ServiceCIDR: n.Services.String()}})
	require.NoError(t, err)
	t.Cleanup(cluster.Stop)
	env := cluster.Env
	cs, err := kubernetes.NewForConfig(env.Config())
	require.NoError(t, err)

	// kuma-cp on the host (running it as a Pod is out of reach: it would
	// need the API server from a pod namespace), its dataplane server and
	// MADS on the bridge's host address, which the pods reach.
	dir, err := os.MkdirTemp("", "kuma-e2e-cluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	gw := n.Gateway.String()
	env.EnsureNamespace(t, "kuma-system")
	cp := newControlPlane(t, filepath.Join(dir, "kuma-cp"),
		"KUMA_ENVIRONMENT=kubernetes", "KUBECONFIG="+env.KubeconfigPath,
		"KUMA_DP_SERVER_INTERFACE="+gw, "KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE="+gw,
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS=https://"+hostPort(gw, 5678),
	)
	cp.env = append(cp.env, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS="+cp.host, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT="+cpAdmissionPort)
	cp.dpAddr, cp.madsAddr = hostPort(gw, 5678), hostPort(gw, 5676)
	require.NoError(t, os.MkdirAll(cp.workDir, 0o755))
	cp.start()
	registration, stderr, err := runKumactl(ctx, "install", "webhooks",
		"--url", "https://"+net.JoinHostPort(cp.host, cpAdmissionPort),
		"--ca-cert-file", filepath.Join(cp.workDir, "admission-server-ca.pem"))
	require.NoError(t, err, stderr)
	_, stderr, err = env.Kubectl(ctx, registration, "apply", "-f", "-")
	require.NoError(t, err, stderr)

	// The node agent.
	agent, err := nodeagent.Start(nodeagent.Config{
		Client: cs, NodeName: cluster.NodeName, Network: n, Dir: filepath.Join(dir, "pods"),
		APIServerHost: cluster.Host, APIServerPort: "6443",
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		Images: map[string]nodeagent.Image{
			"kumahq/kuma-dp":       {Path: filepath.Join(binDir, "kuma-dp"), Commands: map[string]string{"kumactl": filepath.Join(binDir, "kumactl")}},
			"kumahq/kuma-tcp-echo": {Path: filepath.Join(binDir, "demo-app"), Args: []string{"tcp-echo", "--listen", "0.0.0.0:$(PORT)"}},
			"prom/prometheus":      {Path: promBin},
			"kumahq/kuma-demo-app": {Path: filepath.Join(binDir, "demo-app"), Args: []string{"backend", "--name", "metrics-app", "--listen", "0.0.0.0:$(PORT)", "--error-rate", "0", "--latency", "0"}},
		},
	})
	require.NoError(t, err)
	t.Cleanup(agent.Stop)

	// 2. The guide's Mesh with metrics, the namespace labelled for
	// injection, the guide's Deployment and its Service.
	kubectl(t, env, "", "apply", "-f", filepath.Join(guideDir, "mesh-kubernetes-short.yaml"))
	kubectl(t, env, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kuma-example\n  labels:\n    kuma.io/sidecar-injection: enabled\n", "apply", "-f", "-")
	// The injection webhook is taken up asynchronously: wait until a
	// server-side dry run of a Pod shows the sidecar.
	probe := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\n  namespace: kuma-example\nspec:\n  containers:\n  - name: c\n    image: kumahq/kuma-tcp-echo:0.1.0\n"
	eventually(t, 60*time.Second, func() error {
		out, stderr, err := env.Kubectl(ctx, []byte(probe), "apply", "--dry-run=server", "-o", "yaml", "-f", "-")
		if err != nil || !strings.Contains(out, "kuma-sidecar") {
			return fmt.Errorf("no sidecar injected yet: %v %s", err, stderr)
		}
		return nil
	})
	kubectl(t, env, clusterWorkloads, "apply", "-f", "-")
	echoPod := runningPod(t, cs, agent, "kuma-example", "app=kuma-tcp-echo")
	appPod := runningPod(t, cs, agent, "kuma-example", "app=metrics-app")
	clientPod := runningPod(t, cs, agent, "kuma-example", "app=echo-client")
	require.Equal(t, "true", echoPod.Annotations["kuma.io/sidecar-injected"])
	require.Len(t, echoPod.Spec.InitContainers, 1)
	require.Equal(t, cluster.NodeName, echoPod.Spec.NodeName)

	// Its proxy's metrics, on 1234 /non-standard-path at the Pod's address
	// (the metrics port is excluded from the capture).
	echoMetrics := "http://" + hostPort(echoPod.Status.PodIP, 1234) + "/non-standard-path"
	eventually(t, 90*time.Second, func() error { return httpOK(echoMetrics) })

	// 3. Another meshed workload calls the echo Service at its ClusterIP:
	// captured by its proxy, counted on both sides.
	svc, err := cs.CoreV1().Services("kuma-example").Get(ctx, "kuma-tcp-echo", metav1.GetOptions{})
	require.NoError(t, err)
	require.True(t, n.Services.Contains(mustAddr(t, svc.Spec.ClusterIP)), "ClusterIP %s outside the blackholed range %s", svc.Spec.ClusterIP, n.Services)
	clientNS := podNetns(t, n, clientPod)
	vip := hostPort(svc.Spec.ClusterIP, 80)
	const calls = 3
	eventually(t, 60*time.Second, func() error { return echoOnce(ctx, clientNS, vip) })
	for range calls {
		require.NoError(t, echoOnce(ctx, clientNS, vip))
	}
	clientMetrics := "http://" + hostPort(clientPod.Status.PodIP, 5670) + "/metrics"
	echoService := "kuma-tcp-echo_kuma-example_svc_80"
	eventually(t, 30*time.Second, func() error {
		out := metricValue(t, clientMetrics, "envoy_cluster_upstream_cx_total", `envoy_cluster_name="`+echoService+`"`)
		in := metricValue(t, echoMetrics, "envoy_cluster_upstream_cx_total", `envoy_cluster_name="localhost_8000"`)
		if out < calls+1 || in < calls+1 {
			return fmt.Errorf("client's %s connections %v, echo's localhost_8000 %v; want ≥ %d on both", echoService, out, in, calls+1)
		}
		return nil
	})

	// `kumactl install metrics | kubectl apply -f -`: Prometheus in the
	// mesh, its discovery at the control plane's MADS.
	kubectl(t, env, prometheusVolume, "apply", "-f", "-")
	t.Cleanup(func() {
		_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), "prometheus-server-test", metav1.DeleteOptions{})
	})
	metrics, stderr, err := runKumactl(ctx, "install", "metrics", "--kuma-cp-address", "http://"+cp.madsAddr)
	require.NoError(t, err, stderr)
	kubectl(t, env, string(metrics), "apply", "-f", "-")
	promPod := runningPod(t, cs, agent, "kuma-metrics", "app.kubernetes.io/name=prometheus-server")
	require.Equal(t, "true", promPod.Annotations["kuma.io/sidecar-injected"])
	// Prometheus' API from inside its Pod (loopback is never captured;
	// from outside, its proxy would want a mesh peer once mTLS is on).
	promNS := podNetns(t, n, promPod)
	prom := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: promNS.DialContext, DisableKeepAlives: true}}
	const promURL = "http://127.0.0.1:9090"
	echoDataplane := echoPod.Name + ".kuma-example"
	echoTarget := hostPort(echoPod.Status.PodIP, 1234)
	appTarget := hostPort(appPod.Status.PodIP, 8080)
	eventually(t, 120*time.Second, func() error {
		if err := targetUp(prom, promURL, "kuma-dataplanes", "dataplane", echoDataplane, echoTarget, time.Time{}); err != nil {
			return err
		}
		// The workload annotated prometheus.io/scrape, found through the
		// API (kubernetes_sd_configs, in-cluster credentials).
		return targetUp(prom, promURL, "kubernetes-pods", "pod", appPod.Name, appTarget, time.Time{})
	})
	// Images the agent cannot run stay Pending, said so.
	for _, sel := range []string{"app.kubernetes.io/name=grafana", "app.kubernetes.io/name=prometheus-kube-state-metrics"} {
		eventually(t, 60*time.Second, func() error {
			pods, err := cs.CoreV1().Pods("kuma-metrics").List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil || len(pods.Items) == 0 {
				return fmt.Errorf("no pod %s: %v", sel, err)
			}
			p := pods.Items[0]
			for _, st := range p.Status.ContainerStatuses {
				if st.State.Waiting != nil && st.State.Waiting.Reason == nodeagent.NotRunnableReason && p.Status.Phase == corev1.PodPending {
					t.Logf("%s: %s (%s)", p.Name, st.State.Waiting.Reason, st.State.Waiting.Message)
					return nil
				}
			}
			return fmt.Errorf("pod %s not reported as not runnable: %+v", p.Name, p.Status)
		})
	}

	// 4. The guide's mTLS Mesh and its two TrafficPermissions, allow-all
	// removed: Prometheus keeps scraping, over mTLS through its own proxy,
	// with its identity (prometheus-server_kuma-metrics_svc_80), which
	// metrics-permissions allows.
	echoNS := &meshPod{Pod: podNetns(t, n, echoPod), client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: podNetns(t, n, echoPod).DialContext, DisableKeepAlives: true}}}
	promMesh := &meshPod{Pod: promNS, client: prom}
	scrapeCluster := "cluster." + dpconfig.ScrapeClusterName("default/"+echoPod.Name+".kuma-example")
	kubectl(t, env, "", "apply", "-f", filepath.Join(guideDir, "mesh-kubernetes-mtls.yaml"))
	kubectl(t, env, "", "apply", "-f", filepath.Join(guideDir, "trafficpermissions-kubernetes.yaml"))
	kubectl(t, env, prometheusToApps, "apply", "-f", "-")
	kubectl(t, env, "", "delete", "trafficpermission", "allow-all-default")
	appCluster := "cluster." + dpconfig.DirectClusterName("default/"+appPod.Name+".kuma-example", 8080)
	mtlsSince := time.Now()
	eventually(t, 120*time.Second, func() error {
		if err := targetUp(prom, promURL, "kuma-dataplanes", "dataplane", echoDataplane, echoTarget, mtlsSince); err != nil {
			return err
		}
		if err := targetUp(prom, promURL, "kubernetes-pods", "pod", appPod.Name, appTarget, mtlsSince); err != nil {
			return err
		}
		for _, c := range []string{scrapeCluster, appCluster} {
			if hs := promMesh.stat(t, c+".ssl.handshake", ""); hs == 0 {
				body, _ := promMesh.get("http://127.0.0.1:9901/stats")
				var lines []string
				for _, l := range strings.Split(body, "\n") {
					if strings.Contains(l, "metrics_") || strings.Contains(l, "direct_") || strings.Contains(l, "pass_through") || strings.Contains(l, "15001") {
						lines = append(lines, l)
					}
				}
				return fmt.Errorf("Prometheus' proxy made no mTLS handshake through %s yet; its statistics:\n%s", c, strings.Join(lines, "\n"))
			}
		}
		return nil
	})
	allowed := echoNS.stat(t, "rbac.", ".allowed")
	require.Positive(t, allowed, "the echo proxy's metrics endpoint judged the scrapes")

	// Without metrics-permissions the scrapes are refused, counted; back
	// when it is applied again.
	deniedBefore := echoNS.stat(t, "rbac.", ".denied")
	kubectl(t, env, "", "delete", "trafficpermission", "metrics-permissions")
	eventually(t, 120*time.Second, func() error {
		if err := targetUp(prom, promURL, "kuma-dataplanes", "dataplane", echoDataplane, echoTarget, time.Now().Add(-6*time.Second)); err == nil {
			return fmt.Errorf("still scraped")
		}
		if d := echoNS.stat(t, "rbac.", ".denied"); d <= deniedBefore {
			return fmt.Errorf("denied %d, want more than %d", d, deniedBefore)
		}
		return nil
	})
	t.Logf("echo's envoy_rbac_denied on its metrics endpoint: %d", echoNS.stat(t, "rbac.", ".denied"))
	kubectl(t, env, "", "apply", "-f", filepath.Join(guideDir, "trafficpermissions-kubernetes.yaml"))
	backSince := time.Now()
	eventually(t, 120*time.Second, func() error {
		return targetUp(prom, promURL, "kuma-dataplanes", "dataplane", echoDataplane, echoTarget, backSince)
	})

	// 5. Teardown: the Deployments' Pods go, their processes and network
	// namespaces with them.
	podProcs := map[string][]int{} // by network namespace
	for _, pod := range []corev1.Pod{echoPod, appPod, clientPod} {
		ns := podNetns(t, n, pod).NS
		out, err := exec.Command("ip", "netns", "pids", ns).Output()
		require.NoError(t, err, "ip netns pids %s", ns)
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			require.NoError(t, err, f)
			podProcs[ns] = append(podProcs[ns], pid)
		}
		require.NotEmpty(t, podProcs[ns], "no process runs in the namespace of %s", pod.Name)
	}
	kubectl(t, env, "", "delete", "namespace", "kuma-example", "--wait=false")
	eventually(t, 120*time.Second, func() error {
		pods, err := cs.CoreV1().Pods("kuma-example").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("pods of kuma-example left: %d (%v)", len(pods.Items), err)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		for ns, pids := range podProcs {
			for _, pid := range pids {
				if testproc.Alive(pid) {
					return fmt.Errorf("process %d of network namespace %s still runs after its Pod went", pid, ns)
				}
			}
			if _, err := os.Stat(filepath.Join("/run/netns", ns)); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("network namespace %s left after its Pod went (%v)", ns, err)
			}
		}
		return nil
	})
}

// runningPod waits until the one Pod of ns matching selector runs, ready.
func runningPod(t *testing.T, cs kubernetes.Interface, agent *nodeagent.Agent, ns, selector string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	eventually(t, 180*time.Second, func() error {
		pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return fmt.Errorf("%d pods %s in %s", len(pods.Items), selector, ns)
		}
		pod = pods.Items[0]
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			return fmt.Errorf("pod %s: %s %s %s\n%s", pod.Name, pod.Status.Phase, pod.Status.Reason, pod.Status.Message, agent.Logs(ns, pod.Name))
		}
		return nil
	})
	return pod
}

// podNetns is the agent's namespace of a Pod (by its IP).
func podNetns(t *testing.T, n *netnstest.Network, pod corev1.Pod) *netnstest.Pod {
	t.Helper()
	p := n.PodByIP(mustAddr(t, pod.Status.PodIP))
	require.NotNil(t, p, "no network namespace has %s", pod.Status.PodIP)
	return p
}

// echoOnce connects from inside the pod (as its workload: captured),
// sends a line and expects it back.
func echoOnce(ctx context.Context, p *netnstest.Pod, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := p.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("echo through %s: %w", addr, err)
	}
	if string(got) != "ping\n" {
		return fmt.Errorf("echo through %s: got %q", addr, got)
	}
	return nil
}

// targetUp tells whether Prometheus' last scrape of the job's target
// labelled label=value at address, after since, succeeded.
func targetUp(c *http.Client, promURL, job, label, value, address string, since time.Time) error {
	res, err := c.Get(promURL + "/api/v1/targets?state=active")
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				Labels     map[string]string `json:"labels"`
				ScrapeURL  string            `json:"scrapeUrl"`
				Health     string            `json:"health"`
				LastError  string            `json:"lastError"`
				ScrapePool string            `json:"scrapePool"`
				LastScrape time.Time         `json:"lastScrape"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return err
	}
	for _, tg := range body.Data.ActiveTargets {
		if tg.ScrapePool == job && tg.Labels[label] == value {
			if !strings.Contains(tg.ScrapeURL, address) {
				return fmt.Errorf("%s target %s scrapes %s, want %s", job, value, tg.ScrapeURL, address)
			}
			if !tg.LastScrape.After(since) {
				return fmt.Errorf("%s target %s: last scraped at %s, before %s", job, value, tg.LastScrape, since)
			}
			if tg.Health != "up" {
				return fmt.Errorf("%s target %s: %s %s", job, value, tg.Health, tg.LastError)
			}
			return nil
		}
	}
	return fmt.Errorf("no %s target %s=%s among %d", job, label, value, len(body.Data.ActiveTargets))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// runKumactl runs the built kumactl without a control plane configured.
func runKumactl(ctx context.Context, args ...string) ([]byte, string, error) {
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kumactl"), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return out, stderr.String(), err
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	require.NoError(t, err)
	return a
}

// metricValue sums the samples of metric whose labels contain labels,
// fetched from url (Prometheus' text format); -1 when it cannot be fetched.
func metricValue(t *testing.T, url, metric, labels string) float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		return -1
	}
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		require.NoError(t, err, line)
		sum += v
	}
	return sum
}
