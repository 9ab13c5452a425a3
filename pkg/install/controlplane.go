package install

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	yamlv2 "go.yaml.in/yaml/v2"

	"github.com/kumametrics/mesh/pkg/k8s/crds"
	"github.com/kumametrics/mesh/pkg/pki"
)

// What `kumactl install control-plane` installs, and its defaults.
const (
	DefaultControlPlaneNamespace = "kuma-system"
	DefaultControlPlaneImage     = "docker.io/kumametrics/kuma-cp"
	// ControlPlaneName names the ServiceAccount, the RBAC objects, the
	// Deployment and the Service (kuma-control-plane.<namespace>).
	ControlPlaneName = "kuma-control-plane"
	// ControlPlaneTLSSecret holds the control plane's serving certificate
	// (tls.crt, tls.key) and its CA (ca.crt).
	ControlPlaneTLSSecret = "kuma-tls-cert"
	// WebhookConfigurationName and WebhookName are the reference system's.
	WebhookConfigurationName = "kuma-validating-webhook-configuration"
	WebhookName              = "validator.kuma-admission.kuma.io"
	// AdmissionPort is the admission server's port (the Service's too).
	AdmissionPort = 5443
	// WebhookPath is where the admission server serves the webhook
	// (webhook.Path; kumactl does not link the webhook).
	WebhookPath = "/validate-kuma-io-v1alpha1"
	// InjectorConfigurationName names the sidecar injector's
	// MutatingWebhookConfiguration (the reference system's name), and
	// InjectorPath is where the admission server serves it (injector.Path).
	InjectorConfigurationName = "kuma-admission-mutating-webhook-configuration"
	InjectorPath              = "/inject-sidecar"
	// InjectorWebhookName handles the Pods of namespaces labelled for
	// injection, InjectorOptInWebhookName the Pods elsewhere that opt in.
	InjectorWebhookName      = "kuma-injector.kuma.io"
	InjectorOptInWebhookName = "pods.kuma-injector.kuma.io"
	// ControlPlaneCertDir is where the TLS Secret is mounted, and
	// ControlPlaneWorkDir the control plane's work directory (an emptyDir:
	// the container's file system is read-only).
	ControlPlaneCertDir = "/var/run/secrets/kuma.io/tls-cert"
	ControlPlaneWorkDir = "/var/run/kuma"
	// generatedTLSLifetime is the lifetime of a generated CA and certificate.
	generatedTLSLifetime = 10 * 365 * 24 * time.Hour
)

// ControlPlaneOptions are the choices of a control-plane installation.
// Errors about them name the kumactl flag that sets the field.
type ControlPlaneOptions struct {
	// Namespace receives the control plane: a DNS-1123 label.
	Namespace string
	// Image is the control plane's image without its tag, ImageTag its tag.
	Image, ImageTag string
	// TLS is the control plane's serving certificate: GenerateControlPlaneTLS,
	// or the user's.
	TLS ControlPlaneTLS
}

// ControlPlaneTLS is the serving certificate of the control plane in the
// cluster (admission server, dataplane server, the API's HTTPS), PEM: the
// certificate (then its intermediates), its key, and the CA bundle that
// verifies it (the webhook's caBundle).
type ControlPlaneTLS struct {
	Cert, Key, CA []byte
}

// ControlPlaneDNSNames are the names of the control plane's Service in
// namespace, which its certificate must carry: the API server calls the
// webhook at kuma-control-plane.<namespace>.svc, proxies dial
// kuma-control-plane.<namespace>.
func ControlPlaneDNSNames(namespace string) []string {
	svc := ControlPlaneName + "." + namespace
	return []string{ControlPlaneName, svc, svc + ".svc", svc + ".svc.cluster.local"}
}

// ControlPlaneUser is the Kubernetes user of the control plane's
// ServiceAccount in namespace.
func ControlPlaneUser(namespace string) string {
	return "system:serviceaccount:" + namespace + ":" + ControlPlaneName
}

// GenerateControlPlaneTLS creates a CA and a certificate for the control
// plane's Service in namespace, both valid for ten years from now.
func GenerateControlPlaneTLS(namespace string, now time.Time) (ControlPlaneTLS, error) {
	ca, err := pki.NewCA(ControlPlaneName+"-ca", pki.KeyType{}, now, generatedTLSLifetime)
	if err != nil {
		return ControlPlaneTLS{}, fmt.Errorf("generate the control plane's CA: %w", err)
	}
	names := ControlPlaneDNSNames(namespace)
	leaf, err := pki.Issue(ca, pki.Leaf{CommonName: names[2], DNSNames: names, Server: true, Lifetime: generatedTLSLifetime}, now)
	if err != nil {
		return ControlPlaneTLS{}, fmt.Errorf("generate the control plane's certificate: %w", err)
	}
	return ControlPlaneTLS{Cert: leaf.CertPEM, Key: leaf.KeyPEM, CA: ca.CertPEM}, nil
}

