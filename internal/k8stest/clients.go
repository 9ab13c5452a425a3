package k8stest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/crds"
)

// Scheme returns a scheme with Kubernetes' built-in kinds, the CRD kinds
// (apiextensions.k8s.io/v1) and kuma.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("k8stest: scheme: %v", err)) // static registrations: a programming error
		}
	}
	return s
}

// Client returns a controller-runtime client of the cluster admin, on Scheme.
func (e *Env) Client(t testing.TB) client.Client {
	t.Helper()
	c, err := client.New(e.Config(), client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatalf("k8stest: client: %v", err)
	}
	return c
}

// Kubectl runs the kubectl of the API server's version on the admin's
// kubeconfig, with stdin (may be nil); it returns stdout and stderr.
func (e *Env) Kubectl(ctx context.Context, stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, e.KubectlPath, append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), err
}

// Namespace creates a namespace of a fresh name starting with prefix, with
// labels, and returns its name. Namespaces are never removed (no namespace
// controller runs): tests isolate themselves by fresh names.
func (e *Env) Namespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels}}
	if err := e.Client(t).Create(context.Background(), ns); err != nil {
		t.Fatalf("k8stest: create namespace: %v", err)
	}
	return ns.Name
}

// EnsureNamespace creates the namespace name unless it exists (e.g. the
// control plane's kuma-system, shared by the tests of a binary).
func (e *Env) EnsureNamespace(t testing.TB, name string) {
	t.Helper()
	err := e.Client(t).Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8stest: create namespace %s: %v", name, err)
	}
}

// LoopbackHost returns a fresh loopback address for a test's own listeners
// (e.g. a Pod's IP), apart from the API server's.
func LoopbackHost() string { return loopback.Host() }

// installCRDs creates kuma.io's CRDs and waits until each serves.
func installCRDs(ctx context.Context, cfg *rest.Config) error {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return fmt.Errorf("k8stest: client: %w", err)
	}
	for _, m := range crds.Manifests() {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(m.YAML, &crd); err != nil {
			return fmt.Errorf("k8stest: %s: %w", m.File, err)
		}
		if err := c.Create(ctx, &crd); err != nil {
			return fmt.Errorf("k8stest: install %s: %w", m.File, err)
		}
	}
	// A client discovers the API once: a fresh one per attempt sees the
	// new kinds as soon as they are served.
	for _, k := range v1alpha1.Kinds() {
		for {
			err := c.List(ctx, k.NewList(), client.Limit(1))
			if err == nil {
				break
			}
			if fresh, cerr := client.New(cfg, client.Options{Scheme: Scheme()}); cerr == nil {
				c = fresh
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("k8stest: CRD of %s not served: %w", k.Kind, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}
