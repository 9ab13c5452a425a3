package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// cluster is a real kube-apiserver on etcd, run by the main module's test
// harness (internal/k8stest/cmd/apiserver): this module cannot import it
// (see doc.go), so it runs it as a program, as it runs kuma-cp.
type cluster struct {
	Kubeconfig string `json:"kubeconfig"`
	Kubectl    string `json:"kubectl"`
	URL        string `json:"url"`
}

// startCluster starts the API server; it stops at cleanup, or when this
// test binary ends in any way (it serves while its standard input is open).
// Without the binaries (`make k8s-bin`) the test is skipped, or fails with
// CI=true.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	cmd := exec.Command(apiServer)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("API server harness:\n%s", stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		exited <- cmd.Wait()
	}()
	var c cluster
	select {
	case l, ok := <-line:
		if !ok {
			err := <-exited
			exited <- err
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 3 && os.Getenv("CI") != "true" {
				t.Skipf("no Kubernetes test binaries: %s", stderr.String())
			}
			t.Fatalf("the API server harness ended (%v):\n%s", err, stderr.String())
		}
		require.NoError(t, json.Unmarshal([]byte(l), &c))
	case <-time.After(3 * time.Minute):
		t.Fatalf("the API server harness did not start within 3 minutes:\n%s", stderr.String())
	}
	return &c
}

// kubectl runs kubectl on the cluster with stdin and returns its output.
func (c *cluster) kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Run(), "kubectl %s\n%s", strings.Join(args, " "), errb.String())
	return out.String()
}

// TestPrometheusKumaSDAgainstKubernetesMode: Prometheus' own kuma_sd client
// against a control plane in Kubernetes mode (outside the cluster, on a
// kubeconfig). Everything is written with kubectl, as a user would: the
// guide's Mesh, a namespace in the mesh with a Service and a Pod (its
// status set as the absent kubelet would); the pod controller's Dataplane
// reaches Prometheus with the Pod's name and namespace among the labels,
// and deleting the Pod removes the target.
func TestPrometheusKumaSDAgainstKubernetesMode(t *testing.T) {
	k := startCluster(t)
	k.kubectl(t, "", "create", "namespace", "kuma-system")
	host := loopbackHost()
	_, mads := controlPlane(t, host, "KUMA_ENVIRONMENT=kubernetes", "KUMA_STORE_TYPE=kubernetes", "KUBECONFIG="+k.Kubeconfig,
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS="+host, "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT=5443")
	k.kubectl(t, "", "apply", "-f", "../../pkg/resource/testdata/guide/mesh-kubernetes-short.yaml")
	k.kubectl(t, `apiVersion: v1
kind: Namespace
metadata:
  name: kuma-example
  labels:
    kuma.io/sidecar-injection: enabled
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: kuma-example
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: kuma-example
  labels:
    app: web
  annotations:
    prometheus.metrics.kuma.io/port: "1234"
    prometheus.metrics.kuma.io/path: "/non-standard-path"
spec:
  containers:
  - name: web
    image: web
`, "apply", "-f", "-")
	ip := loopbackHost()
	k.kubectl(t, "", "patch", "pod", "web-1", "--namespace", "kuma-example", "--subresource", "status", "--type", "merge",
		"-p", fmt.Sprintf(`{"status":{"phase":"Running","podIP":%q,"podIPs":[{"ip":%q}]}}`, ip, ip))

	ch, _ := discoverer(t, "http://"+mads)
	got := waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 1 })
	const service = "web_kuma-example_svc_80"
	require.Equal(t, map[string]model.LabelSet{
		"web-1.kuma-example": {
			"__address__":           model.LabelValue(ip + ":1234"),
			"instance":              "web-1.kuma-example",
			"__scheme__":            "http",
			"__metrics_path__":      "/non-standard-path",
			"__meta_kuma_mesh":      "default",
			"__meta_kuma_service":   service,
			"__meta_kuma_dataplane": "web-1.kuma-example",
			// The Pod's name and namespace (no plural form).
			"__meta_kuma_label_k8s_kuma_io_name":      "web-1",
			"__meta_kuma_label_k8s_kuma_io_namespace": "kuma-example",
			// The inbound's tags, each with its plural.
			"__meta_kuma_label_app":                       "web",
			"__meta_kuma_label_apps":                      ",web,",
			"__meta_kuma_label_kuma_io_service":           service,
			"__meta_kuma_label_kuma_io_services":          "," + service + ",",
			"__meta_kuma_label_kuma_io_protocol":          "tcp",
			"__meta_kuma_label_kuma_io_protocols":         ",tcp,",
			"__meta_kuma_label_k8s_kuma_io_namespaces":    ",kuma-example,",
			"__meta_kuma_label_k8s_kuma_io_service_name":  "web",
			"__meta_kuma_label_k8s_kuma_io_service_names": ",web,",
			"__meta_kuma_label_k8s_kuma_io_service_port":  "80",
			"__meta_kuma_label_k8s_kuma_io_service_ports": ",80,",
		},
	}, got)

	began := time.Now()
	k.kubectl(t, "", "delete", "pod", "web-1", "--namespace", "kuma-example")
	waitTargets(t, ch, func(m map[string]model.LabelSet) bool { return len(m) == 0 })
	t.Logf("a deleted Pod left Prometheus' kuma_sd %s after kubectl delete began", time.Since(began).Round(time.Millisecond))
}
