// Package install renders what `kumactl install metrics` installs: a
// Prometheus that discovers every data plane proxy of the control plane, with
// Grafana, its datasources and the Kuma dashboards. It only renders, as pure
// functions of Options (Kubernetes manifests, or the files of a Universal
// setup); writing them anywhere is the caller's job.
//
// The objects come from text/template templates embedded in the binary
// (templates/metrics). The output is deterministic: the same Options give the
// same bytes.
package install

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/version"
)

// Defaults of the options (and of the kumactl flags).
const (
	DefaultNamespace = "kuma-metrics"
	DefaultMesh      = resource.DefaultMesh

	// DefaultKubernetesCPAddress and DefaultKubernetesCPAPIAddress are the
	// control plane's MADS and API inside a Kubernetes cluster.
	DefaultKubernetesCPAddress    = "http://kuma-control-plane.kuma-system:5676"
	DefaultKubernetesCPAPIAddress = "http://kuma-control-plane.kuma-system:5681"
	// DefaultUniversalCPAddress and DefaultUniversalCPAPIAddress are a
	// control plane on the same machine.
	DefaultUniversalCPAddress    = "http://127.0.0.1:5676"
	DefaultUniversalCPAPIAddress = "http://127.0.0.1:5681"
)

// The pinned images and the Grafana plugin.
const (
	PrometheusImage       = "prom/prometheus:v2.55.1"
	KubeStateMetricsImage = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0"
	GrafanaImage          = "grafana/grafana:11.3.0"

	// KumaDatasourceType is the Kuma datasource plugin's id, the type of
	// the provisioned Kuma datasource (grafana-datasource/ of this
	// repository).
	KumaDatasourceType = "kumahq-kuma-datasource"
	// DefaultGrafanaPluginImage is the image (without tag) holding the
	// plugin's folder at /kumahq-kuma-datasource (grafana-datasource/Dockerfile):
	// on Kubernetes an init container copies it into Grafana's plugins.
	DefaultGrafanaPluginImage = "docker.io/kumametrics/kuma-grafana-datasource"
	// grafanaPluginsDir is Grafana's plugins folder in its image.
	grafanaPluginsDir = "/var/lib/grafana/plugins"
)

// Fixed facts of the rendered setup.
const (
	// PrometheusDatasourceUID is the uid of the provisioned Prometheus
	// datasource, the only one (and the default): dashboards' ${DS_PROMETHEUS}
	// variable resolves to it.
	PrometheusDatasourceUID = "prometheus"
	// KumaDatasourceUID is the uid of the provisioned Kuma datasource.
	KumaDatasourceUID = "kuma"
	// CPDiagnosticsPort is the control plane's diagnostics port, which serves
	// its own /metrics.
	CPDiagnosticsPort = "5680"
	// UniversalPrometheusURL is where Grafana finds Prometheus in Universal
	// mode (Prometheus' default listen address).
	UniversalPrometheusURL = "http://" + DefaultUniversalPrometheusAddress
	// DefaultUniversalPrometheusAddress is where Prometheus listens in
	// Universal mode unless --prometheus-address says otherwise.
	DefaultUniversalPrometheusAddress = "127.0.0.1:9090"
	// kubernetesDashboardsDir is where Grafana's pod mounts the dashboards.
	kubernetesDashboardsDir = "/etc/grafana/dashboards/kuma"
	// maxConfigMapData is the most a ConfigMap may hold.
	maxConfigMapData = 1 << 20
)

// The files of a Universal setup, relative to Options.OutputDir.
const (
	UniversalPrometheusFile  = "prometheus.yml"
	UniversalDatasourcesFile = "grafana/provisioning/datasources/kuma.yaml"
	UniversalProvidersFile   = "grafana/provisioning/dashboards/kuma.yaml"
	UniversalDashboardsDir   = "grafana/dashboards"
	// UniversalGrafanaConfigFile is Grafana's configuration (its --config):
	// the provisioning and plugins folders of the setup, and the Kuma
	// datasource allowed unsigned.
	UniversalGrafanaConfigFile = "grafana/grafana.ini"
	// UniversalPluginsDir is Grafana's plugins folder (GF_PATHS_PLUGINS);
	// the Kuma datasource goes to its subfolder kumahq-kuma-datasource.
	UniversalPluginsDir = "grafana/plugins"
)

