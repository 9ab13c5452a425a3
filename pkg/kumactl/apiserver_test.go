package kumactl_test

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/k8stest"
	"github.com/kumametrics/mesh/pkg/install"
)

func TestMain(m *testing.M) { k8stest.Main(m) }

// freshName is prefix and a random suffix: a namespace no earlier run of
// the test binary made (the API server lives as long as the binary, and no
// namespace controller removes namespaces).
func freshName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// kubectlApply pipes manifests into `kubectl apply` with the extra
// arguments and returns its stdout and stderr.
func kubectlApply(t *testing.T, env *k8stest.Env, manifests string, args ...string) (string, string, error) {
	t.Helper()
	return env.Kubectl(t.Context(), []byte(manifests), append([]string{"apply", "-f", "-"}, args...)...)
}

// warnings are the warning lines of kubectl's stderr, except those about a
// missing last-applied-configuration annotation (the harness creates the
// CRDs without kubectl).
func warnings(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "Warning:") && !strings.Contains(l, "last-applied-configuration annotation") {
			out = append(out, l)
		}
	}
	return out
}

// TestInstallOutputsApplyToARealAPIServer: what `kumactl install
// control-plane` and `kumactl install metrics` print is accepted by a real
// API server, piped into kubectl as a user would. A server-side dry run
// cannot check the objects of a namespace that does not exist yet (the
// namespace it would create is not created): as a user would, the test
// creates the namespace first (the stream's own Namespace document), then
// dry-runs the whole stream, then applies it.
func TestInstallOutputsApplyToARealAPIServer(t *testing.T) {
	env := k8stest.Get(t)
	for _, tc := range []struct {
		args      []string
		namespace string
	}{
		{[]string{"install", "control-plane"}, freshName("kuma-system")},
		{[]string{"install", "metrics"}, freshName("kuma-metrics")},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			res := runInstall(nil, append(tc.args, "--namespace", tc.namespace)...)
			require.Equal(t, 0, res.code, res.stderr)
			first := res.stdout[:strings.Index(res.stdout, "\n---\n")+1]
			require.True(t, strings.HasPrefix(first, "apiVersion: v1\nkind: Namespace\n"), first)

			// On a fresh cluster the dry run refuses the namespace's objects.
			_, stderr, err := kubectlApply(t, env, res.stdout, "--dry-run=server")
			require.Error(t, err)
			require.Contains(t, stderr, `namespaces "`+tc.namespace+`" not found`)

			_, stderr, err = kubectlApply(t, env, first)
			require.NoError(t, err, stderr)
			out, stderr, err := kubectlApply(t, env, res.stdout, "--dry-run=server")
			require.NoError(t, err)
			// No unknown field, no Pod Security warning (the namespace
			// enforces the restricted standard now).
			require.Empty(t, warnings(stderr), stderr)
			require.Equal(t, strings.Count(res.stdout, "\nkind: "), strings.Count(out, "(server dry run)"), out)
			if tc.args[1] == "control-plane" {
				// The sidecar injector's configuration, CEL conditions and selectors included.
				require.Contains(t, out, "mutatingwebhookconfiguration.admissionregistration.k8s.io/kuma-admission-mutating-webhook-configuration created (server dry run)")
			}
			t.Logf("kumactl %s | kubectl apply --dry-run=server -f -:\n%s", strings.Join(tc.args, " "), out)
		})
	}
}

