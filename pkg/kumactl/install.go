package kumactl

import (
	"errors"
	"fmt"
	"io/fs"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/install"
	"github.com/kumametrics/mesh/pkg/version"
)

func newInstallCmd(rc *RootContext) *cobra.Command {
	cmd := newGroupCmd("install", "Install the control plane and its companions",
		"Render what to install: the control plane on Kubernetes, its CRDs, its webhooks, the metrics stack; set up a transparent proxy.")
	cmd.AddCommand(newInstallControlPlaneCmd(rc), newInstallCRDsCmd(rc), newInstallWebhooksCmd(rc), newInstallMetricsCmd(rc), newInstallTransparentProxyCmd(rc))
	return cmd
}

const installControlPlaneLong = `Install the control plane on Kubernetes: it writes the manifests to stdout.

  kumactl install control-plane | kubectl apply -f -

In --namespace (created, labelled for the restricted Pod Security Standard):
the kuma.io CustomResourceDefinitions, the ServiceAccount kuma-control-plane
with the least privilege it needs (ClusterRole and Role), the Secret
kuma-tls-cert, the Deployment kuma-control-plane (KUMA_ENVIRONMENT=kubernetes)
and the Service kuma-control-plane with the ports 5676 (MADS), 5678 (dataplane
server), 5680 (diagnostics), 5681 and 5682 (API) and 5443 (admission
webhook); and the ValidatingWebhookConfiguration that has the API server ask
the control plane about every write of a kuma.io resource, so that invalid
ones are refused with the REST API's messages.

The Secret holds the control plane's serving certificate (admission server,
dataplane server and the API's HTTPS), for kuma-control-plane.<namespace>.svc
and its shorter names, and the CA that verifies it (the webhook's caBundle).
Without --tls-cert, --tls-key and --ca-cert (PEM files, all three or none) a
CA and a certificate valid for ten years are generated, anew at every run:
applying a new run's output replaces them and restarts the control plane.`

func newInstallControlPlaneCmd(rc *RootContext) *cobra.Command {
	var namespace, image, imageTag, tlsCert, tlsKey, caCert string
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "Install the control plane on Kubernetes",
		Long:  installControlPlaneLong,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts := install.ControlPlaneOptions{Namespace: namespace, Image: image, ImageTag: imageTag}
			var err error
			if opts.TLS, err = controlPlaneTLS(namespace, tlsCert, tlsKey, caCert); err != nil {
				return err
			}
			out, err := install.RenderControlPlane(opts)
			if err != nil {
				return err
			}
			_, err = rc.Stdout.Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&namespace, "namespace", install.DefaultControlPlaneNamespace, "namespace of the control plane")
	f.StringVar(&image, "image", install.DefaultControlPlaneImage, "the control plane's image, without its tag")
	f.StringVar(&imageTag, "image-tag", version.Version, "the tag of --image")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM file of the control plane's serving certificate (then its intermediates), for kuma-control-plane.<namespace>.svc; generated when unset")
	f.StringVar(&tlsKey, "tls-key", "", "PEM file of the key of --tls-cert")
	f.StringVar(&caCert, "ca-cert", "", "PEM file of the CA bundle that verifies --tls-cert (the webhook's caBundle)")
	return cmd
}

// controlPlaneTLS reads the flags' files, or generates the material when
// none is given.
func controlPlaneTLS(namespace, certFile, keyFile, caFile string) (install.ControlPlaneTLS, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return install.GenerateControlPlaneTLS(namespace, time.Now())
	}
	var t install.ControlPlaneTLS
	for _, f := range []struct {
		flag, path string
		out        *[]byte
	}{{"--tls-cert", certFile, &t.Cert}, {"--tls-key", keyFile, &t.Key}, {"--ca-cert", caFile, &t.CA}} {
		if f.path == "" {
			return t, fmt.Errorf("%s is missing: give --tls-cert, --tls-key and --ca-cert together, or none of them to have the certificate generated", f.flag)
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return t, fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.out = b
	}
	return t, nil
}

