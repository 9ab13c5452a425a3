package install_test

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/crds"
	"github.com/kumametrics/mesh/pkg/k8s/injector"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
	"github.com/kumametrics/mesh/pkg/pki"
)

// testTLS is a CA and a certificate for kuma-control-plane in kuma-system,
// valid for a hundred years from 2026-12-06 (kept in testdata so that the
// golden output stays put).
func testTLS(t *testing.T) install.ControlPlaneTLS {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "control-plane-tls", name))
		require.NoError(t, err)
		return b
	}
	return install.ControlPlaneTLS{Cert: read("tls.crt"), Key: read("tls.key"), CA: read("ca.crt")}
}

func controlPlaneOptions(t *testing.T) install.ControlPlaneOptions {
	return install.ControlPlaneOptions{Namespace: "kuma-system", Image: install.DefaultControlPlaneImage, ImageTag: "1.2.3", TLS: testTLS(t)}
}

func renderControlPlane(t *testing.T, opts install.ControlPlaneOptions) []byte {
	t.Helper()
	out, err := install.RenderControlPlane(opts)
	require.NoError(t, err)
	return out
}

func TestRenderControlPlaneGolden(t *testing.T) {
	golden(t, "control-plane.golden.yaml", string(renderControlPlane(t, controlPlaneOptions(t))))
	crdsOut, err := install.RenderCRDs()
	require.NoError(t, err)
	golden(t, "crds.golden.yaml", string(crdsOut))
}

// controlPlaneObjects are the typed objects of `install control-plane`.
type controlPlaneObjects struct {
	order          []string
	namespace      corev1.Namespace
	crds           []apiextensionsv1.CustomResourceDefinition
	serviceAccount corev1.ServiceAccount
	clusterRole    rbacv1.ClusterRole
	clusterBinding rbacv1.ClusterRoleBinding
	role           rbacv1.Role
	roleBinding    rbacv1.RoleBinding
	secret         corev1.Secret
	service        corev1.Service
	deployment     appsv1.Deployment
	webhook        admissionregistrationv1.ValidatingWebhookConfiguration
	injector       admissionregistrationv1.MutatingWebhookConfiguration
}

// decodeControlPlane decodes every document strictly into its k8s.io/api
// type: a field the type does not know fails.
func decodeControlPlane(t *testing.T, out []byte) controlPlaneObjects {
	t.Helper()
	var o controlPlaneObjects
	require.True(t, bytes.HasSuffix(out, []byte("\n")))
	for i, doc := range strings.Split(string(out), "\n---\n") {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &head), "document %d", i)
		o.order = append(o.order, head.Kind+"/"+head.Metadata.Name)
		var target any
		want := map[string]string{
			"Namespace": "v1", "ServiceAccount": "v1", "Secret": "v1", "Service": "v1",
			"CustomResourceDefinition": "apiextensions.k8s.io/v1", "Deployment": "apps/v1",
			"ClusterRole": "rbac.authorization.k8s.io/v1", "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
			"Role": "rbac.authorization.k8s.io/v1", "RoleBinding": "rbac.authorization.k8s.io/v1",
			"ValidatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
			"MutatingWebhookConfiguration":   "admissionregistration.k8s.io/v1",
		}[head.Kind]
		require.Equal(t, want, head.APIVersion, "document %d (%s)", i, head.Kind)
		switch head.Kind {
		case "Namespace":
			target = &o.namespace
		case "CustomResourceDefinition":
			o.crds = append(o.crds, apiextensionsv1.CustomResourceDefinition{})
			target = &o.crds[len(o.crds)-1]
		case "ServiceAccount":
			target = &o.serviceAccount
		case "ClusterRole":
			target = &o.clusterRole
		case "ClusterRoleBinding":
			target = &o.clusterBinding
		case "Role":
			target = &o.role
		case "RoleBinding":
			target = &o.roleBinding
		case "Secret":
			target = &o.secret
		case "Service":
			target = &o.service
		case "Deployment":
			target = &o.deployment
		case "ValidatingWebhookConfiguration":
			target = &o.webhook
		case "MutatingWebhookConfiguration":
			target = &o.injector
		}
		require.NoError(t, yaml.UnmarshalStrict([]byte(doc), target), "document %d (%s) does not decode strictly:\n%s", i, head.Kind, doc)
	}
	return o
}