// Options are the choices of an installation. Errors about them name the
// kumactl flag that sets the field.
type Options struct {
	// Namespace receives every object (Kubernetes only): a DNS-1123 label.
	Namespace string
	// Mesh is the mesh the pods of Namespace join (Kubernetes only).
	Mesh string
	// KumaCPAddress is the URL (http or https) of the control plane's
	// monitoring assignment discovery service, which Prometheus asks for
	// the dataplanes to scrape.
	KumaCPAddress string
	// KumaCPAPIAddress is the URL (http or https) of the control plane's API,
	// which the Kuma datasource reads. The control plane's own metrics are
	// scraped from the same host, port 5680.
	KumaCPAPIAddress string
	// KumaCPCACertFile and KumaCPTokenFile (Universal only, absolute paths
	// on Prometheus' host) secure discovery: Prometheus verifies an https://
	// KumaCPAddress against the CA file and sends the user token of the
	// token file (monitoringAssignmentServer.authn.type: token).
	KumaCPCACertFile string
	KumaCPTokenFile  string
	// WithoutPrometheus leaves out Prometheus (and, on Kubernetes,
	// kube-state-metrics). Grafana's Prometheus datasource still points
	// where the Prometheus would be.
	WithoutPrometheus bool
	// WithoutGrafana leaves out Grafana.
	WithoutGrafana bool
	// GrafanaPluginImage (Kubernetes only, with Grafana) is the image whose
	// /kumahq-kuma-datasource folder an init container copies into
	// Grafana's plugins: nothing is downloaded when Grafana starts.
	GrafanaPluginImage string
	// Dashboards holds the Grafana dashboards: every *.json file in it,
	// provisioned as is. Required unless WithoutGrafana.
	Dashboards fs.FS
	// PrometheusAddress (Universal only) is the host:port Prometheus listens
	// on: its own scrape target, and where Grafana's datasources find it;
	// empty is DefaultUniversalPrometheusAddress.
	PrometheusAddress string
	// OutputDir is the absolute directory the Universal files are for;
	// Grafana's dashboard provider points into it (Universal only).
	OutputDir string
}

// KubernetesDefaults are the options of `kumactl install metrics` without
// flags; dashboards still have to be given.
func KubernetesDefaults(dashboards fs.FS) Options {
	return Options{
		Namespace:        DefaultNamespace,
		Mesh:             DefaultMesh,
		KumaCPAddress:    DefaultKubernetesCPAddress,
		KumaCPAPIAddress: DefaultKubernetesCPAPIAddress,
		Dashboards:       dashboards,
		// The plugin of this kumactl's version.
		GrafanaPluginImage: DefaultGrafanaPluginImage + ":" + version.Version,
	}
}

// UniversalDefaults are the options of `kumactl install metrics --universal
// --output-dir outputDir` without other flags.
func UniversalDefaults(outputDir string, dashboards fs.FS) Options {
	return Options{
		KumaCPAddress:    DefaultUniversalCPAddress,
		KumaCPAPIAddress: DefaultUniversalCPAPIAddress,
		Dashboards:       dashboards,
		OutputDir:        outputDir,
	}
}

//go:embed templates/metrics/* templates/control-plane/*
var templateFS embed.FS

var templates = template.Must(template.New("").Option("missingkey=error").Funcs(template.FuncMap{
	"quote": quote,
}).ParseFS(templateFS, "templates/metrics/*"))

