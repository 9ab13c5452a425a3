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
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/mads"
)

// The guide's Kubernetes workload: namespace kuma-example in the mesh, the
// kuma-tcp-echo Service (port 80 to the container port named http) and
// ServiceAccount.
const (
	exampleNamespace = "kuma-example"
	exampleApp       = "kuma-tcp-echo"
	exampleService   = exampleApp + "_" + exampleNamespace + "_svc_80"
	exampleManifest  = `apiVersion: v1
kind: Namespace
metadata:
  name: kuma-example
  labels:
    kuma.io/sidecar-injection: enabled
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kuma-tcp-echo
  namespace: kuma-example
---
apiVersion: v1
kind: Service
metadata:
  name: kuma-tcp-echo
  namespace: kuma-example
spec:
  selector:
    app: kuma-tcp-echo
  ports:
  - name: http
    port: 80
    targetPort: http
    appProtocol: http
`
)

// guideMetricsAnnotations are the guide's per-Pod override.
var guideMetricsAnnotations = map[string]string{
	"prometheus.metrics.kuma.io/port": "1234",
	"prometheus.metrics.kuma.io/path": "/non-standard-path",
}

// TestKubernetesGuide walks the guide's Kubernetes tabs end to end against
// a real kube-apiserver, with the built kuma-cp running outside the
// cluster on a kubeconfig: kubectl applies the guide's Mesh (shortcut, then
// full form) and TrafficPermissions and is refused an invalid Mesh with its
// field path; Pods of namespace kuma-example with the guide's metrics
// annotations get Dataplanes, and a kuma-dp per Pod, authenticated by a
// ServiceAccount token bound to its Pod, carries traffic and serves its
// metrics on 1234 /non-standard-path; Debian's Prometheus, configured by
// `kumactl install metrics --universal`, discovers each Pod's proxy through
// MADS with the Kubernetes labels and scrapes it; a deleted Pod's target
// leaves MADS at once and Prometheus at its next refresh; a Pod with a
// broken annotation gets a Warning Event and no Dataplane until it is fixed.
func TestKubernetesGuide(t *testing.T) {
	requireProgram(t, "prometheus")
	env := k8stest.Get(t)
	c := env.Client(t)
	ctx := t.Context()
	// Registered first, so it runs last, after kuma-cp stopped: the API
	// server lives as long as the test binary and namespaces are never
	// deleted (no namespace controller runs), so the next run finds
	// kuma-example empty.
	t.Cleanup(func() {
		_, stderr, err := env.Kubectl(context.Background(), nil, "delete", "--namespace", exampleNamespace, "--ignore-not-found",
			"pods,services,serviceaccounts,dataplanes.kuma.io,dataplaneinsights.kuma.io,events", "--all")
		if err != nil {
			t.Errorf("emptying %s: %v %s", exampleNamespace, err, stderr)
		}
	})
	cp := startKubernetesControlPlane(t, env)

	// The guide's Mesh, the shortcut and then the full form, and its two
	// TrafficPermissions, as written.
	for _, f := range []string{"mesh-kubernetes-short.yaml", "mesh-kubernetes-full.yaml", "trafficpermissions-kubernetes.yaml"} {
		t.Logf("kubectl apply -f %s: %s", f, strings.TrimSpace(kubectl(t, env, "", "apply", "-f", filepath.Join(guideDir, f))))
	}
	meshes := kubectl(t, env, "", "get", "meshes")
	require.Regexp(t, `(?m)^default\s+prometheus-1\s`, meshes)
	permissions := kubectl(t, env, "", "get", "trafficpermissions")
	for _, name := range []string{"metrics-permissions", "grafana-to-prometheus"} {
		require.Regexp(t, `(?m)^`+name+`\s+default\s`, permissions)
	}
	// An invalid Mesh is refused with the REST API's message at its field, and not stored.
	_, stderr, err := env.Kubectl(ctx, []byte(invalidMesh), "apply", "-f", "-")
	require.Error(t, err)
	require.Contains(t, stderr, `The Mesh "invalid" is invalid`)
	require.Contains(t, stderr, invalidMeshCause)
	_, _, err = env.Kubectl(ctx, nil, "get", "mesh", "invalid")
	require.ErrorContains(t, err, "NotFound")

	// The guide's namespace, its Service and two Pods with the guide's
	// annotations, each with its application on a container port the
	// kernel picked (on 127.0.0.1, where the Dataplane's inbound forwards)
	// and an IP of its own.
	kubectl(t, env, exampleManifest, "apply", "-f", "-")
	podNet := loopback.Net()
	newPod := func(i int, annotations map[string]string) *pod {
		p := &pod{name: fmt.Sprintf("%s-%d", exampleApp, i), namespace: exampleNamespace, ip: fmt.Sprintf("%s.%d", podNet, i)}
		p.app, p.appPort = startPodApp(t, p.name)
		kubectl(t, env, podManifest(p.name, p.namespace, exampleApp, p.appPort, annotations), "apply", "-f", "-")
		setPodRunning(t, c, p.namespace, p.name, p.ip)
		return p
	}
	pods := []*pod{newPod(1, guideMetricsAnnotations), newPod(2, guideMetricsAnnotations)}
	for _, p := range pods {
		startPodProxy(t, env, cp, p, exampleApp)
	}
	t.Logf("kubectl get dataplanes -n %s:\n%s", exampleNamespace, kubectl(t, env, "", "get", "dataplanes", "--namespace", exampleNamespace))

	for _, p := range pods {
		// Traffic through the Pod's inbound (its IP, the container port)
		// reaches its application.
		body := httpGet(t, appURL(p.ip, p.appPort))
		require.Contains(t, body, p.name)
		// The metrics endpoint is where the annotations say, with Envoy's
		// statistics of that request; the mesh's default port is not used.
		metrics := "http://" + hostPort(p.ip, 1234) + "/non-standard-path"
		cluster := fmt.Sprintf(`envoy_cluster_upstream_rq_total{envoy_cluster_name="localhost_%d"}`, p.appPort)
		eventually(t, 10*time.Second, func() error {
			v, err := seriesValue(httpGet(t, metrics), cluster)
			if err == nil && v < 1 {
				err = fmt.Errorf("%s = %v", cluster, v)
			}
			return err
		})
		require.Contains(t, httpGet(t, metrics), "envoy_server_live 1")
		_, err := net.DialTimeout("tcp", hostPort(p.ip, metricsPort), 2*time.Second)
		require.Error(t, err, "nothing listens on the mesh's default metrics port")
	}

	// MADS tells Prometheus about each Pod's proxy, with the Pod's name and
	// namespace as labels.
	targets := httpSD(t, cp.madsAddr)
	for _, p := range pods {
		g, ok := targets[p.dataplaneName()]
		require.True(t, ok, "MADS lists %s: %v", p.dataplaneName(), targets)
		require.Equal(t, []string{hostPort(p.ip, 1234)}, g.Targets)
		for k, want := range map[string]string{
			"__metrics_path__": "/non-standard-path", mads.MetaLabelPrefix + "k8s_kuma_io_name": p.name,
			mads.MetaLabelPrefix + "k8s_kuma_io_namespace": exampleNamespace, "__meta_kuma_mesh": "default", "__meta_kuma_service": exampleService,
		} {
			require.Equal(t, want, g.Labels[k], "label %s of %s", k, p.dataplaneName())
		}
	}

	// kumactl reads the Pods' Dataplanes from the control plane: online.
	inspect := newKumactl(t, cp).must("inspect", "dataplanes")
	for _, p := range pods {
		require.Regexp(t, `(?m)^default\s+`+regexp.QuoteMeta(p.dataplaneName())+`\s.*\sOnline\s`, inspect)
	}

	// Debian's Prometheus on the prometheus.yml of `kumactl install metrics
	// --universal`, pointed at this control plane (http_sd with the guide's
	// relabel rules).
	dir := filepath.Join(t.TempDir(), "kuma-metrics")
	newKumactl(t, cp).must("install", "metrics", "--universal", "--output-dir", dir, "--without-grafana", "--kuma-cp-address", "http://"+cp.madsAddr, "--kuma-cp-api-address", cp.apiURL)
	cfg, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
	require.NoError(t, err)
	prom := startPrometheus(t, string(cfg))
	scraped := func(want ...*pod) error {
		var got []string
		for _, tg := range prom.targets(t)["kuma-dataplanes"] {
			got = append(got, tg.Labels["dataplane"])
			i := slices.IndexFunc(want, func(p *pod) bool { return p.dataplaneName() == tg.Labels["dataplane"] })
			if i < 0 {
				continue
			}
			p := want[i]
			for k, v := range map[string]string{
				"k8s_kuma_io_name": p.name, "k8s_kuma_io_namespace": exampleNamespace, "mesh": "default", "service": exampleService,
				"kuma_io_service": exampleService, "app": exampleApp, "instance": p.dataplaneName(),
			} {
				require.Equal(t, v, tg.Labels[k], "label %s of the target %v", k, tg.Labels)
			}
			require.Equal(t, "http://"+hostPort(p.ip, 1234)+"/non-standard-path", tg.ScrapeURL)
			if tg.Health != "up" {
				return fmt.Errorf("%s is %s", p.dataplaneName(), tg.Health)
			}
		}
		slices.Sort(got)
		var names []string
		for _, p := range want {
			names = append(names, p.dataplaneName())
		}
		if !slices.Equal(got, names) {
			return fmt.Errorf("Prometheus scrapes %v, want %v", got, names)
		}
		return nil
	}
	eventually(t, 2*time.Minute, func() error { return scraped(pods...) })
	up := prom.query(t, `up{job="kuma-dataplanes",k8s_kuma_io_namespace="kuma-example"}`)
	require.Len(t, up, len(pods), "%v", up)
	for _, s := range up {
		require.Equal(t, 1.0, s.Value, "%v", s.Labels)
	}

	// Deleting a Pod deletes its Dataplane, which leaves MADS at once and
	// Prometheus at its next refresh of http_sd (15 s).
	gone := pods[1]
	began := time.Now()
	kubectl(t, env, "", "delete", "pod", gone.name, "--namespace", gone.namespace)
	eventually(t, 30*time.Second, func() error {
		if _, ok := httpSD(t, cp.madsAddr)[gone.dataplaneName()]; ok {
			return fmt.Errorf("MADS still lists %s", gone.dataplaneName())
		}
		return nil
	})
	t.Logf("a deleted Pod left MADS after %s", time.Since(began).Round(time.Millisecond))
	_, _, err = env.Kubectl(ctx, nil, "get", "dataplane", gone.name, "--namespace", gone.namespace)
	require.ErrorContains(t, err, "NotFound")
	// The kubelet would stop its containers.
	require.NoError(t, gone.proxy.cmd.Process.Signal(syscall.SIGTERM))
	eventually(t, 2*time.Minute, func() error { return scraped(pods[0]) })
	t.Logf("a deleted Pod left Prometheus after %s", time.Since(began).Round(time.Millisecond))

	// A Pod whose metrics port annotation does not parse gets a Warning
	// Event naming the annotation, and no Dataplane; fixed, it gets one.
	broken := newPod(3, map[string]string{"prometheus.metrics.kuma.io/port": "12x4", "prometheus.metrics.kuma.io/path": "/non-standard-path"})
	uid := strings.TrimSpace(kubectl(t, env, "", "get", "pod", broken.name, "--namespace", broken.namespace, "-o", "jsonpath={.metadata.uid}"))
	const note = `annotation "prometheus.metrics.kuma.io/port": "12x4" is not a port number (1-65535)`
	var event string
	eventually(t, 30*time.Second, func() error {
		out := kubectl(t, env, "", "get", "events", "--namespace", broken.namespace,
			"--field-selector", "involvedObject.uid="+uid+",reason=InvalidAnnotation,type=Warning", "-o", "json")
		var list struct {
			Items []struct {
				Message string `json:"message"`
			} `json:"items"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &list))
		for _, e := range list.Items {
			if strings.Contains(e.Message, note) {
				event = e.Message
				return nil
			}
		}
		return fmt.Errorf("no InvalidAnnotation Event on %s: %s", broken.name, out)
	})
	t.Logf("the Event on %s: %s", broken.name, event)
	_, _, err = env.Kubectl(ctx, nil, "get", "dataplane", broken.name, "--namespace", broken.namespace)
	require.ErrorContains(t, err, "NotFound")
	require.NotContains(t, httpSD(t, cp.madsAddr), broken.dataplaneName())
	kubectl(t, env, "", "annotate", "pod", broken.name, "--namespace", broken.namespace, "--overwrite", "prometheus.metrics.kuma.io/port=1234")
	eventually(t, 30*time.Second, func() error {
		g, ok := httpSD(t, cp.madsAddr)[broken.dataplaneName()]
		if !ok || !slices.Equal(g.Targets, []string{hostPort(broken.ip, 1234)}) {
			return fmt.Errorf("MADS has %v for %s", g.Targets, broken.dataplaneName())
		}
		return nil
	})
}

// TestKubernetesInstallDryRuns: what `kumactl install control-plane` and
// `kumactl install metrics` print is accepted by the real API server, piped
// into kubectl as the README says (the namespaces exist, as a server-side
// dry run needs).
func TestKubernetesInstallDryRuns(t *testing.T) {
	env := k8stest.Get(t)
	env.EnsureNamespace(t, "kuma-system")
	env.EnsureNamespace(t, "kuma-metrics")
	for _, what := range []string{"control-plane", "metrics"} {
		pipe := fmt.Sprintf("set -o pipefail; %s install %s | %s --kubeconfig %s apply --dry-run=server -f -",
			filepath.Join(binDir, "kumactl"), what, env.KubectlPath, env.KubeconfigPath)
		out, err := exec.CommandContext(t.Context(), "bash", "-c", pipe).CombinedOutput()
		require.NoError(t, err, "%s\n%s", pipe, out)
		manifests, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "kumactl"), "install", what).Output()
		require.NoError(t, err)
		objects := strings.Count(string(manifests), "\nkind: ")
		require.Equal(t, objects, strings.Count(string(out), "(server dry run)"), "every object accepted:\n%s", out)
		t.Logf("kumactl install %s | kubectl apply --dry-run=server -f -: %s objects accepted", what, strconv.Itoa(objects))
	}
}