func TestControlPlaneObjects(t *testing.T) {
	opts := controlPlaneOptions(t)
	o := decodeControlPlane(t, renderControlPlane(t, opts))
	const ns, name = "kuma-system", "kuma-control-plane"

	// In the order they apply: the namespace and the CRDs first, the
	// webhook configurations last.
	require.Equal(t, []string{
		"Namespace/kuma-system",
		"CustomResourceDefinition/controlplaneinstances.kuma.io",
		"CustomResourceDefinition/dataplaneinsights.kuma.io",
		"CustomResourceDefinition/dataplanes.kuma.io",
		"CustomResourceDefinition/meshes.kuma.io",
		"CustomResourceDefinition/trafficpermissions.kuma.io",
		"ServiceAccount/" + name,
		"ClusterRole/" + name,
		"ClusterRoleBinding/" + name,
		"Role/" + name,
		"RoleBinding/" + name,
		"Secret/kuma-tls-cert",
		"Service/" + name,
		"Deployment/" + name,
		"ValidatingWebhookConfiguration/kuma-validating-webhook-configuration",
		"MutatingWebhookConfiguration/kuma-admission-mutating-webhook-configuration",
	}, o.order)
	require.Equal(t, "restricted", o.namespace.Labels["pod-security.kubernetes.io/enforce"])

	// The CRDs are the foundation's, unchanged.
	require.Len(t, o.crds, len(crds.Manifests()))
	for _, m := range crds.Manifests() {
		var want apiextensionsv1.CustomResourceDefinition
		require.NoError(t, yaml.UnmarshalStrict(m.YAML, &want), m.File)
		var got *apiextensionsv1.CustomResourceDefinition
		for i := range o.crds {
			if o.crds[i].Name == want.Name {
				got = &o.crds[i]
			}
		}
		require.NotNil(t, got, want.Name)
		require.Equal(t, want, *got)
	}

	// Least privilege: exactly these rules.
	require.Equal(t, []rbacv1.PolicyRule{
		{APIGroups: []string{"kuma.io"}, Resources: []string{"meshes", "trafficpermissions", "dataplanes", "dataplaneinsights", "controlplaneinstances"},
			Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "services", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/finalizers"}, Verbs: []string{"update"}},
		{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
	}, o.clusterRole.Rules)
	var plurals []string
	for _, k := range v1alpha1.Kinds() {
		plurals = append(plurals, k.Plural)
	}
	require.ElementsMatch(t, plurals, o.clusterRole.Rules[0].Resources, "every custom resource, nothing else")
	require.Equal(t, ns, o.role.Namespace)
	require.Equal(t, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
	}, o.role.Rules)
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: o.serviceAccount.Name, Namespace: o.serviceAccount.Namespace}
	require.Equal(t, ns, sa.Namespace)
	require.Equal(t, []rbacv1.Subject{sa}, o.clusterBinding.Subjects)
	require.Equal(t, rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: o.clusterRole.Name}, o.clusterBinding.RoleRef)
	require.Equal(t, []rbacv1.Subject{sa}, o.roleBinding.Subjects)
	require.Equal(t, ns, o.roleBinding.Namespace)
	require.Equal(t, rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: o.role.Name}, o.roleBinding.RoleRef)

	// The TLS Secret holds the given material.
	require.Equal(t, corev1.SecretTypeTLS, o.secret.Type)
	require.Equal(t, ns, o.secret.Namespace)
	require.Equal(t, map[string][]byte{"tls.crt": opts.TLS.Cert, "tls.key": opts.TLS.Key, "ca.crt": opts.TLS.CA}, o.secret.Data)

	// The Service: the control plane's ports, to its pods.
	require.Equal(t, ns, o.service.Namespace)
	ports := map[string]int32{}
	for _, p := range o.service.Spec.Ports {
		require.Equal(t, p.Port, p.TargetPort.IntVal, p.Name)
		ports[p.Name] = p.Port
	}
	require.Equal(t, map[string]int32{"mads-server": 5676, "dp-server": 5678, "diagnostics": 5680, "http-api": 5681, "https-api": 5682, "admission": 5443}, ports)
	d := o.deployment
	require.Equal(t, d.Spec.Selector.MatchLabels, o.service.Spec.Selector)
	for k, v := range d.Spec.Selector.MatchLabels {
		require.Equal(t, v, d.Spec.Template.Labels[k])
	}

	// The Deployment runs kuma-cp in Kubernetes mode with that Secret.
	pod := d.Spec.Template.Spec
	require.Equal(t, o.serviceAccount.Name, pod.ServiceAccountName)
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	require.Equal(t, "docker.io/kumametrics/kuma-cp:1.2.3", c.Image)
	require.Equal(t, []string{"run"}, c.Args)
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	require.Equal(t, "kubernetes", env["KUMA_ENVIRONMENT"].Value)
	require.Equal(t, "metadata.namespace", env["KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE"].ValueFrom.FieldRef.FieldPath)
	require.Equal(t, "5443", env["KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT"].Value)
	certDir := env["KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR"].Value
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	require.Equal(t, certDir, mounts["tls-cert"].MountPath)
	require.True(t, mounts["tls-cert"].ReadOnly)
	require.Equal(t, env["KUMA_GENERAL_WORK_DIR"].Value, mounts["work-dir"].MountPath)
	for _, v := range pod.Volumes {
		switch v.Name {
		case "tls-cert":
			require.Equal(t, o.secret.Name, v.Secret.SecretName)
		case "work-dir":
			require.NotNil(t, v.EmptyDir)
		default:
			t.Fatalf("unexpected volume %s", v.Name)
		}
	}
	require.Equal(t, certDir+"/ca.crt", env["KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE"].Value, "injected proxies trust the Secret's CA")
	for _, f := range []string{"KUMA_DP_SERVER_TLS_CERT_FILE", "KUMA_API_SERVER_HTTPS_TLS_CERT_FILE"} {
		require.Equal(t, certDir+"/tls.crt", env[f].Value, f)
	}
	for _, f := range []string{"KUMA_DP_SERVER_TLS_KEY_FILE", "KUMA_API_SERVER_HTTPS_TLS_KEY_FILE"} {
		require.Equal(t, certDir+"/tls.key", env[f].Value, f)
	}
	containerPorts := map[string]int32{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	require.Equal(t, ports, containerPorts)
	require.Equal(t, "/healthy", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "/ready", c.ReadinessProbe.HTTPGet.Path)
	require.EqualValues(t, 5680, c.LivenessProbe.HTTPGet.Port.IntVal)
	require.EqualValues(t, 5680, c.ReadinessProbe.HTTPGet.Port.IntVal)
	// Restricted: non-root, no privilege escalation, no capabilities, a
	// read-only root file system.
	require.True(t, *pod.SecurityContext.RunAsNonRoot)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext.SeccompProfile.Type)
	require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
	require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)

	// The webhook: kuma.io only, through the Service, verified with the CA;
	// the control plane's own writes are not sent to it.
	require.Len(t, o.webhook.Webhooks, 1)
	w := o.webhook.Webhooks[0]
	require.Equal(t, install.WebhookName, w.Name)
	require.Equal(t, admissionregistrationv1.Fail, *w.FailurePolicy)
	require.Equal(t, admissionregistrationv1.SideEffectClassNone, *w.SideEffects)
	require.Equal(t, []string{"v1"}, w.AdmissionReviewVersions)
	require.Nil(t, w.ClientConfig.URL)
	require.Equal(t, &admissionregistrationv1.ServiceReference{Name: o.service.Name, Namespace: ns, Path: ptr(webhook.Path), Port: ptr(int32(5443))}, w.ClientConfig.Service)
	require.Equal(t, opts.TLS.CA, w.ClientConfig.CABundle)
	require.Equal(t, []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{"kuma.io"}, APIVersions: []string{"v1alpha1"},
			Resources: webhook.Resources(), Scope: ptr(admissionregistrationv1.AllScopes)},
	}}, w.Rules)
	require.Nil(t, w.NamespaceSelector)
	require.Nil(t, w.ObjectSelector)
	require.Equal(t, []admissionregistrationv1.MatchCondition{{Name: "not-the-control-plane",
		Expression: "request.userInfo.username != 'system:serviceaccount:kuma-system:kuma-control-plane'"}}, w.MatchConditions)

	checkInjectorConfiguration(t, o.injector, &admissionregistrationv1.WebhookClientConfig{
		Service:  &admissionregistrationv1.ServiceReference{Name: o.service.Name, Namespace: ns, Path: ptr(injector.Path), Port: ptr(int32(5443))},
		CABundle: opts.TLS.CA,
	})
}