const installWebhooksLong = `Write the admission webhook configuration of a control plane that runs outside
the cluster (KUMA_ENVIRONMENT=kubernetes kuma-cp run on a kubeconfig) to
stdout, registered by URL instead of by Service:

  kumactl install webhooks --url https://<kuma-cp host>:5443 \
    --ca-cert-file <kuma-cp work dir>/admission-server-ca.pem | kubectl apply -f -

--url is where the API server reaches kuma-cp's admission server
(KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS and _PORT); --ca-cert-file is
the CA that verifies its certificate (the webhook's caBundle). With
--control-plane-user, that user's own writes skip the webhook; leave it unset
unless kuma-cp's kubeconfig is a user of its own. --webhooks chooses what is
printed: "validating" (the kuma.io resources' validation), "injector" (the
sidecar injector's mutating webhook, at /inject-sidecar of the same server;
set KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS so that the
injected proxies reach a control plane outside the cluster), or both (the
default). "install control-plane" includes both for a control plane inside
the cluster.`

// The webhook configurations install webhooks prints (--webhooks).
const (
	webhookValidating = "validating"
	webhookInjector   = "injector"
)

func newInstallWebhooksCmd(rc *RootContext) *cobra.Command {
	var url, caCertFile, user string
	var webhooks []string
	cmd := &cobra.Command{
		Use:   "webhooks",
		Short: "Install the admission webhooks of a control plane outside the cluster",
		Long:  installWebhooksLong,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if url == "" {
				return fmt.Errorf("--url is required: the https:// address of kuma-cp's admission server, e.g. https://192.0.2.10:5443")
			}
			if caCertFile == "" {
				return fmt.Errorf("--ca-cert-file is required: kuma-cp's <work dir>/admission-server-ca.pem, or the CA of its KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR certificate")
			}
			u, err := neturl.Parse(url)
			if err != nil || (u.Path != "" && u.Path != "/") {
				return fmt.Errorf("--url %q: give the admission server's address without a path, e.g. https://192.0.2.10:5443", url)
			}
			if len(webhooks) == 0 {
				return fmt.Errorf("--webhooks: name at least one of %s, %s", webhookValidating, webhookInjector)
			}
			ca, err := os.ReadFile(caCertFile)
			if err != nil {
				return fmt.Errorf("--ca-cert-file: %w", err)
			}
			var out []byte
			for i, w := range webhooks {
				var doc []byte
				switch w {
				case webhookValidating:
					u.Path = install.WebhookPath
					doc, err = install.RenderWebhookConfiguration(install.WebhookOptions{
						URL: u.String(), CABundle: ca, ControlPlaneUser: user,
					})
				case webhookInjector:
					u.Path = install.InjectorPath
					doc, err = install.RenderInjectorConfiguration(install.WebhookOptions{URL: u.String(), CABundle: ca})
				default:
					return fmt.Errorf("--webhooks %q: unknown webhook %q; known: %s, %s", strings.Join(webhooks, ","), w, webhookValidating, webhookInjector)
				}
				if err != nil {
					return err
				}
				if i > 0 {
					out = append(out, "---\n"...)
				}
				out = append(out, doc...)
			}
			_, err = rc.Stdout.Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&webhooks, "webhooks", []string{webhookValidating, webhookInjector},
		"webhook configurations to print: "+webhookValidating+" (kuma.io resources), "+webhookInjector+" (the sidecar injector), comma-separated")
	f.StringVar(&url, "url", "", "https:// address (scheme, host, port) at which the API server reaches kuma-cp's admission server")
	f.StringVar(&caCertFile, "ca-cert-file", "", "PEM file of the CA that verifies the admission server's certificate")
	f.StringVar(&user, "control-plane-user", "", "Kubernetes user of kuma-cp whose own writes skip the webhook")
	return cmd
}

