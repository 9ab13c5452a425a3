package kumactl_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// k8sReadOnly is the reference system's refusal of a write through the API
// of a control plane on Kubernetes.
const k8sReadOnly = "On Kubernetes you cannot change the state of Kuma resources with 'kumactl apply' or via the HTTP API." +
	" As a best practice, you should always be using 'kubectl apply' instead." +
	" You can still use 'kumactl' or the HTTP API to make read-only operations. On Universal this limitation does not apply.\n"

// TestWritesToAControlPlaneOnKubernetes: the control plane refuses writes
// through its API (405); kumactl says to use kubectl, with the command.
func TestWritesToAControlPlaneOnKubernetes(t *testing.T) {
	guide := filepath.Join("..", "resource", "testdata", "guide", "trafficpermissions-kubernetes.yaml")
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		// plain answers as the reference system's control plane does: the
		// message as text, not the API's JSON error.
		plain bool
	}{
		{name: "apply the guide permissions", args: []string{"apply", "-f", guide}},
		{name: "apply the universal form", args: []string{"apply", "-f", "testdata/input/mixed.yaml"}},
		{name: "apply from stdin", args: []string{"apply", "-f", "-"}, stdin: "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: default\n"},
		{name: "apply to the reference system", args: []string{"apply", "-f", "testdata/input/k8s-server-rejects.yaml"}, plain: true},
		{name: "delete a mesh", args: []string{"delete", "mesh", "default"}},
		{name: "delete a traffic permission", args: []string{"delete", "traffic-permission", "metrics-permissions"}},
		{name: "delete the dataplane of a pod", args: []string{"delete", "dataplane", "backend-5c89f4d995-85znn.kuma-example"}},
		{name: "delete a dataplane in the control plane namespace", args: []string{"delete", "dataplane", "backend-1"}, plain: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.stdin = tc.stdin
			refuse := func(w http.ResponseWriter) {
				if tc.plain {
					w.Header().Set("Content-Type", "text/plain")
					w.WriteHeader(http.StatusMethodNotAllowed)
					_, _ = w.Write([]byte(k8sReadOnly))
					return
				}
				writeError(w, http.StatusMethodNotAllowed, "Method not allowed", k8sReadOnly, nil)
			}
			puts := 0
			e.cp.Put = func(w http.ResponseWriter, _ *http.Request, _ *resource.Object) { puts++; refuse(w) }
			e.cp.Delete = func(w http.ResponseWriter, _ *http.Request, _ resource.Descriptor, _, _ string) { refuse(w) }
			res := e.run(tc.args...)
			require.Equal(t, 1, res.code)
			require.Contains(t, res.stderr, "kubectl ")
			require.LessOrEqual(t, puts, 1, "apply stops at the first refusal")
			golden(t, "kubernetes/"+tc.name, res.String(), guide, "{{GUIDE}}", e.cp.URL(), "{{CP}}")
		})
	}
}

// TestAgainstTheAPIOfAControlPlaneOnKubernetes: the control plane's own
// API in Kubernetes mode (custom resource kinds read-only) and kumactl:
// reads work, writes name the kubectl command.
func TestAgainstTheAPIOfAControlPlaneOnKubernetes(t *testing.T) {
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr,
		KubernetesKinds: []resource.Kind{resource.KindMesh, resource.KindTrafficPermission, resource.KindDataplane}})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	e := newEnv(t)
	cfg := config.Default()
	require.NoError(t, cfg.AddControlPlane(config.ControlPlane{Name: "kubernetes", Coordinates: config.Coordinates{APIServer: config.APIServer{URL: srv.URL}}}, false))
	require.NoError(t, config.Save(e.cfgFile, cfg))

	res := e.run("get", "meshes", "-o", "json")
	require.Equal(t, 0, res.code, res.stderr)
	require.Contains(t, res.stdout, `"name": "default"`)

	guide := filepath.Join("..", "resource", "testdata", "guide", "mesh-kubernetes-short.yaml")
	res = e.run("apply", "-f", guide)
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "refuses writes through its API: write with kubectl (kumactl still reads everything):\n  kubectl apply -f "+guide+"\n")
	require.Contains(t, res.stderr, "The control plane said: "+apiserver.KubectlMessage)
	res = e.run("delete", "traffic-permission", "allow-all-default")
	require.Equal(t, 1, res.code)
	require.Contains(t, res.stderr, "\n  kubectl delete trafficpermission allow-all-default\n")
	_, err = st.Get(context.Background(), resource.KindTrafficPermission, resource.Key{Mesh: "default", Name: "allow-all-default"})
	require.NoError(t, err, "nothing was deleted")
}