// checkInjectorConfiguration: Pod creations only; in namespaces labelled
// for injection every Pod but those opted out (label by objectSelector,
// annotation by matchConditions), elsewhere only the Pods that opt in; never
// the control plane's namespace; failing closed.
func checkInjectorConfiguration(t *testing.T, got admissionregistrationv1.MutatingWebhookConfiguration, client *admissionregistrationv1.WebhookClientConfig) {
	t.Helper()
	require.Equal(t, "kuma-admission-mutating-webhook-configuration", got.Name)
	require.Len(t, got.Webhooks, 2)
	system := metav1.LabelSelectorRequirement{Key: "kuma.io/system-namespace", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}
	enabled := []string{"enabled", "true", "yes"}
	for i, w := range got.Webhooks {
		require.Equal(t, admissionregistrationv1.Fail, *w.FailurePolicy, w.Name)
		require.Equal(t, admissionregistrationv1.SideEffectClassNone, *w.SideEffects)
		require.Equal(t, admissionregistrationv1.NeverReinvocationPolicy, *w.ReinvocationPolicy)
		require.Equal(t, []string{"v1"}, w.AdmissionReviewVersions)
		require.Equal(t, *client, w.ClientConfig)
		require.Equal(t, []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				Scope: ptr(admissionregistrationv1.NamespacedScope)},
		}}, w.Rules, "Pods only: a Deployment's template is not injected")
		op := metav1.LabelSelectorOpIn
		if i == 1 {
			op = metav1.LabelSelectorOpNotIn
		}
		require.Equal(t, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{system,
			{Key: "kuma.io/sidecar-injection", Operator: op, Values: enabled}}}, w.NamespaceSelector, w.Name)
		require.Len(t, w.MatchConditions, 1)
	}
	require.Equal(t, "kuma-injector.kuma.io", got.Webhooks[0].Name)
	require.Equal(t, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "kuma.io/sidecar-injection", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled", "false", "no"}}}}, got.Webhooks[0].ObjectSelector)
	require.Equal(t, "pods.kuma-injector.kuma.io", got.Webhooks[1].Name)
	require.Nil(t, got.Webhooks[1].ObjectSelector)
}

