package k8stest

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
)

// webhookGoneTimeout bounds the wait for the API server to take up or drop
// a webhook configuration (it loads them asynchronously, within a second).
const webhookGoneTimeout = 30 * time.Second

// RegisterValidatingWebhook applies a ValidatingWebhookConfiguration
// (YAML) named name and waits until the API server sends writes to it (it
// loads configurations asynchronously): until a server-side dry run of the
// manifest probe (nothing is stored) fails with want in kubectl's output.
// The configuration is deleted at the test's cleanup, before the cleanups
// registered earlier (such as stopping the webhook's server) run.
func (e *Env) RegisterValidatingWebhook(t testing.TB, name string, configuration []byte, probe, want string) {
	t.Helper()
	ctx := context.Background()
	if _, stderr, err := e.Kubectl(ctx, configuration, "apply", "-f", "-"); err != nil {
		t.Fatalf("k8stest: register webhook %s: %v %s", name, err, stderr)
	}
	t.Cleanup(func() { e.DeleteValidatingWebhook(t, name) })
	deadline := time.Now().Add(webhookGoneTimeout)
	for {
		_, stderr, err := e.Kubectl(ctx, []byte(probe), "apply", "--dry-run=server", "-f", "-")
		if err != nil && strings.Contains(stderr, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("k8stest: webhook %s not in effect %s after its registration: %v %s", name, webhookGoneTimeout, err, stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DeleteValidatingWebhook deletes a ValidatingWebhookConfiguration of
// kuma.io and waits until the API server no longer sends it writes: later
// tests of the binary must not depend on a webhook whose server is gone.
// The probe is a server-side dry run (nothing is stored) of a Mesh that
// the schema accepts and kuma-cp's webhook refuses; call it while that
// webhook's server still answers, or after it stopped.
func (e *Env) DeleteValidatingWebhook(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	c := e.Client(t)
	err := c.Delete(ctx, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("k8stest: delete webhook configuration %s: %v", name, err)
	}
	probe := func() error {
		m := &v1alpha1.Mesh{ObjectMeta: metav1.ObjectMeta{Name: "k8stest-webhook-probe"},
			Spec: []byte(`{"metrics":{"backends":[{"name":"p","type":"no-such-type"}]}}`)}
		return c.Create(ctx, m, client.DryRunAll)
	}
	deadline := time.Now().Add(webhookGoneTimeout)
	for {
		err := probe()
		if err == nil || apierrors.IsAlreadyExists(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("k8stest: webhook configuration %s still in effect %s after its deletion: %v", name, webhookGoneTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
