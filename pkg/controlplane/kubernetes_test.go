package controlplane_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/kumactl"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
)

// TestKubernetesMode: a control plane in Kubernetes mode, outside the
// cluster on a kubeconfig, keeps its resources in the API server: it makes
// the default mesh, the CAs of a mesh applied with kubectl land in
// kuma-system as Secrets, MADS serves Dataplanes made as custom resources
// with their Pod's name and namespace, and the API and kumactl read the
// custom resources but send writes to kubectl.
func TestKubernetesMode(t *testing.T) {
	env := k8stest.Get(t)
	c := env.Client(t)
	ctx := t.Context()
	addrs := startKubernetesMode(t, env, nil).Addrs()

	// The default mesh and its allow-all permission are custom resources.
	var mesh v1alpha1.Mesh
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "default"}, &mesh))
	var tp v1alpha1.TrafficPermission
	require.NoError(t, c.Get(ctx, client.ObjectKey{Name: "allow-all-default"}, &tp))
	require.Equal(t, "default", tp.Mesh)

	// The guide's mesh with mTLS and metrics, applied with kubectl: its CA
	// lands in kuma-system.
	_, _, err := env.Kubectl(ctx, nil, "apply", "-f", "../resource/testdata/guide/mesh-kubernetes-mtls.yaml")
	require.NoError(t, err)
	for _, name := range []string{"default.ca-builtin-cert-ca-1", "default.ca-builtin-key-ca-1"} {
		var sec corev1.Secret
		require.Eventually(t, func() bool {
			return c.Get(ctx, client.ObjectKey{Namespace: "kuma-system", Name: name}, &sec) == nil
		}, 30*time.Second, 50*time.Millisecond, "Secret kuma-system/%s", name)
		require.Equal(t, kubernetes.SecretType, sec.Type)
		require.Equal(t, "default", sec.Labels[kubernetes.MeshLabel])
		require.NotEmpty(t, sec.Data[kubernetes.SecretDataKey])
	}

	// A Pod's Dataplane, as the pod controller makes it: MADS serves it
	// under <pod>.<namespace>, with the Pod's name and namespace as labels.
	ns := env.Namespace(t, "kuma-example", nil)
	dp := &v1alpha1.Dataplane{
		ObjectMeta: metav1.ObjectMeta{Name: "backend-5c89f4d995-85znn", Namespace: ns},
		Mesh:       "default",
		Spec: json.RawMessage(`{"networking":{"address":"127.0.0.7","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend_` + ns + `_svc_80"}}]},
			"metrics":{"type":"prometheus","conf":{"port":1234,"path":"/non-standard-path","skipMTLS":true}}}`),
	}
	require.NoError(t, c.Create(ctx, dp))
	var group mads.TargetGroup
	require.Eventually(t, func() bool {
		for _, g := range httpSD(t, addrs["mads"]) {
			if g.Labels[mads.MetaDataplane] == "backend-5c89f4d995-85znn."+ns {
				group = g
				return true
			}
		}
		return false
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, []string{"127.0.0.7:1234"}, group.Targets)
	require.Equal(t, "backend-5c89f4d995-85znn", group.Labels[mads.MetaLabelPrefix+"k8s_kuma_io_name"])
	require.Equal(t, ns, group.Labels[mads.MetaLabelPrefix+"k8s_kuma_io_namespace"])
	require.Equal(t, "/non-standard-path", group.Labels["__metrics_path__"])

	// The API reads the custom resources and refuses to write them.
	api := "http://" + addrs["api"]
	status, body := do(t, http.MethodGet, api+"/meshes/default/dataplanes/backend-5c89f4d995-85znn."+ns, "")
	require.Equal(t, http.StatusOK, status, body)
	status, body = do(t, http.MethodPut, api+"/meshes/default", `{"type":"Mesh","name":"default"}`)
	require.Equal(t, http.StatusMethodNotAllowed, status)
	require.Contains(t, body, "kubectl apply")

	// kumactl apply says so too.
	cfgFile := filepath.Join(t.TempDir(), "kumactl.yaml")
	var stdout, stderr bytes.Buffer
	rc := &kumactl.RootContext{Stdin: strings.NewReader("type: Mesh\nname: other\n"), Stdout: &stdout, Stderr: &stderr, Version: "test", NewClient: kumactl.NewClient}
	require.Zero(t, kumactl.Execute(ctx, rc, []string{"--config-file", cfgFile, "config", "control-planes", "add", "--name", "k8s", "--address", api}), stderr.String())
	rc.Stdin = strings.NewReader("type: Mesh\nname: other\n")
	require.Equal(t, 1, kumactl.Execute(ctx, rc, []string{"--config-file", cfgFile, "apply", "-f", "-"}))
	require.Contains(t, stderr.String(), "you should always be using 'kubectl apply' instead")
	var other v1alpha1.Mesh
	require.True(t, apierrors.IsNotFound(c.Get(ctx, client.ObjectKey{Name: "other"}, &other)), "nothing written")
	_, err = os.Stat(cfgFile)
	require.NoError(t, err)
}

func httpSD(t *testing.T, addr string) []mads.TargetGroup {
	t.Helper()
	status, body := do(t, http.MethodGet, "http://"+addr+mads.HTTPSDPath, "")
	require.Equal(t, http.StatusOK, status, body)
	var groups []mads.TargetGroup
	require.NoError(t, json.Unmarshal([]byte(body), &groups))
	return groups
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	require.NoError(t, err)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}