func ptr[T any](v T) *T { return &v }

func TestTheWebhookConstantsAreTheWebhooks(t *testing.T) {
	// kumactl does not link the webhook; its copies must agree.
	require.Equal(t, webhook.Path, install.WebhookPath)
	require.Equal(t, injector.Path, install.InjectorPath)
	require.Equal(t, webhook.Resources(), install.WebhookResources)
}

func TestControlPlaneNamespaceAndImage(t *testing.T) {
	opts := controlPlaneOptions(t)
	opts.Namespace = "mesh-system"
	var err error
	opts.TLS, err = install.GenerateControlPlaneTLS("mesh-system", time.Now())
	require.NoError(t, err)
	opts.Image, opts.ImageTag = "registry.example.com:5000/mesh/kuma-cp", "2.0.0-rc.1"
	o := decodeControlPlane(t, renderControlPlane(t, opts))
	require.Equal(t, "mesh-system", o.namespace.Name)
	for _, ns := range []string{o.serviceAccount.Namespace, o.role.Namespace, o.roleBinding.Namespace, o.secret.Namespace, o.service.Namespace, o.deployment.Namespace,
		o.clusterBinding.Subjects[0].Namespace, o.roleBinding.Subjects[0].Namespace, o.webhook.Webhooks[0].ClientConfig.Service.Namespace} {
		require.Equal(t, "mesh-system", ns)
	}
	require.Equal(t, "registry.example.com:5000/mesh/kuma-cp:2.0.0-rc.1", o.deployment.Spec.Template.Spec.Containers[0].Image)
	require.Equal(t, "request.userInfo.username != 'system:serviceaccount:mesh-system:kuma-control-plane'", o.webhook.Webhooks[0].MatchConditions[0].Expression)
}

