package k8stest_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/internal/testproc"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

const guideDir = "../../pkg/resource/testdata/guide"

// TestGuideManifestsWithKubectl: the guide's Mesh (both forms) and its two
// TrafficPermissions apply with kubectl, as written, and kubectl lists them
// with the printer columns.
func TestGuideManifestsWithKubectl(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	for _, f := range []string{"mesh-kubernetes-short.yaml", "mesh-kubernetes-full.yaml", "mesh-kubernetes-mtls.yaml", "trafficpermissions-kubernetes.yaml"} {
		out, _, err := env.Kubectl(ctx, nil, "apply", "-f", filepath.Join(guideDir, f))
		require.NoError(t, err, f)
		t.Logf("kubectl apply -f %s: %s", f, strings.TrimSpace(out))
	}
	out, _, err := env.Kubectl(ctx, nil, "get", "meshes")
	require.NoError(t, err)
	require.Equal(t, [][]string{{"NAME", "MTLS", "METRICS", "AGE"}, {"default", "ca-1", "prometheus-1"}}, columns(out, 3), out)
	out, _, err = env.Kubectl(ctx, nil, "get", "trafficpermissions")
	require.NoError(t, err)
	require.Equal(t, [][]string{{"NAME", "MESH", "AGE"}, {"grafana-to-prometheus", "default"}, {"metrics-permissions", "default"}}, columns(out, 2), out)

	// What the schema expresses, the API server refuses with the field's path.
	bad := `apiVersion: kuma.io/v1alpha1
kind: TrafficPermission
metadata:
  name: no-mesh
spec:
  sources: [{match: {kuma.io/service: a}}]
  destinations: [{match: {kuma.io/service: b}}]
`
	_, _, err = env.Kubectl(ctx, []byte(bad), "apply", "-f", "-")
	require.ErrorContains(t, err, "mesh: Required value")
	badPort := `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: bad-port
spec:
  metrics:
    backends:
    - name: p
      type: prometheus
      conf: {port: 70000}
`
	_, _, err = env.Kubectl(ctx, []byte(badPort), "apply", "-f", "-")
	require.ErrorContains(t, err, "spec.metrics.backends[0].conf.port")
	unknown := strings.Replace(badPort, "port: 70000", "prot: 80", 1)
	_, _, err = env.Kubectl(ctx, []byte(unknown), "apply", "-f", "-")
	require.ErrorContains(t, err, `unknown field "spec.metrics.backends[0].conf.prot"`)

	out, _, err = env.Kubectl(ctx, nil, "delete", "-f", filepath.Join(guideDir, "trafficpermissions-kubernetes.yaml"), "-f", filepath.Join(guideDir, "mesh-kubernetes-full.yaml"))
	require.NoError(t, err, out)
}

// columns splits kubectl's table output, keeping the first n cells of each
// data row (AGE varies) and every cell of the header.
func columns(out string, n int) [][]string {
	var rows [][]string
	sc := bufio.NewScanner(strings.NewReader(out))
	for i := 0; sc.Scan(); i++ {
		f := strings.Fields(sc.Text())
		if i > 0 && len(f) > n {
			f = f[:n]
		}
		rows = append(rows, f)
	}
	return rows
}

// TestServiceAccountTokens: TokenRequest issues a token bound to a Pod and
// TokenReview authenticates it as the ServiceAccount and names the Pod.
func TestServiceAccountTokens(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(env.Config())
	require.NoError(t, err)
	ns := env.Namespace(t, "tokens", nil)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "web", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, tr.Status.Token)

	review, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.True(t, review.Status.Authenticated, "%+v", review.Status)
	require.Equal(t, "system:serviceaccount:"+ns+":web", review.Status.User.Username)
	require.Equal(t, authenticationv1.ExtraValue{"web-1"}, review.Status.User.Extra["authentication.kubernetes.io/pod-name"])

	bad, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token + "x"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.False(t, bad.Status.Authenticated)

	// A token bound to a Pod stops authenticating when the Pod is gone.
	require.NoError(t, cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	require.Eventually(t, func() bool {
		r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token}}, metav1.CreateOptions{})
		return err == nil && !r.Status.Authenticated
	}, 30*time.Second, 100*time.Millisecond)
}

// TestKubectlVersionMatches: the kubectl of the folder is the server's version.
func TestKubectlVersionMatches(t *testing.T) {
	env := k8stest.Get(t)
	out, _, err := env.Kubectl(t.Context(), nil, "version")
	require.NoError(t, err)
	require.Contains(t, out, "Client Version: v"+k8stest.KubernetesVersion)
	require.Contains(t, out, "Server Version: v"+k8stest.KubernetesVersion)
}

