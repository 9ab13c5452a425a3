package kumadp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/version"
)

// Environment variables of kuma-dp run (the reference system's names).
const (
	EnvCPAddress     = "KUMA_CONTROL_PLANE_URL"
	EnvCACertFile    = "KUMA_CONTROL_PLANE_CA_CERT_FILE"
	EnvDataplane     = "KUMA_DATAPLANE_RESOURCE"
	EnvDataplaneFile = "KUMA_DATAPLANE_RUNTIME_RESOURCE_PATH"
	EnvName          = "KUMA_DATAPLANE_NAME"
	EnvMesh          = "KUMA_DATAPLANE_MESH"
	EnvAdminPort     = "KUMA_DATAPLANE_ADMIN_PORT"
	EnvAdminAddress  = "KUMA_DATAPLANE_ADMIN_ADDRESS"
	EnvDrainTime     = "KUMA_DATAPLANE_DRAIN_TIME"
	EnvTokenFile     = "KUMA_DATAPLANE_RUNTIME_TOKEN_PATH"
	EnvToken         = "KUMA_DATAPLANE_RUNTIME_TOKEN"
	EnvMetricsCert   = "KUMA_DATAPLANE_RUNTIME_METRICS_CERT_PATH"
	EnvMetricsKey    = "KUMA_DATAPLANE_RUNTIME_METRICS_KEY_PATH"
)

// NewRootCommand builds the kuma-dp command line. run is what `run` does
// with the resulting config (Run in production; tests pass their own).
func NewRootCommand(lookupEnv func(string) (string, bool), stderr io.Writer, run func(context.Context, Config) error) *cobra.Command {
	root := &cobra.Command{
		Use:           "kuma-dp",
		Short:         "Data plane proxy of the mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	env := func(name, def string) string {
		if v, ok := lookupEnv(name); ok && v != "" {
			return v
		}
		return def
	}
	var (
		cpAddress, caFile, dpFile, dpInline, logLevel string
		name, mesh                                    string
		adminHost                                     string
		// envErr is a malformed environment value: an error when run starts,
		// never silently replaced by the default.
		envErr                  error
		metricsCert, metricsKey string
		tokenFile, token        string
		insecure                bool
		adminPort               uint32
		drain                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the proxy beside a workload",
		Long: "Connect to the control plane, present the Dataplane (Universal: --dataplane-file or --dataplane) or name the one " +
			"the control plane stores (Kubernetes: --name and --mesh), and proxy the workload's traffic " +
			"with the config the control plane streams. SIGTERM or SIGINT deregisters and drains.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			dp, key, err := dataplaneIdentity(dpFile, dpInline, name, mesh)
			if err != nil {
				return err
			}
			if err := envErr; err != nil {
				return err
			}
			if adminPort > 65535 {
				return fmt.Errorf("--admin-port: must be a port number, got %d", adminPort)
			}
			if ip := net.ParseIP(adminHost); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("--admin-address: must be a loopback IP address (the admin API is not authenticated), got %q", adminHost)
			}
			cfg := Config{
				CPAddress: cpAddress, CACertFile: caFile, InsecureSkipVerify: insecure,
				Dataplane: dp, Name: key.Name, Mesh: key.Mesh,
				AdminAddress: net.JoinHostPort(adminHost, strconv.FormatUint(uint64(adminPort), 10)),
				DrainTimeout: drain, MetricsCertFile: metricsCert, MetricsKeyFile: metricsKey,
				Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("dataplane", key.String()),
			}
			if cfg.Token, err = loadToken(tokenFile, token); err != nil {
				return err
			}
			cfg.TokenFile = tokenFile
			if _, _, err := dialSettings(cfg); err != nil {
				return err
			}
			return run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cpAddress, "cp-address", env(EnvCPAddress, "https://localhost:5678"), "the control plane's dataplane server, https://host:port; several replicas separated by commas, tried in order (env "+EnvCPAddress+")")
	f.StringVar(&caFile, "ca-cert-file", env(EnvCACertFile, ""), "PEM CA certificate verifying the control plane: its <work dir>/dp-server-ca.pem (env "+EnvCACertFile+")")
	f.BoolVar(&insecure, "insecure-skip-verify", false, "connect without verifying the control plane's certificate")
	f.StringVar(&dpFile, "dataplane-file", env(EnvDataplaneFile, ""), "file with the Dataplane resource, YAML (env "+EnvDataplaneFile+")")
	f.StringVar(&dpInline, "dataplane", env(EnvDataplane, ""), "the Dataplane resource inline, YAML (env "+EnvDataplane+")")
	f.StringVar(&name, "name", env(EnvName, ""), "the Dataplane's name: without --dataplane-file or --dataplane, the control plane's stored Dataplane of that name "+
		"is served (Kubernetes: <pod>.<namespace>) (env "+EnvName+")")
	f.StringVar(&mesh, "mesh", env(EnvMesh, ""), "the Dataplane's mesh, with --name (default "+resource.DefaultMesh+") (env "+EnvMesh+")")
	defAdmin := uint64(9901)
	if v, ok := lookupEnv(EnvAdminPort); ok && v != "" {
		p, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			envErr = fmt.Errorf("%s: must be a port number, got %q", EnvAdminPort, v)
		}
		defAdmin = p
	}
	f.Uint32Var(&adminPort, "admin-port", uint32(defAdmin), "admin API port (env "+EnvAdminPort+")")
	f.StringVar(&adminHost, "admin-address", env(EnvAdminAddress, "127.0.0.1"), "loopback address the admin API listens on (env "+EnvAdminAddress+")")
	defDrain := DefaultDrainTimeout
	if v, ok := lookupEnv(EnvDrainTime); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("%s: must be a duration such as 30s, got %q", EnvDrainTime, v)
		}
		defDrain = d
	}
	f.DurationVar(&drain, "drain-time", defDrain, "how long in-flight requests may take to finish at shutdown (env "+EnvDrainTime+")")
	f.StringVar(&tokenFile, "dataplane-token-file", env(EnvTokenFile, ""), "file with the dataplane token (kumactl generate dataplane-token), "+
		"or on Kubernetes the Pod's ServiceAccount token ("+ServiceAccountTokenFile+"); re-read when it changes (env "+EnvTokenFile+")")
	f.StringVar(&token, "dataplane-token", env(EnvToken, ""), "the dataplane token inline (env "+EnvToken+")")
	f.StringVar(&metricsCert, "metrics-cert-path", env(EnvMetricsCert, ""), "certificate the metrics endpoint serves in the providedTLS mode (env "+EnvMetricsCert+")")
	f.StringVar(&metricsKey, "metrics-key-path", env(EnvMetricsKey, ""), "its key (env "+EnvMetricsKey+")")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(cmd, &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", version.Product, version.Version)
		},
	})
	return root
}