// Validate checks that the pair is a key pair whose certificate the CA
// bundle verifies, now, for the names of the control plane's Service in
// namespace, as the API server will check it.
func (t ControlPlaneTLS) Validate(namespace string, now time.Time) error {
	pair, err := pki.ParseKeyPair(t.Cert, t.Key)
	if err != nil {
		return fmt.Errorf("--tls-cert and --tls-key: %w", err)
	}
	roots, err := pki.Pool(t.CA)
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	chain, err := pki.ParseCertificates(t.Cert)
	if err != nil {
		return fmt.Errorf("--tls-cert: %w", err)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, name := range ControlPlaneDNSNames(namespace)[1:3] {
		_, err := pair.Cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("--tls-cert is not valid for the control plane's Service %s (verified with --ca-cert): %w", name, err)
		}
	}
	return nil
}

// WebhookOptions describe the webhook configuration apart from the rest of
// an installation, for a control plane outside the cluster (registered by
// URL) as in the tests.
type WebhookOptions struct {
	// URL of the admission server's webhook path (https://host:port/validate-kuma-io-v1alpha1).
	URL string
	// CABundle (PEM) verifies the admission server's certificate.
	CABundle []byte
	// ControlPlaneUser is the control plane's Kubernetes user, whose own
	// writes are not sent to the webhook ("" sends every write).
	ControlPlaneUser string
}

// controlPlaneData is what the control-plane templates see.
type controlPlaneData struct {
	Namespace, Name, Image            string
	TLSSecret, TLSChecksum            string
	CertDir, WorkDir                  string
	WebhookConfiguration, WebhookName string
	DiagnosticsPort                   int
	CustomResources                   []string
	TLS                               struct{ Cert, Key, CA string }
	Ports                             []port
	Env                               []envVar
	Webhook                           webhookData
	Injector                          injectorData
}

// injectorData renders the MutatingWebhookConfiguration.
type injectorData struct {
	Configuration, Path, URL string
	// Switch is the label and annotation kuma.io/sidecar-injection, with
	// its Enabled and Disabled values.
	Switch string
	// Enabled and Disabled are the values, as a YAML flow list's items
	// (quoted: a bare yes or true would be a boolean).
	Enabled, Disabled string
	Webhooks          []injectorWebhook
}

type injectorWebhook struct {
	Name, NamespaceOperator  string
	ObjectSelector           bool
	ConditionName, Condition string
}

type webhookData struct {
	URL, Path, CABundle, ControlPlaneUser string
	Port                                  int
	Resources                             []string
}

type port struct {
	Name string
	Port int
}

// envVar is a value, or a field of the pod (fieldRef).
type envVar struct{ Name, Value, FieldPath string }

// WebhookResources are the kinds the webhook is registered for
// (webhook.Resources()): those with a spec, which users write.
var WebhookResources = []string{"meshes", "trafficpermissions", "dataplanes"}

// controlPlanePorts are kuma-cp's ports, as its defaults have them.
var controlPlanePorts = []port{
	{"mads-server", 5676},
	{"dp-server", 5678},
	{"diagnostics", 5680},
	{"http-api", 5681},
	{"https-api", 5682},
	{"admission", AdmissionPort},
}

var controlPlaneTemplates = template.Must(template.New("").Option("missingkey=error").Funcs(template.FuncMap{
	"quote": quote,
	"join":  strings.Join,
}).ParseFS(templateFS, "templates/control-plane/*"))

// controlPlaneTemplateFiles render the manifests, in no particular order.
var controlPlaneTemplateFiles = []string{"namespace.yaml", "rbac.yaml", "control-plane.yaml", "webhook.yaml", "injector.yaml"}