func newInstallCRDsCmd(rc *RootContext) *cobra.Command {
	return &cobra.Command{
		Use:   "crds",
		Short: "Install the kuma.io CustomResourceDefinitions",
		Long: "Write the kuma.io CustomResourceDefinitions (Mesh, TrafficPermission, Dataplane, DataplaneInsight, " +
			"ControlPlaneInstance) to stdout: kumactl install crds | kubectl apply -f -. `install control-plane` includes them.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			out, err := install.RenderCRDs()
			if err != nil {
				return err
			}
			_, err = rc.Stdout.Write(out)
			return err
		},
	}
}

const installMetricsLong = `Install Prometheus, set up to discover and scrape every data plane proxy,
kube-state-metrics, and Grafana with the Prometheus and Kuma datasources and the
Kuma dashboards.

On Kubernetes it writes the manifests to stdout:

  kumactl install metrics | kubectl apply -f -

Everything goes into --namespace, which is labelled kuma.io/sidecar-injection:
enabled and annotated kuma.io/mesh: <--mesh> (as are its pods): Prometheus and
Grafana run in the mesh, so Prometheus scrapes proxies whose metrics are behind
mTLS. Their services are then prometheus-server_<namespace>_svc_80,
grafana_<namespace>_svc_80 and prometheus-kube-state-metrics_<namespace>_svc_80
and _81 in TrafficPermissions. Grafana's datasources are Prometheus (uid
prometheus, the default; the dashboards' ${DS_PROMETHEUS} resolves to it) and
Kuma (uid kuma, type kumahq-kuma-datasource, at --kuma-cp-api-address, querying
Prometheus itself). The Kuma datasource plugin comes from --grafana-plugin-image:
an init container copies its folder into Grafana's plugins before Grafana
starts, so nothing is downloaded at start-up (point the flag at your registry's
copy in a cluster without internet). Log in to Grafana as admin/admin and
change the password.

--without-prometheus leaves out Prometheus and kube-state-metrics; Grafana's
Prometheus datasource still points at http://prometheus-server.<namespace>, so
a Prometheus installed there later (or your own, behind a Service of that name)
serves the dashboards. --without-grafana leaves out Grafana. With both, only the
namespace is written, ready for your own Prometheus and Grafana in the mesh.

With --universal it writes files to --output-dir instead: prometheus.yml, which
discovers the proxies with http_sd_configs (any Prometheus since 2.28; a
commented kuma_sd_configs alternative is in it), Grafana's provisioning files
(grafana/provisioning), the dashboards (grafana/dashboards), Grafana's settings
(grafana/grafana.ini: those folders, and the Kuma datasource allowed unsigned)
and the Kuma datasource plugin in grafana/plugins, copied from --grafana-plugin
(the zip of make plugin or of a release, or the plugin's folder; required
unless --without-grafana). It prints the commands that run Prometheus and
Grafana. There the control plane's addresses default to
http://127.0.0.1:5676 and http://127.0.0.1:5681, and existing files are kept
unless --overwrite. When the control plane secures discovery
(monitoringAssignmentServer.tlsCertFile, .authn.type: token), give Prometheus
the CA that verifies it with --kuma-cp-ca-cert-file and a file holding a user
token (kumactl generate user-token) with --kuma-cp-token-file: the job gets
tls_config and authorization.`

