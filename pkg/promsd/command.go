package promsd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/version"
)

// CommandOptions holds what the commands take from their environment.
// Zero fields take the process's own.
type CommandOptions struct {
	// LookupEnv reads an environment variable; nil means os.LookupEnv.
	LookupEnv func(key string) (string, bool)
	// Stdout and Stderr default to the process's streams.
	Stdout io.Writer
	Stderr io.Writer
	// Run is what `run` does once its configuration is parsed; nil means
	// RunClient. Tests put a recorder here.
	Run func(ctx context.Context, cfg Config, log *slog.Logger) error
}

func (o CommandOptions) withDefaults() CommandOptions {
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Run == nil {
		o.Run = RunClient
	}
	return o
}

// RunClient runs a Client for cfg until ctx is done.
func RunClient(ctx context.Context, cfg Config, log *slog.Logger) error {
	c, err := NewClient(cfg, WithLogger(log))
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// Execute runs kuma-prometheus-sd with args (without the program name),
// prints a failure as "Error: ..." on the standard error and returns the
// process exit code.
func Execute(ctx context.Context, opts CommandOptions, args []string) int {
	opts = opts.withDefaults()
	cmd := NewRootCommand(opts)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(opts.Stderr, "Error:", err)
		return 1
	}
	return 0
}

// NewRootCommand returns the kuma-prometheus-sd command tree: run and
// version.
func NewRootCommand(opts CommandOptions) *cobra.Command {
	opts = opts.withDefaults()
	root := &cobra.Command{
		Use:   "kuma-prometheus-sd",
		Short: "Prometheus file_sd writer fed by the control plane's monitoring assignments",
		Long: "kuma-prometheus-sd follows the control plane's monitoring assignment discovery " +
			"service (MADS, over gRPC) and keeps a Prometheus file_sd file up to date, for a " +
			"Prometheus without kuma_sd_configs.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(opts.Stdout)
	root.SetErr(opts.Stderr)
	root.AddCommand(newRunCommand(opts), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(opts.Stdout, "%s %s\n", version.Product, version.Version)
		},
	})
	return root
}

type runFlags struct {
	cpAddress          string
	outputFile         string
	name               string
	caCertFile         string
	insecureSkipVerify bool
	authTokenFile      string
	clientCertFile     string
	clientKeyFile      string
	logLevel           string
}

func newRunCommand(opts CommandOptions) *cobra.Command {
	def := DefaultConfig()
	f := runFlags{
		cpAddress:  def.CPAddress,
		outputFile: def.OutputFile,
		name:       def.Name,
		logLevel:   "info",
	}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Follow the control plane and write the file_sd file",
		Long: "Follow the control plane's monitoring assignments and keep --output-file, a Prometheus " +
			"file_sd file, up to date. Flags win over their environment variables.",
		Example: "  kuma-prometheus-sd run \\\n" +
			"    --cp-address=grpcs://kuma-control-plane.internal:5676 \\\n" +
			"    --ca-cert-file=/etc/kuma-prometheus-sd/ca.pem \\\n" +
			"    --output-file=/var/run/kuma-prometheus-sd/kuma.file_sd.json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd, opts.LookupEnv)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(opts.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
			log.Info("starting", "version", version.Version, "address", cfg.CPAddress,
				"node", cfg.Name, "file", cfg.OutputFile)
			return opts.Run(cmd.Context(), cfg, log)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.cpAddress, FlagCPAddress, f.cpAddress,
		"control plane MADS address, grpc://host:port or grpcs://host:port (env "+EnvCPAddress+")")
	fs.StringVar(&f.outputFile, FlagOutputFile, f.outputFile,
		"Prometheus file_sd file to write (env "+EnvOutputFile+")")
	fs.StringVar(&f.name, FlagName, f.name,
		"client name, sent as the xDS node.id (env "+EnvName+")")
	fs.StringVar(&f.caCertFile, FlagCACertFile, "",
		"PEM bundle of the CA certificates that verify a grpcs:// control plane (default: the system's trusted roots)")
	fs.BoolVar(&f.insecureSkipVerify, FlagInsecureSkipVerify, false,
		"connect to a grpcs:// control plane without verifying its certificate")
	fs.StringVar(&f.authTokenFile, FlagAuthTokenFile, "",
		"file holding a user token of the control plane, sent with every connection (read each time, so it can be rotated); needs grpcs:// unless the host is loopback")
	fs.StringVar(&f.clientCertFile, FlagClientCertFile, "",
		"certificate (PEM) presented to a grpcs:// control plane, with --"+FlagClientKeyFile)
	fs.StringVar(&f.clientKeyFile, FlagClientKeyFile, "", "private key (PEM) of --"+FlagClientCertFile)
	fs.StringVar(&f.logLevel, FlagLogLevel, f.logLevel, "log level: debug, info, warn or error")
	return cmd
}

// config merges the flags with the environment (a flag given on the command
// line wins; an empty variable counts as unset) and validates the result.
func (f runFlags) config(cmd *cobra.Command, lookupEnv func(string) (string, bool)) (Config, error) {
	fromEnv := map[string]string{} // flag -> variable that set it
	for _, b := range []struct {
		flag, env string
		value     *string
	}{
		{FlagCPAddress, EnvCPAddress, &f.cpAddress},
		{FlagOutputFile, EnvOutputFile, &f.outputFile},
		{FlagName, EnvName, &f.name},
	} {
		if cmd.Flags().Changed(b.flag) {
			continue
		}
		if v, ok := lookupEnv(b.env); ok && v != "" {
			*b.value = v
			fromEnv[b.flag] = b.env
		}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return Config{}, flagError(FlagLogLevel, fmt.Errorf("%q is not one of debug, info, warn, error", f.logLevel))
	}
	cfg := Config{
		CPAddress:          f.cpAddress,
		Name:               f.name,
		OutputFile:         f.outputFile,
		CACertFile:         f.caCertFile,
		InsecureSkipVerify: f.insecureSkipVerify,
		AuthTokenFile:      f.authTokenFile,
		ClientCertFile:     f.clientCertFile,
		ClientKeyFile:      f.clientKeyFile,
		LogLevel:           level,
	}
	if err := cfg.Validate(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) && fromEnv[fe.flag] != "" {
			return Config{}, fmt.Errorf("%w (value from $%s)", err, fromEnv[fe.flag])
		}
		return Config{}, err
	}
	return cfg, nil
}