// RenderControlPlane renders everything a cluster needs to run the control
// plane: its namespace, the CRDs, the ServiceAccount and its RBAC, the TLS
// Secret, the Service, the Deployment, the validating webhook configuration
// and the sidecar injector's mutating webhook configuration, sorted as RenderKubernetes sorts. The output is a pure
// function of opts.
func RenderControlPlane(opts ControlPlaneOptions) ([]byte, error) {
	if err := validateControlPlane(opts); err != nil {
		return nil, err
	}
	d, err := newControlPlaneData(opts.Namespace)
	if err != nil {
		return nil, err
	}
	d.Image = opts.Image + ":" + opts.ImageTag
	d.TLS.Cert = base64.StdEncoding.EncodeToString(opts.TLS.Cert)
	d.TLS.Key = base64.StdEncoding.EncodeToString(opts.TLS.Key)
	d.TLS.CA = base64.StdEncoding.EncodeToString(opts.TLS.CA)
	d.TLSChecksum = checksum(string(opts.TLS.Cert), string(opts.TLS.Key), string(opts.TLS.CA))
	d.Webhook.Path, d.Webhook.Port = WebhookPath, AdmissionPort
	d.Injector.Path = InjectorPath
	d.Webhook.CABundle = d.TLS.CA
	d.Webhook.ControlPlaneUser = ControlPlaneUser(opts.Namespace)
	ms, err := crdManifests()
	if err != nil {
		return nil, err
	}
	docs, err := renderManifests(controlPlaneTemplates, controlPlaneTemplateFiles, d)
	if err != nil {
		return nil, err
	}
	return joinManifests(append(ms, docs...)), nil
}

// RenderCRDs renders the CustomResourceDefinitions alone.
func RenderCRDs() ([]byte, error) {
	ms, err := crdManifests()
	if err != nil {
		return nil, err
	}
	return joinManifests(ms), nil
}

// RenderWebhookConfiguration renders the validating webhook configuration
// of a control plane that the API server reaches at opts.URL, with the same
// rules as RenderControlPlane's.
func RenderWebhookConfiguration(opts WebhookOptions) ([]byte, error) {
	if err := validateUser(opts.ControlPlaneUser); err != nil {
		return nil, err
	}
	return renderByURL(opts, "webhook", "webhook.yaml", func(d *controlPlaneData) {
		d.Webhook.URL = opts.URL
		d.Webhook.ControlPlaneUser = opts.ControlPlaneUser
	})
}

// RenderInjectorConfiguration renders the sidecar injector's mutating
// webhook configuration of a control plane that the API server reaches at
// opts.URL (https://host:port/inject-sidecar), with the same rules as
// RenderControlPlane's. opts.ControlPlaneUser is not used: the injector
// sees Pods only.
func RenderInjectorConfiguration(opts WebhookOptions) ([]byte, error) {
	return renderByURL(opts, "injector", "injector.yaml", func(d *controlPlaneData) { d.Injector.URL = opts.URL })
}

// renderByURL renders one webhook configuration template for a control
// plane registered by URL; what names the webhook in errors, set puts the
// URL in place.
func renderByURL(opts WebhookOptions, what, file string, set func(*controlPlaneData)) ([]byte, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.RawQuery != "" {
		return nil, fmt.Errorf("%s URL %q: must be an https:// URL without credentials, query or fragment", what, opts.URL)
	}
	if _, err := pki.ParseCertificates(opts.CABundle); err != nil {
		return nil, fmt.Errorf("%s CA bundle: %w", what, err)
	}
	d, err := newControlPlaneData("")
	if err != nil {
		return nil, err
	}
	d.Webhook.CABundle = base64.StdEncoding.EncodeToString(opts.CABundle)
	set(d)
	ms, err := renderManifests(controlPlaneTemplates, []string{file}, d)
	if err != nil {
		return nil, err
	}
	return joinManifests(ms), nil
}

// Values of the injection switch (podcontroller's).
var (
	injectionEnabled  = []string{"enabled", "true", "yes"}
	injectionDisabled = []string{"disabled", "false", "no"}
)

// quotedList renders values as the items of a YAML flow list of strings.
func quotedList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = strconv.Quote(v) // plain letters: a JSON string, valid YAML
	}
	return strings.Join(q, ", ")
}

// celList renders values as a CEL list of strings.
func celList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = "'" + v + "'"
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// celSwitch is a CEL condition on the Pod's label or annotation
// kuma.io/sidecar-injection having one of values.
func celSwitch(field string, values []string) string {
	const key = "'kuma.io/sidecar-injection'"
	return fmt.Sprintf("has(object.metadata.%[1]s) && %[2]s in object.metadata.%[1]s && object.metadata.%[1]s[%[2]s] in %[3]s", field, key, celList(values))
}

func newInjectorData() injectorData {
	return injectorData{
		Configuration: InjectorConfigurationName, Path: InjectorPath,
		Switch: "kuma.io/sidecar-injection", Enabled: quotedList(injectionEnabled), Disabled: quotedList(injectionDisabled),
		Webhooks: []injectorWebhook{
			{
				// Namespaces labelled for injection: every Pod but those that
				// opt out (the label by objectSelector, the annotation by
				// matchConditions).
				Name: InjectorWebhookName, NamespaceOperator: "In", ObjectSelector: true,
				ConditionName: "not-opted-out", Condition: "!(" + celSwitch("annotations", injectionDisabled) + ")",
			},
			{
				// Elsewhere: only the Pods that opt in themselves.
				Name: InjectorOptInWebhookName, NamespaceOperator: "NotIn",
				ConditionName: "opted-in", Condition: "(" + celSwitch("labels", injectionEnabled) + ") || (" + celSwitch("annotations", injectionEnabled) + ")",
			},
		},
	}
}