func newInstallMetricsCmd(rc *RootContext) *cobra.Command {
	var (
		namespace, mesh, cpAddress, cpAPIAddress, outputDir     string
		pluginImage, pluginSource, prometheusAddress            string
		cpCACertFile, cpTokenFile                               string
		withoutPrometheus, withoutGrafana, universal, overwrite bool
	)
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Install Prometheus and Grafana for the mesh's metrics",
		Long:  installMetricsLong,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			flags := c.Flags()
			if !universal {
				for _, f := range []string{"output-dir", "overwrite", "kuma-cp-ca-cert-file", "kuma-cp-token-file", "grafana-plugin", "prometheus-address"} {
					if flags.Changed(f) {
						return fmt.Errorf("--%s applies only with --universal", f)
					}
				}
				out, err := install.RenderKubernetes(install.Options{
					Namespace:          namespace,
					Mesh:               mesh,
					KumaCPAddress:      cpAddress,
					KumaCPAPIAddress:   cpAPIAddress,
					WithoutPrometheus:  withoutPrometheus,
					WithoutGrafana:     withoutGrafana,
					Dashboards:         rc.Dashboards,
					GrafanaPluginImage: pluginImage,
				})
				if err != nil {
					return err
				}
				_, err = rc.Stdout.Write(out)
				return err
			}

			for _, f := range []string{"namespace", "mesh", "grafana-plugin-image"} {
				if flags.Changed(f) {
					return fmt.Errorf("--%s applies only to Kubernetes, not with --universal", f)
				}
			}
			if outputDir == "" {
				return errors.New("--output-dir is required with --universal")
			}
			if !flags.Changed("kuma-cp-address") {
				cpAddress = install.DefaultUniversalCPAddress
			}
			if !flags.Changed("kuma-cp-api-address") {
				cpAPIAddress = install.DefaultUniversalCPAPIAddress
			}
			dir, err := filepath.Abs(outputDir)
			if err != nil {
				return fmt.Errorf("--output-dir: %w", err)
			}
			for _, f := range []struct {
				flag string
				path *string
			}{{"--kuma-cp-ca-cert-file", &cpCACertFile}, {"--kuma-cp-token-file", &cpTokenFile}} {
				if *f.path == "" {
					continue
				}
				if *f.path, err = filepath.Abs(*f.path); err != nil {
					return fmt.Errorf("%s: %w", f.flag, err)
				}
			}
			files, err := install.RenderUniversal(install.Options{
				KumaCPAddress:     cpAddress,
				KumaCPAPIAddress:  cpAPIAddress,
				KumaCPCACertFile:  cpCACertFile,
				KumaCPTokenFile:   cpTokenFile,
				WithoutPrometheus: withoutPrometheus,
				WithoutGrafana:    withoutGrafana,
				Dashboards:        rc.Dashboards,
				OutputDir:         dir,
				PrometheusAddress: prometheusAddress,
			})
			if err != nil {
				return err
			}
			// The plugin before writing: a wrong one stops before anything is written.
			var plugin *install.Plugin
			switch {
			case withoutGrafana && pluginSource != "":
				return errors.New("--grafana-plugin applies only with Grafana, not with --without-grafana")
			case !withoutGrafana && pluginSource == "":
				return errors.New("--grafana-plugin is required with --universal (unless --without-grafana): " +
					"the Kuma datasource plugin's zip (make plugin writes bin/" + install.KumaDatasourceType + "-<version>.zip) or its folder, copied into " +
					install.UniversalPluginsDir)
			case !withoutGrafana:
				if plugin, err = install.OpenPlugin(pluginSource); err != nil {
					return err
				}
				defer plugin.Close()
				if err := plugin.CheckTarget(dir, overwrite); err != nil {
					return err
				}
			}
			names, err := writeFiles(dir, files, overwrite)
			if err != nil {
				return err
			}
			if plugin != nil {
				written, err := plugin.WriteTo(dir, overwrite)
				if err != nil {
					return err
				}
				names = append(names, fmt.Sprintf("%s/ (the Kuma datasource plugin, %d files)", install.PluginFolder, len(written)))
			}
			return printUniversalHowTo(rc, dir, cpAddress, prometheusAddress, names, !withoutPrometheus, !withoutGrafana)
		},
	}
	f := cmd.Flags()
	f.StringVar(&namespace, "namespace", install.DefaultNamespace, "namespace of every object (Kubernetes)")
	f.StringVarP(&mesh, "mesh", "m", install.DefaultMesh, "mesh the pods of the namespace join (Kubernetes)")
	f.StringVar(&cpAddress, "kuma-cp-address", install.DefaultKubernetesCPAddress,
		"URL of the control plane's monitoring assignment server, which Prometheus asks for the proxies (with --universal: "+install.DefaultUniversalCPAddress+")")
	f.StringVar(&cpAPIAddress, "kuma-cp-api-address", install.DefaultKubernetesCPAPIAddress,
		"URL of the control plane's API, for the Kuma datasource; its metrics are scraped from the same host, port "+install.CPDiagnosticsPort+" (with --universal: "+install.DefaultUniversalCPAPIAddress+")")
	f.StringVar(&cpCACertFile, "kuma-cp-ca-cert-file", "", "CA (PEM) with which Prometheus verifies an https:// --kuma-cp-address (with --universal)")
	f.StringVar(&cpTokenFile, "kuma-cp-token-file", "", "file holding a user token that Prometheus sends to the control plane's discovery (with --universal)")
	f.BoolVar(&withoutPrometheus, "without-prometheus", false, "leave out Prometheus (and kube-state-metrics)")
	f.BoolVar(&withoutGrafana, "without-grafana", false, "leave out Grafana")
	f.BoolVar(&universal, "universal", false, "write the files of a Universal setup to --output-dir instead of Kubernetes manifests")
	f.StringVar(&outputDir, "output-dir", "", "directory for the Universal files (with --universal)")
	f.StringVar(&prometheusAddress, "prometheus-address", install.DefaultUniversalPrometheusAddress,
		"host:port Prometheus listens on (its --web.listen-address; with --universal): its own scrape target and the Grafana datasources' Prometheus URL")
	f.BoolVar(&overwrite, "overwrite", false, "replace existing files in --output-dir (with --universal)")
	f.StringVar(&pluginImage, "grafana-plugin-image", install.DefaultGrafanaPluginImage+":"+version.Version,
		"image holding the Kuma datasource plugin at /"+install.KumaDatasourceType+", copied into Grafana's plugins by an init container (Kubernetes)")
	f.StringVar(&pluginSource, "grafana-plugin", "",
		"the Kuma datasource plugin: its zip (make plugin) or folder, copied into "+install.UniversalPluginsDir+" (with --universal; required unless --without-grafana)")
	return cmd
}