// TestInstalledControlPlaneOnARealAPIServer applies `kumactl install
// control-plane` for real and checks, with the API server's own RBAC and
// admission: the control plane's ServiceAccount may do what kuma-cp does and
// nothing more; the webhook guards kuma.io writes only, and refuses them
// while the control plane cannot answer (nothing unchecked is stored), but
// not the control plane's own.
func TestInstalledControlPlaneOnARealAPIServer(t *testing.T) {
	env := k8stest.Get(t)
	ctx := t.Context()
	ns := freshName("kuma-cp-installed")
	res := runInstall(nil, "install", "control-plane", "--namespace", ns)
	require.Equal(t, 0, res.code, res.stderr)
	out, stderr, err := kubectlApply(t, env, res.stdout)
	require.NoError(t, err, stderr)
	// The webhook has no control plane behind it: leave no kuma.io write of
	// this test binary depending on it.
	t.Cleanup(func() { env.DeleteValidatingWebhook(t, install.WebhookConfigurationName) })
	require.Contains(t, out, "deployment.apps/kuma-control-plane created")
	require.Contains(t, out, "validatingwebhookconfiguration.admissionregistration.k8s.io/kuma-validating-webhook-configuration created")
	require.Contains(t, out, "mutatingwebhookconfiguration.admissionregistration.k8s.io/kuma-admission-mutating-webhook-configuration created")
	// Nor Pod creations on the injector.
	meshNS, otherNS := freshName("kuma-example"), freshName("plain")
	_, stderr, err = env.Kubectl(ctx, nil, "create", "namespace", meshNS)
	require.NoError(t, err, stderr)
	_, stderr, err = env.Kubectl(ctx, nil, "label", "namespace", meshNS, "kuma.io/sidecar-injection=enabled")
	require.NoError(t, err, stderr)
	_, stderr, err = env.Kubectl(ctx, nil, "create", "namespace", otherNS)
	require.NoError(t, err, stderr)
	pod := func(ns, name, meta string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n" + meta + "spec:\n  containers:\n  - {name: app, image: app}\n"
	}
	const injectorDown = `failed calling webhook "kuma-injector.kuma.io"`
	t.Cleanup(func() {
		env.DeleteMutatingWebhook(t, install.InjectorConfigurationName, pod(meshNS, "probe", ""), injectorDown)
	})
	// Applying the same output again changes nothing.
	out, stderr, err = kubectlApply(t, env, res.stdout)
	require.NoError(t, err, stderr)
	require.NotContains(t, out, " configured", out)

	// Least privilege, as the API server's authorizer judges it.
	sa := "system:serviceaccount:" + ns + ":kuma-control-plane"
	for _, tc := range []struct {
		verb, resource, namespace string
		allowed                   bool
	}{
		{"create", "meshes.kuma.io", "", true},
		{"watch", "trafficpermissions.kuma.io", "", true},
		{"delete", "dataplanes.kuma.io", "kuma-example", true},
		{"update", "dataplaneinsights.kuma.io", "kuma-example", true},
		{"update", "controlplaneinstances.kuma.io", "", true},
		{"watch", "pods", "kuma-example", true},
		{"list", "services", "", true},
		{"get", "namespaces", "", true},
		{"create", "events.events.k8s.io", "kuma-example", true},
		{"patch", "events.events.k8s.io", "kuma-example", true},
		{"update", "pods/finalizers", "kuma-example", true},
		{"create", "events", "kuma-example", false},
		{"patch", "meshes.kuma.io", "", false},
		{"deletecollection", "dataplanes.kuma.io", "kuma-example", false},
		{"create", "tokenreviews.authentication.k8s.io", "", true},
		{"watch", "secrets", ns, true},
		{"create", "secrets", ns, true},
		{"get", "secrets", "kuma-example", false},
		{"list", "secrets", "", false},
		{"create", "pods", "kuma-example", false},
		{"update", "pods", "kuma-example", false},
		{"delete", "services", "kuma-example", false},
		{"update", "namespaces", "", false},
		{"get", "configmaps", ns, false},
		{"create", "deployments.apps", ns, false},
		{"update", "validatingwebhookconfigurations.admissionregistration.k8s.io", "", false},
		{"create", "serviceaccounts/token", ns, false},
		{"update", "customresourcedefinitions.apiextensions.k8s.io", "", false},
	} {
		res, sub, _ := strings.Cut(tc.resource, "/")
		args := []string{"auth", "can-i", tc.verb, res, "--as", sa}
		if sub != "" {
			args = append(args, "--subresource", sub)
		}
		if tc.namespace != "" {
			args = append(args, "--namespace", tc.namespace)
		}
		out, _, err := env.Kubectl(ctx, nil, args...)
		want := "no"
		if tc.allowed {
			want = "yes"
		}
		require.Equal(t, want, strings.TrimSpace(out), "%s %s in %q: %v", tc.verb, tc.resource, tc.namespace, err)
	}

	// The webhook is registered: with no control plane running behind the
	// Service, a kuma.io write is refused (eventually: the API server loads
	// webhook configurations asynchronously) and nothing is stored.
	mesh := "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: unchecked\n"
	calling := regexp.MustCompile(`failed calling webhook "validator.kuma-admission.kuma.io"`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, stderr, err = kubectlApply(t, env, mesh, "--dry-run=server")
		if err != nil && calling.MatchString(stderr) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the webhook never took effect: %v %s", err, stderr)
		time.Sleep(100 * time.Millisecond)
	}
	_, stderr, err = kubectlApply(t, env, mesh)
	require.Error(t, err)
	require.Regexp(t, calling, stderr)
	_, _, err = env.Kubectl(ctx, nil, "get", "mesh", "unchecked")
	require.ErrorContains(t, err, "NotFound")
	// Other groups do not depend on it.
	_, stderr, err = env.Kubectl(ctx, nil, "create", "configmap", "unaffected", "--namespace", ns)
	require.NoError(t, err, stderr)
	// The control plane's own writes skip it (and its RBAC allows them).
	out, stderr, err = kubectlApply(t, env, mesh, "--as", sa)
	require.NoError(t, err, stderr)
	require.Contains(t, out, "mesh.kuma.io/unchecked created")
	_, _, err = env.Kubectl(ctx, nil, "delete", "mesh", "unchecked", "--as", sa)
	require.NoError(t, err)

	// The injector is registered (failurePolicy Fail): with no control
	// plane behind it, a Pod of a namespace labelled for injection is
	// refused, never started without its proxy; Pods elsewhere, and Pods
	// that opt out (by label: objectSelector; by annotation: the CEL
	// condition), never reach it and are created.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, stderr, err = kubectlApply(t, env, pod(meshNS, "probe", ""), "--dry-run=server")
		if err != nil && strings.Contains(stderr, injectorDown) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the injector never took effect: %v %s", err, stderr)
		time.Sleep(100 * time.Millisecond)
	}
	_, stderr, err = kubectlApply(t, env, pod(meshNS, "meshed", ""))
	require.Error(t, err)
	require.Contains(t, stderr, injectorDown)
	_, stderr, err = kubectlApply(t, env, pod(otherNS, "opts-in", "  annotations:\n    kuma.io/sidecar-injection: enabled\n"))
	require.Error(t, err, "a Pod that opts in elsewhere reaches the injector too")
	require.Contains(t, stderr, `failed calling webhook "pods.kuma-injector.kuma.io"`)
	for _, p := range []string{
		pod(otherNS, "elsewhere", ""),
		pod(meshNS, "opted-out", "  annotations:\n    kuma.io/sidecar-injection: disabled\n"),
		pod(meshNS, "opted-out-by-label", "  labels:\n    kuma.io/sidecar-injection: \"no\"\n"),
	} {
		out, stderr, err := kubectlApply(t, env, p)
		require.NoError(t, err, stderr)
		require.Contains(t, out, "created")
	}
}