func newControlPlaneData(namespace string) (*controlPlaneData, error) {
	d := &controlPlaneData{
		Namespace: namespace, Name: ControlPlaneName, TLSSecret: ControlPlaneTLSSecret,
		CertDir: ControlPlaneCertDir, WorkDir: ControlPlaneWorkDir,
		WebhookConfiguration: WebhookConfigurationName, WebhookName: WebhookName,
		DiagnosticsPort: 5680, Ports: controlPlanePorts,
		Webhook:  webhookData{Resources: WebhookResources},
		Injector: newInjectorData(),
	}
	plurals, err := crdPlurals()
	if err != nil {
		return nil, err
	}
	d.CustomResources = plurals
	tlsFile := func(f string) string { return ControlPlaneCertDir + "/" + f }
	d.Env = []envVar{
		{Name: "KUMA_ENVIRONMENT", Value: "kubernetes"},
		{Name: "KUMA_STORE_TYPE", Value: "kubernetes"},
		{Name: "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE", FieldPath: "metadata.namespace"},
		{Name: "KUMA_GENERAL_WORK_DIR", Value: ControlPlaneWorkDir},
		{Name: "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT", Value: fmt.Sprint(AdmissionPort)},
		{Name: "KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR", Value: ControlPlaneCertDir},
		{Name: "KUMA_DP_SERVER_TLS_CERT_FILE", Value: tlsFile("tls.crt")},
		{Name: "KUMA_DP_SERVER_TLS_KEY_FILE", Value: tlsFile("tls.key")},
		{Name: "KUMA_API_SERVER_HTTPS_TLS_CERT_FILE", Value: tlsFile("tls.crt")},
		{Name: "KUMA_API_SERVER_HTTPS_TLS_KEY_FILE", Value: tlsFile("tls.key")},
		// Injected proxies verify the dataplane server with the Secret's CA.
		{Name: "KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE", Value: tlsFile("ca.crt")},
	}
	return d, nil
}

// crdPlurals are the plurals of the CRDs (their resources in RBAC rules).
func crdPlurals() ([]string, error) {
	var out []string
	for _, m := range crds.Manifests() {
		var crd struct {
			Spec struct {
				Names struct {
					Plural string `yaml:"plural"`
				} `yaml:"names"`
			} `yaml:"spec"`
		}
		if err := yamlv2.Unmarshal(m.YAML, &crd); err != nil || crd.Spec.Names.Plural == "" {
			return nil, fmt.Errorf("install: CRD %s names no plural: %v", m.File, err)
		}
		out = append(out, crd.Spec.Names.Plural)
	}
	return out, nil
}

// crdManifests are the CRDs, normalized as the other manifests.
func crdManifests() ([]manifest, error) {
	var ms []manifest
	for _, m := range crds.Manifests() {
		docs, err := splitManifests(m.File, m.YAML)
		if err != nil {
			return nil, err
		}
		ms = append(ms, docs...)
	}
	return ms, nil
}

var (
	// imageTag is what a Docker tag may be.
	imageTag = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	// imageName is a repository, optionally with a registry host and port.
	imageName = regexp.MustCompile(`^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
)

// validateControlPlane checks opts, naming the flags at fault.
func validateControlPlane(opts ControlPlaneOptions) error {
	var errs []error
	if err := validateNamespace(opts.Namespace); err != nil {
		errs = append(errs, err)
	}
	switch {
	case opts.Image == "":
		errs = append(errs, errors.New("--image must not be empty: it is the control plane's image without its tag, such as "+DefaultControlPlaneImage))
	case !imageName.MatchString(opts.Image):
		errs = append(errs, fmt.Errorf("--image %q is not an image name (lower-case repository path, optionally after a registry host; the tag goes to --image-tag)", opts.Image))
	}
	if !imageTag.MatchString(opts.ImageTag) {
		errs = append(errs, fmt.Errorf("--image-tag %q is not an image tag (letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-')", opts.ImageTag))
	}
	if len(errs) == 0 {
		if err := opts.TLS.Validate(opts.Namespace, time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validateUser checks a user name for the webhook's match condition.
func validateUser(user string) error {
	if strings.ContainsAny(user, `'\`+"\n") {
		return fmt.Errorf("control plane user %q: must not hold quotes, backslashes or line breaks", user)
	}
	return nil
}