// loadToken reads the dataplane token from a file or inline.
func loadToken(file, inline string) (string, error) {
	switch {
	case file != "" && inline != "":
		return "", errors.New("give either --dataplane-token-file or --dataplane-token, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--dataplane-token-file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("--dataplane-token-file %s: empty", file)
		}
		return t, nil
	}
	return strings.TrimSpace(inline), nil
}

// ServiceAccountTokenFile is where Kubernetes mounts a Pod's ServiceAccount
// token (kept current by the kubelet): the token kuma-dp presents on
// Kubernetes (--dataplane-token-file).
const ServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// dataplaneIdentity reads the Dataplane the proxy presents (dp, from a file
// or inline YAML) or, without one, the key of the Dataplane the control
// plane stores (--name and --mesh); name and mesh given with a Dataplane
// must be its own.
func dataplaneIdentity(file, inline, name, mesh string) (*resource.Object, resource.Key, error) {
	if file == "" && inline == "" {
		if name == "" {
			return nil, resource.Key{}, errors.New("the Dataplane is required: --dataplane-file FILE or --dataplane YAML presents it (Universal), " +
				"or --name NAME [--mesh MESH] names the one the control plane stores (Kubernetes)")
		}
		key := resource.Key{Mesh: mesh, Name: name}
		if key.Mesh == "" {
			key.Mesh = resource.DefaultMesh
		}
		if err := resource.ValidateKey(resource.KindDataplane, key); err != nil {
			var ve *resource.ValidationError
			if errors.As(err, &ve) {
				msgs := make([]string, len(ve.Causes))
				for i, c := range ve.Causes {
					msgs[i] = "--" + c.Field + ": " + c.Message
				}
				return nil, key, errors.New(strings.Join(msgs, "; "))
			}
			return nil, key, err
		}
		return nil, key, nil
	}
	dp, err := loadDataplane(file, inline)
	if err != nil {
		return nil, resource.Key{}, err
	}
	key := dp.Meta.Key()
	if name != "" && name != key.Name {
		return nil, key, fmt.Errorf("--name %q: the Dataplane is named %q", name, key.Name)
	}
	if mesh != "" && mesh != key.Mesh {
		return nil, key, fmt.Errorf("--mesh %q: the Dataplane is in mesh %q", mesh, key.Mesh)
	}
	return dp, key, nil
}

// loadDataplane reads the Dataplane from a file or inline YAML.
func loadDataplane(file, inline string) (*resource.Object, error) {
	var data []byte
	src := "--dataplane"
	switch {
	case file != "" && inline != "":
		return nil, errors.New("give either --dataplane-file or --dataplane, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--dataplane-file: %w", err)
		}
		data, src = b, "--dataplane-file "+file
	case inline != "":
		data = []byte(inline)
	default:
		return nil, errors.New("the Dataplane is required: --dataplane-file FILE or --dataplane YAML")
	}
	docs := resource.SplitYAML(data)
	if len(docs) != 1 {
		return nil, fmt.Errorf("%s: must hold exactly one resource, found %d", src, len(docs))
	}
	obj, err := resource.DecodeYAML(docs[0].Body, docs[0].Line)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if obj.Meta.Kind != resource.KindDataplane {
		return nil, fmt.Errorf("%s: holds a %s, not a Dataplane", src, obj.Meta.Kind)
	}
	if obj.Meta.Mesh == "" {
		obj.Meta.Mesh = resource.DefaultMesh
	}
	if err := resource.Validate(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return obj, nil
}

// Run builds and runs an agent.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(cfg)
	if err != nil {
		return err
	}
	applyGCPercent(a.log, os.LookupEnv)
	applyMemoryLimit(a.log, os.LookupEnv, os.ReadFile)
	return a.Run(ctx)
}
