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
)

// webhookGoneTimeout bounds the wait for the API server to take up or drop
// a webhook configuration (it loads them asynchronously, within a second).
const webhookGoneTimeout = 30 * time.Second

// dryRunResult is the API server's answer to a server-side dry run: the
// object as it would be stored (every admission webhook applied) in
// stdout, or a refusal in stderr.
type dryRunResult struct {
	stdout, stderr string
	err            error
}

// dryRun applies manifest with a server-side dry run: nothing is stored.
func (e *Env) dryRun(manifest string) dryRunResult {
	out, stderr, err := e.Kubectl(context.Background(), []byte(manifest), "apply", "--dry-run=server", "-o", "yaml", "-f", "-")
	return dryRunResult{out, stderr, err}
}

// awaitDryRun repeats the dry run of probe until done holds for its result,
// and fails t after webhookGoneTimeout.
func (e *Env) awaitDryRun(t testing.TB, what, probe string, done func(dryRunResult) bool) {
	t.Helper()
	deadline := time.Now().Add(webhookGoneTimeout)
	for {
		r := e.dryRun(probe)
		if done(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("k8stest: %s not so %s after it was asked for: %v %s", what, webhookGoneTimeout, r.err, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// registerWebhook applies a webhook configuration (YAML) and waits until
// inEffect holds for the dry run of probe; at the test's cleanup, before
// the cleanups registered earlier (such as stopping the webhook's server)
// run, remove deletes it.
func (e *Env) registerWebhook(t testing.TB, name string, configuration []byte, probe string, inEffect func(dryRunResult) bool, remove func()) {
	t.Helper()
	if _, stderr, err := e.Kubectl(context.Background(), configuration, "apply", "-f", "-"); err != nil {
		t.Fatalf("k8stest: register webhook %s: %v %s", name, err, stderr)
	}
	t.Cleanup(remove)
	e.awaitDryRun(t, "webhook "+name+" in effect", probe, inEffect)
}

// deleteWebhook deletes a webhook configuration and waits until gone holds
// for the dry run of probe.
func (e *Env) deleteWebhook(t testing.TB, obj client.Object, probe string, gone func(dryRunResult) bool) {
	t.Helper()
	err := e.Client(t).Delete(context.Background(), obj)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("k8stest: delete webhook configuration %s: %v", obj.GetName(), err)
	}
	e.awaitDryRun(t, "webhook "+obj.GetName()+" gone", probe, gone)
}

// RegisterValidatingWebhook applies a ValidatingWebhookConfiguration
// (YAML) named name and waits until the API server sends writes to it (it
// loads configurations asynchronously): until a server-side dry run of the
// manifest probe (nothing is stored) fails with want in kubectl's output.
// The configuration is deleted at the test's cleanup, before the cleanups
// registered earlier (such as stopping the webhook's server) run.
func (e *Env) RegisterValidatingWebhook(t testing.TB, name string, configuration []byte, probe, want string) {
	t.Helper()
	e.registerWebhook(t, name, configuration, probe,
		func(r dryRunResult) bool { return r.err != nil && strings.Contains(r.stderr, want) },
		func() { e.DeleteValidatingWebhook(t, name) })
}

// validatingProbe is a Mesh that the schema accepts and kuma-cp's
// validating webhook refuses.
const validatingProbe = `apiVersion: kuma.io/v1alpha1
kind: Mesh
metadata:
  name: k8stest-webhook-probe
spec:
  metrics:
    backends:
    - name: p
      type: no-such-type
`

// DeleteValidatingWebhook deletes a ValidatingWebhookConfiguration of
// kuma.io and waits until the API server no longer sends it writes: later
// tests of the binary must not depend on a webhook whose server is gone.
// The probe is a server-side dry run (nothing is stored) of a Mesh that
// the schema accepts and kuma-cp's webhook refuses; call it while that
// webhook's server still answers, or after it stopped.
func (e *Env) DeleteValidatingWebhook(t testing.TB, name string) {
	t.Helper()
	e.deleteWebhook(t, &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}},
		validatingProbe, func(r dryRunResult) bool { return r.err == nil || strings.Contains(r.stderr, "AlreadyExists") })
}

// RegisterMutatingWebhook applies a MutatingWebhookConfiguration (YAML)
// named name and waits until the API server sends writes to it: until the
// server-side dry run of the manifest probe (nothing is stored) shows want,
// in the object it would store (a mutation) or in kubectl's error (a
// refusal). At the test's cleanup, before the cleanups registered earlier
// run, the configuration is deleted and the API server waited for until the
// dry run of probe no longer shows want.
func (e *Env) RegisterMutatingWebhook(t testing.TB, name string, configuration []byte, probe, want string) {
	t.Helper()
	e.registerWebhook(t, name, configuration, probe, showsFunc(want), func() { e.DeleteMutatingWebhook(t, name, probe, want) })
}

// DeleteMutatingWebhook deletes a MutatingWebhookConfiguration and waits
// until the server-side dry run of probe no longer shows want (in the
// object or in kubectl's error).
func (e *Env) DeleteMutatingWebhook(t testing.TB, name, probe, want string) {
	t.Helper()
	shows := showsFunc(want)
	e.deleteWebhook(t, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}},
		probe, func(r dryRunResult) bool { return !shows(r) })
}

func showsFunc(want string) func(dryRunResult) bool {
	return func(r dryRunResult) bool { return strings.Contains(r.stdout, want) || strings.Contains(r.stderr, want) }
}