func TestGeneratedControlPlaneTLS(t *testing.T) {
	now := time.Now()
	tlsm, err := install.GenerateControlPlaneTLS("kuma-system", now)
	require.NoError(t, err)
	require.NoError(t, tlsm.Validate("kuma-system", now))
	roots, err := pki.Pool(tlsm.CA)
	require.NoError(t, err)
	certs, err := pki.ParseCertificates(tlsm.Cert)
	require.NoError(t, err)
	for _, name := range install.ControlPlaneDNSNames("kuma-system") {
		_, err := certs[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		require.NoError(t, err, name)
	}
	require.Equal(t, []string{"kuma-control-plane", "kuma-control-plane.kuma-system", "kuma-control-plane.kuma-system.svc", "kuma-control-plane.kuma-system.svc.cluster.local"},
		install.ControlPlaneDNSNames("kuma-system"))
	require.WithinDuration(t, now.Add(10*365*24*time.Hour), certs[0].NotAfter, time.Minute)
	// Each run generates new material.
	again, err := install.GenerateControlPlaneTLS("kuma-system", now)
	require.NoError(t, err)
	require.NotEqual(t, tlsm.CA, again.CA)
	// Not for another namespace, not after it expires.
	require.ErrorContains(t, tlsm.Validate("payments", now), "--tls-cert is not valid for the control plane's Service kuma-control-plane.payments")
	require.ErrorContains(t, tlsm.Validate("kuma-system", now.Add(11*365*24*time.Hour)), "expired")
}

func TestControlPlaneValidation(t *testing.T) {
	other, err := install.GenerateControlPlaneTLS("kuma-system", time.Now())
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		edit func(*install.ControlPlaneOptions)
		want []string
	}{
		{"empty namespace", func(o *install.ControlPlaneOptions) { o.Namespace = "" }, []string{"--namespace must not be empty"}},
		{"bad namespace", func(o *install.ControlPlaneOptions) { o.Namespace = "Kuma_System" }, []string{`--namespace "Kuma_System" is not a valid namespace name`}},
		{"image with a tag", func(o *install.ControlPlaneOptions) { o.Image = "kumametrics/kuma-cp:1.0" }, []string{`--image "kumametrics/kuma-cp:1.0" is not an image name`, "--image-tag"}},
		{"empty image", func(o *install.ControlPlaneOptions) { o.Image = "" }, []string{"--image must not be empty"}},
		{"bad tag", func(o *install.ControlPlaneOptions) { o.ImageTag = "-latest" }, []string{`--image-tag "-latest" is not an image tag`}},
		{"empty tag", func(o *install.ControlPlaneOptions) { o.ImageTag = "" }, []string{`--image-tag "" is not an image tag`}},
		{"key of another certificate", func(o *install.ControlPlaneOptions) { o.TLS.Key = other.Key }, []string{"--tls-cert and --tls-key:", "private key does not match public key"}},
		{"another CA", func(o *install.ControlPlaneOptions) { o.TLS.CA = other.CA }, []string{"--tls-cert is not valid for the control plane's Service", "(verified with --ca-cert)", "unknown authority"}},
		{"not a CA", func(o *install.ControlPlaneOptions) { o.TLS.CA = []byte("hello") }, []string{"--ca-cert: no PEM certificate found"}},
		{"another namespace", func(o *install.ControlPlaneOptions) { o.Namespace = "payments" }, []string{"kuma-control-plane.payments"}},
		{"no TLS", func(o *install.ControlPlaneOptions) { o.TLS = install.ControlPlaneTLS{} }, []string{"--tls-cert and --tls-key:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := controlPlaneOptions(t)
			tc.edit(&opts)
			_, err := install.RenderControlPlane(opts)
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func TestRenderWebhookConfiguration(t *testing.T) {
	ca := testTLS(t).CA
	out, err := install.RenderWebhookConfiguration(install.WebhookOptions{URL: "https://127.0.0.1:40443" + webhook.Path, CABundle: ca, ControlPlaneUser: "kuma-cp"})
	require.NoError(t, err)
	var got admissionregistrationv1.ValidatingWebhookConfiguration
	require.NoError(t, yaml.UnmarshalStrict(out, &got))
	// The same webhook as the installation's, called by URL.
	want := decodeControlPlane(t, renderControlPlane(t, controlPlaneOptions(t))).webhook
	want.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: ptr("https://127.0.0.1:40443" + webhook.Path), CABundle: ca}
	want.Webhooks[0].MatchConditions[0].Expression = "request.userInfo.username != 'kuma-cp'"
	require.Equal(t, want, got)

	out, err = install.RenderWebhookConfiguration(install.WebhookOptions{URL: "https://127.0.0.1:40443" + webhook.Path, CABundle: ca})
	require.NoError(t, err)
	require.NotContains(t, string(out), "matchConditions", "without a user, every write goes to the webhook")

	for _, tc := range []struct {
		opts install.WebhookOptions
		want string
	}{
		{install.WebhookOptions{URL: "http://127.0.0.1:5443/x", CABundle: ca}, "must be an https:// URL"},
		{install.WebhookOptions{URL: "https://u:p@127.0.0.1:5443/x", CABundle: ca}, "must be an https:// URL"},
		{install.WebhookOptions{URL: "https://127.0.0.1:5443/x", CABundle: []byte("x")}, "webhook CA bundle: no PEM certificate found"},
		{install.WebhookOptions{URL: "https://127.0.0.1:5443/x", CABundle: ca, ControlPlaneUser: "o'brien"}, "must not hold quotes"},
	} {
		_, err := install.RenderWebhookConfiguration(tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
}

func TestRenderInjectorConfiguration(t *testing.T) {
	ca := testTLS(t).CA
	out, err := install.RenderInjectorConfiguration(install.WebhookOptions{URL: "https://127.0.0.1:40443" + injector.Path, CABundle: ca})
	require.NoError(t, err)
	var got admissionregistrationv1.MutatingWebhookConfiguration
	require.NoError(t, yaml.UnmarshalStrict(out, &got))
	checkInjectorConfiguration(t, got, &admissionregistrationv1.WebhookClientConfig{URL: ptr("https://127.0.0.1:40443" + injector.Path), CABundle: ca})
	for _, tc := range []struct {
		opts install.WebhookOptions
		want string
	}{
		{install.WebhookOptions{URL: "http://127.0.0.1:5443/inject-sidecar", CABundle: ca}, "must be an https:// URL"},
		{install.WebhookOptions{URL: "https://127.0.0.1:5443/x", CABundle: []byte("x")}, "injector CA bundle: no PEM certificate found"},
	} {
		_, err := install.RenderInjectorConfiguration(tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
}

// TestTheDeploymentsSettingsAreKumaCPs: every variable the Deployment sets
// is a setting of kuma-cp, and together they load (the namespace as the
// downward API gives it).
func TestTheDeploymentsSettingsAreKumaCPs(t *testing.T) {
	o := decodeControlPlane(t, renderControlPlane(t, controlPlaneOptions(t)))
	env := map[string]string{}
	for _, e := range o.deployment.Spec.Template.Spec.Containers[0].Env {
		require.Contains(t, cpconfig.EnvNames(), e.Name)
		switch {
		case e.ValueFrom != nil:
			require.Equal(t, "metadata.namespace", e.ValueFrom.FieldRef.FieldPath, e.Name)
			env[e.Name] = o.deployment.Namespace
		default:
			env[e.Name] = e.Value
		}
	}
	cfg, err := cpconfig.Load("", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	require.NoError(t, err)
	require.True(t, cfg.Kubernetes())
	require.Equal(t, "kuma-system", cfg.Store.Kubernetes.SystemNamespace)
	require.Equal(t, install.ControlPlaneCertDir, cfg.Runtime.Kubernetes.AdmissionServer.CertDir)
	require.EqualValues(t, install.AdmissionPort, cfg.Runtime.Kubernetes.AdmissionServer.Port)
	require.Equal(t, install.ControlPlaneWorkDir, cfg.General.WorkDir)
}