// quote renders s as a YAML double-quoted scalar (JSON's string syntax is a
// subset of it).
func quote(s string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// kubernetesTemplates render the manifests, in no particular order (the
// output is sorted).
var kubernetesTemplates = []string{"namespace.yaml", "prometheus.yaml", "kube-state-metrics.yaml", "grafana.yaml"}

// images are the pinned images, for the templates.
type images struct {
	Prometheus, KubeStateMetrics, Grafana, GrafanaPlugin string
}

// data is what the templates see.
type data struct {
	Universal bool

	Namespace string
	Mesh      string

	KumaCPAddress       string
	KumaCPAPIAddress    string
	KumaCPCACertFile    string
	KumaCPTokenFile     string
	KumaCPMetricsTarget string
	HTTPSDURL           string
	PrometheusURL       string
	// PrometheusSelf is Prometheus' own scrape target.
	PrometheusSelf string

	Prometheus bool
	Grafana    bool

	PrometheusConfig   string
	PrometheusChecksum string

	KumaDatasourceType        string
	GrafanaPluginsDir         string
	ProvisioningDir           string
	GrafanaConfigFile         string
	GrafanaDatasources        string
	GrafanaDashboardProviders string
	DashboardsDir             string
	Dashboards                []dashboard
	GrafanaChecksum           string

	Images images
}

// RenderKubernetes renders the manifests of a Kubernetes installation: YAML
// documents separated by "---", sorted by kind (in the order they can be
// applied) and name.
func RenderKubernetes(opts Options) ([]byte, error) {
	if err := validate(opts, false); err != nil {
		return nil, err
	}
	d, err := newData(opts, false)
	if err != nil {
		return nil, err
	}
	d.Namespace = opts.Namespace
	d.Mesh = opts.Mesh
	d.PrometheusURL = "http://prometheus-server." + opts.Namespace
	d.PrometheusSelf = "localhost:9090"
	d.DashboardsDir = kubernetesDashboardsDir
	d.GrafanaPluginsDir = grafanaPluginsDir
	d.Images = images{Prometheus: PrometheusImage, KubeStateMetrics: KubeStateMetricsImage, Grafana: GrafanaImage, GrafanaPlugin: opts.GrafanaPluginImage}
	if err := d.renderConfigs(); err != nil {
		return nil, err
	}
	docs, err := renderManifests(templates, kubernetesTemplates, d)
	if err != nil {
		return nil, err
	}
	return joinManifests(docs), nil
}

// RenderUniversal renders the files of a Universal installation, keyed by
// their slash-separated path relative to opts.OutputDir: prometheus.yml
// (unless WithoutPrometheus), and Grafana's provisioning files and the
// dashboards (unless WithoutGrafana).
func RenderUniversal(opts Options) (map[string][]byte, error) {
	if err := validate(opts, true); err != nil {
		return nil, err
	}
	d, err := newData(opts, true)
	if err != nil {
		return nil, err
	}
	prom := opts.PrometheusAddress
	if prom == "" {
		prom = DefaultUniversalPrometheusAddress
	}
	d.PrometheusURL, d.PrometheusSelf = "http://"+prom, prom
	d.DashboardsDir = filepath.Join(opts.OutputDir, filepath.FromSlash(UniversalDashboardsDir))
	d.ProvisioningDir = filepath.Join(opts.OutputDir, "grafana", "provisioning")
	d.GrafanaConfigFile = filepath.Join(opts.OutputDir, filepath.FromSlash(UniversalGrafanaConfigFile))
	d.GrafanaPluginsDir = filepath.Join(opts.OutputDir, filepath.FromSlash(UniversalPluginsDir))
	if err := d.renderConfigs(); err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	if d.Prometheus {
		files[UniversalPrometheusFile] = []byte(d.PrometheusConfig)
	}
	if d.Grafana {
		ini, err := execute("grafana.ini", d)
		if err != nil {
			return nil, err
		}
		files[UniversalGrafanaConfigFile] = ini
		files[UniversalDatasourcesFile] = []byte(d.GrafanaDatasources)
		files[UniversalProvidersFile] = []byte(d.GrafanaDashboardProviders)
		for _, db := range d.Dashboards {
			files[UniversalDashboardsDir+"/"+db.File] = []byte(db.Content)
		}
	}
	return files, nil
}

// newData fills what both modes share.
func newData(opts Options, universal bool) (*data, error) {
	d := &data{
		Universal:          universal,
		KumaCPAddress:      opts.KumaCPAddress,
		KumaCPAPIAddress:   opts.KumaCPAPIAddress,
		KumaCPCACertFile:   opts.KumaCPCACertFile,
		KumaCPTokenFile:    opts.KumaCPTokenFile,
		HTTPSDURL:          strings.TrimRight(opts.KumaCPAddress, "/") + "/v3/discovery:monitoringassignments/http_sd",
		Prometheus:         !opts.WithoutPrometheus,
		Grafana:            !opts.WithoutGrafana,
		KumaDatasourceType: KumaDatasourceType,
	}
	api, err := url.Parse(opts.KumaCPAPIAddress)
	if err != nil { // validated before
		return nil, fmt.Errorf("--kuma-cp-api-address: %w", err)
	}
	d.KumaCPMetricsTarget = net.JoinHostPort(api.Hostname(), CPDiagnosticsPort)
	if d.Grafana {
		if d.Dashboards, err = loadDashboards(opts.Dashboards); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// renderConfigs renders the configuration files (prometheus.yml, Grafana's
// provisioning) and their checksums.
func (d *data) renderConfigs() error {
	var err error
	if d.Prometheus {
		if d.PrometheusConfig, err = renderConfig("prometheus.yml", d); err != nil {
			return err
		}
		d.PrometheusChecksum = checksum(d.PrometheusConfig)
	}
	if d.Grafana {
		if d.GrafanaDatasources, err = renderConfig("grafana-datasources.yaml", d); err != nil {
			return err
		}
		if d.GrafanaDashboardProviders, err = renderConfig("grafana-dashboard-providers.yaml", d); err != nil {
			return err
		}
		parts := []string{d.GrafanaDatasources, d.GrafanaDashboardProviders}
		for _, db := range d.Dashboards {
			parts = append(parts, db.File, db.Content)
		}
		d.GrafanaChecksum = checksum(parts...)
	}
	return nil
}

// renderConfig renders a configuration file and checks that it is YAML.
func renderConfig(name string, d *data) (string, error) {
	out, err := execute(name, d)
	if err != nil {
		return "", err
	}
	if err := checkYAML(out); err != nil {
		return "", fmt.Errorf("install: rendered %s is not valid YAML: %w", name, err)
	}
	return string(out), nil
}

func execute(name string, d *data) ([]byte, error) { return executeIn(templates, name, d) }

// executeIn renders the template name of set with d.
func executeIn(set *template.Template, name string, d any) ([]byte, error) {
	var buf bytes.Buffer
	if err := set.ExecuteTemplate(&buf, name, d); err != nil {
		return nil, fmt.Errorf("install: render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// renderManifests renders the templates names of set with d into
// manifests.
func renderManifests(set *template.Template, names []string, d any) ([]manifest, error) {
	var ms []manifest
	for _, name := range names {
		out, err := executeIn(set, name, d)
		if err != nil {
			return nil, err
		}
		docs, err := splitManifests(name, out)
		if err != nil {
			return nil, err
		}
		ms = append(ms, docs...)
	}
	return ms, nil
}

// checksum is the SHA-256 of parts, each length-prefixed.
func checksum(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validate checks opts, naming the flag of the first wrong field.
func validate(opts Options, universal bool) error {
	var errs []error
	if !universal {
		if err := validateNamespace(opts.Namespace); err != nil {
			errs = append(errs, err)
		}
		if err := validateMesh(opts.Mesh); err != nil {
			errs = append(errs, err)
		}
	}
	if err := validateURL("--kuma-cp-address", opts.KumaCPAddress, "the control plane's monitoring assignment server, such as http://kuma-control-plane.kuma-system:5676"); err != nil {
		errs = append(errs, err)
	}
	if err := validateURL("--kuma-cp-api-address", opts.KumaCPAPIAddress, "the control plane's API, such as http://kuma-control-plane.kuma-system:5681"); err != nil {
		errs = append(errs, err)
	}
	if !opts.WithoutGrafana && opts.Dashboards == nil {
		errs = append(errs, errors.New("install: no dashboards given (Options.Dashboards is nil)"))
	}
	switch {
	case universal && opts.GrafanaPluginImage != "":
		errs = append(errs, errors.New("--grafana-plugin-image applies only to Kubernetes, not with --universal (use --grafana-plugin)"))
	case !universal && !opts.WithoutGrafana && opts.GrafanaPluginImage == "":
		errs = append(errs, errors.New("--grafana-plugin-image must not be empty: Grafana gets the Kuma datasource plugin from it"))
	case !universal && strings.ContainsAny(opts.GrafanaPluginImage, " \t\n\"'"):
		errs = append(errs, fmt.Errorf("--grafana-plugin-image %q is not an image reference", opts.GrafanaPluginImage))
	}
	if opts.PrometheusAddress != "" {
		if !universal {
			errs = append(errs, errors.New("--prometheus-address applies only with --universal"))
		} else if host, port, err := net.SplitHostPort(opts.PrometheusAddress); err != nil || host == "" || !validPort(port) || strings.ContainsAny(host, " \t\n\"'/@") {
			errs = append(errs, fmt.Errorf("--prometheus-address %q must be host:port, such as 127.0.0.1:9090", opts.PrometheusAddress))
		}
	}
	if universal {
		switch {
		case opts.OutputDir == "":
			errs = append(errs, errors.New("--output-dir is required with --universal"))
		case !filepath.IsAbs(opts.OutputDir) || filepath.Clean(opts.OutputDir) != opts.OutputDir:
			errs = append(errs, fmt.Errorf("--output-dir %q must be an absolute, clean path", opts.OutputDir))
		case strings.ContainsAny(opts.OutputDir, "\n\r;#\""):
			// Grafana's ini file holds it unquoted.
			errs = append(errs, fmt.Errorf("--output-dir %q: a line break, ';', '#' or '\"' cannot stand in Grafana's configuration", opts.OutputDir))
		}
		if opts.WithoutPrometheus && opts.WithoutGrafana {
			errs = append(errs, errors.New("--without-prometheus and --without-grafana together leave nothing to write"))
		}
	}
	errs = append(errs, validateDiscoverySecurity(opts, universal)...)
	return errors.Join(errs...)
}

// validateDiscoverySecurity checks --kuma-cp-ca-cert-file and
// --kuma-cp-token-file: Universal only, absolute paths, and no token in
// clear to a remote control plane.
func validateDiscoverySecurity(opts Options, universal bool) []error {
	var errs []error
	for _, f := range []struct{ flag, path string }{{"--kuma-cp-ca-cert-file", opts.KumaCPCACertFile}, {"--kuma-cp-token-file", opts.KumaCPTokenFile}} {
		switch {
		case f.path == "":
		case !universal:
			errs = append(errs, fmt.Errorf("%s applies only with --universal", f.flag))
		case !filepath.IsAbs(f.path):
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", f.flag, f.path))
		}
	}
	u, err := url.Parse(opts.KumaCPAddress)
	if err != nil || !universal {
		return errs // the address is reported by validateURL
	}
	if opts.KumaCPCACertFile != "" && u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("--kuma-cp-ca-cert-file applies only to an https:// --kuma-cp-address, got %q", opts.KumaCPAddress))
	}
	if opts.KumaCPTokenFile != "" && u.Scheme != "https" && !loopback.IsHost(u.Hostname()) {
		errs = append(errs, fmt.Errorf("--kuma-cp-token-file: the token would cross the network in clear to %q; use an https:// --kuma-cp-address", opts.KumaCPAddress))
	}
	return errs
}

// validateNamespace checks --namespace.
func validateNamespace(ns string) error {
	if ns == "" {
		return errors.New("--namespace must not be empty")
	}
	if len(ns) > 63 || !dns1123Label.MatchString(ns) {
		return fmt.Errorf("--namespace %q is not a valid namespace name: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", ns)
	}
	return nil
}

func validateMesh(mesh string) error {
	if mesh == "" {
		return errors.New("--mesh must not be empty")
	}
	err := resource.Validate(resource.New("", mesh, &resource.MeshSpec{}))
	var verr *resource.ValidationError
	if errors.As(err, &verr) && len(verr.Causes) > 0 {
		return fmt.Errorf("--mesh %q is not a valid mesh name: %s", mesh, verr.Causes[0].Message)
	}
	if err != nil {
		return fmt.Errorf("--mesh %q: %w", mesh, err)
	}
	return nil
}

// validateURL checks an http or https URL of a control plane server.
func validateURL(flag, raw, what string) error {
	if raw == "" {
		return fmt.Errorf("%s must not be empty: it is the URL of %s", flag, what)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q is not a URL: %w", flag, raw, err)
	}
	switch u.Scheme {
	case "http", "https":
	case "grpc", "grpcs":
		return fmt.Errorf("%s %q: Prometheus and Grafana speak HTTP to the control plane; use http:// or https:// (the same port serves both)", flag, raw)
	default:
		return fmt.Errorf("%s %q must be an http:// or https:// URL of %s", flag, raw, what)
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%s %q has no host", flag, raw)
	case u.User != nil:
		return fmt.Errorf("%s %q must not carry credentials", flag, raw)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return fmt.Errorf("%s %q must not have a query or a fragment", flag, raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%s %q has an invalid port", flag, raw)
		}
	}
	return nil
}

// validPort says whether p is a port number, 1-65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}