// writeFiles writes files (keyed by slash-separated paths) under dir, and
// none of them when one exists and overwrite is false. It returns the paths
// written, sorted.
func writeFiles(dir string, files map[string][]byte, overwrite bool) ([]string, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var existing []string
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("--output-dir: %w", err)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("--output-dir: %s exists and is not a regular file", p)
		default:
			existing = append(existing, name)
		}
	}
	if len(existing) > 0 && !overwrite {
		return nil, fmt.Errorf("--output-dir: %s already has %s (pass --overwrite to replace existing files)", dir, strings.Join(existing, ", "))
	}
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("--output-dir: %w", err)
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return nil, fmt.Errorf("--output-dir: %w", err)
		}
	}
	return names, nil
}

func printUniversalHowTo(rc *RootContext, dir, cpAddress, prometheusAddress string, names []string, prometheus, grafana bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Wrote to %s:\n", dir)
	for _, name := range names {
		fmt.Fprintf(&b, "  %s\n", name)
	}
	if prometheus {
		fmt.Fprintf(&b, "\nRun Prometheus; it discovers the dataplanes from the control plane at %s:\n\n  prometheus --config.file=%s --web.listen-address=%s\n",
			cpAddress, shellQuote(filepath.Join(dir, install.UniversalPrometheusFile)), shellQuote(prometheusAddress))
	}
	if grafana {
		fmt.Fprintf(&b, "\nRun Grafana with these settings (provisioning, the Kuma datasource plugin, allowed unsigned);\n"+
			"its Prometheus datasource is %s:\n\n"+
			"  grafana server --homepath /usr/share/grafana --config %s\n",
			"http://"+prometheusAddress, shellQuote(filepath.Join(dir, filepath.FromSlash(install.UniversalGrafanaConfigFile))))
	}
	_, err := fmt.Fprint(rc.Stdout, b.String())
	return err
}

var shellSafe = regexp.MustCompile(`^[-A-Za-z0-9_./:=@+]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