// TestProgramsDieWithTheTestBinary: a test binary that starts the API
// server and dies without stopping it (os.Exit, as on a timeout's panic)
// takes etcd and kube-apiserver with it.
func TestProgramsDieWithTheTestBinary(t *testing.T) {
	if os.Getenv("K8STEST_ORPHAN") == "1" {
		env, err := k8stest.Start(context.Background())
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(3)
		}
		fmt.Printf("pids %d %d %s\n", env.EtcdPID(), env.APIServerPID(), env.Dir)
		os.Exit(7) // no Stop
	}
	k8stest.Get(t) // skips (or fails with CI=true) without the binaries
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestProgramsDieWithTheTestBinary$")
	cmd.Env = append(os.Environ(), "K8STEST_ORPHAN=1")
	out, err := cmd.Output()
	require.Error(t, err)
	var pids [2]int
	var dir string
	_, scanErr := fmt.Sscanf(strings.TrimSpace(string(out)), "pids %d %d %s", &pids[0], &pids[1], &dir)
	require.NoError(t, scanErr, "child said: %s", out)
	require.DirExists(t, dir)
	for _, pid := range pids {
		require.Eventually(t, func() bool { return !testproc.Alive(pid) }, 30*time.Second, 50*time.Millisecond, "pid %d outlived its test binary", pid)
	}
	// The next start removes the folder the dead binary left.
	env, err := k8stest.Start(t.Context())
	require.NoError(t, err)
	env.Stop()
	require.NoDirExists(t, dir)
}

// TestMissingBinaries: without the binaries a test that needs the API
// server is skipped, and fails with CI=true.
func TestMissingBinaries(t *testing.T) {
	run := func(ci string) (string, error) {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKubectlVersionMatches$", "-test.v")
		cmd.Env = append(os.Environ(), "KUBEBUILDER_ASSETS="+t.TempDir(), "CI="+ci)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("true")
	require.Error(t, err, out)
	require.Contains(t, out, "--- FAIL: TestKubectlVersionMatches")
	require.Contains(t, out, "run `make k8s-bin`")
	out, err = run("")
	require.NoError(t, err, out)
	require.Contains(t, out, "--- SKIP: TestKubectlVersionMatches")
}

// BenchmarkStart measures starting etcd and kube-apiserver with the CRDs
// installed, and stopping them (go test -run '^$' -bench Start -benchtime 3x).
func BenchmarkStart(b *testing.B) {
	k8stest.Get(b)
	for b.Loop() {
		env, err := k8stest.Start(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(env.StartDuration.Seconds(), "start-s/op")
		env.Stop()
	}
}

// TestCluster: a Deployment of a cluster becomes a ReplicaSet and a Pod
// (controller manager), the Pod gets its ServiceAccount's token volume
// (admission plugin; the ServiceAccount made by the controller manager) and
// is bound to the one Node (scheduler), which stays Ready while its Lease is
// renewed; Stop leaves no process behind.
func TestCluster(t *testing.T) {
	if err := k8stest.CheckClusterAssets(); err != nil {
		testproc.SkipOrFail(t, "%v", err)
	}
	c, err := k8stest.StartCluster(t.Context(), k8stest.ClusterOptions{Options: k8stest.Options{ServiceCIDR: "10.96.0.0/24"}})
	require.NoError(t, err)
	pids := []int{c.EtcdPID(), c.APIServerPID(), c.ControllerManagerPID(), c.SchedulerPID()}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.Stop()
		}
	})
	ctx := t.Context()
	out, stderr, err := c.Kubectl(ctx, nil, "create", "deployment", "web", "--image=example/web:1", "--namespace", "default")
	require.NoError(t, err, stderr)
	t.Log(strings.TrimSpace(out))
	cs, err := kubernetes.NewForConfig(c.Config())
	require.NoError(t, err)
	var pod corev1.Pod
	require.Eventually(t, func() bool {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Spec.NodeName == "" {
			return false
		}
		pod = pods.Items[0]
		return true
	}, 2*time.Minute, 200*time.Millisecond, "no Pod of the Deployment bound to a node")
	require.Equal(t, c.NodeName, pod.Spec.NodeName)
	require.Equal(t, "default", pod.Spec.ServiceAccountName)
	var projected *corev1.ProjectedVolumeSource
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			projected = v.Projected
		}
	}
	require.NotNil(t, projected, "the ServiceAccount admission plugin adds the token volume: %+v", pod.Spec.Volumes)
	// The root CA ConfigMap the token volume names is published by the
	// controller manager, maybe after the Pod was bound.
	require.Eventually(t, func() bool {
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil
	}, time.Minute, 100*time.Millisecond, "no kube-root-ca.crt ConfigMap")

	// The Node stays Ready past the node lifecycle controller's grace
	// period (40 s), untainted.
	deadline := time.Now().Add(50 * time.Second)
	for time.Now().Before(deadline) {
		node, err := cs.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		require.NoError(t, err)
		require.Empty(t, node.Spec.Taints, "the node was taken for down")
		time.Sleep(2 * time.Second)
	}

	c.Stop()
	stopped = true
	for _, pid := range pids {
		require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "process %d outlived Stop", pid)
	}
}
