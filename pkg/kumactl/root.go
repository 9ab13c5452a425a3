// Package kumactl is the command-line client of the control plane: the cobra
// command tree (config, apply, export, get, delete, inspect, generate, install,
// version) built on a RootContext that holds everything a command touches from
// outside (standard streams, the config file, the clock, the API client
// factory and the Grafana dashboards), so that tests can run the commands
// against a fake control plane.
package kumactl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/install/dashboards"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/version"
)

// Version is kumactl's version: the build's (see package version).
var Version = version.Version

// DefaultAPITimeout is the default of --api-timeout.
const DefaultAPITimeout = 30 * time.Second

// RootContext holds what the commands take from their environment.
type RootContext struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Now is the clock of the AGE columns.
	Now func() time.Time
	// NewClient makes the API client of the control plane at address; opts
	// carry its credentials.
	NewClient func(address string, timeout time.Duration, opts ...apiclient.Option) (*apiclient.Client, error)
	// DefaultConfigFile is the default of --config-file.
	DefaultConfigFile string
	// Version is the client version that `kumactl version` prints.
	Version string
	// Dashboards are the Grafana dashboards (*.json) that `kumactl install
	// metrics` provisions.
	Dashboards fs.FS

	args globalArgs
}

type globalArgs struct {
	configFile string
	apiTimeout time.Duration
}

// DefaultRootContext is the RootContext of the real program: the process's
// standard streams, the wall clock, ~/.kumactl/config.
func DefaultRootContext() *RootContext {
	cfgFile := filepath.Join(".kumactl", "config")
	if home, err := os.UserHomeDir(); err == nil {
		cfgFile = filepath.Join(home, cfgFile)
	}
	return &RootContext{
		Stdin:             os.Stdin,
		Stdout:            os.Stdout,
		Stderr:            os.Stderr,
		Now:               time.Now,
		NewClient:         NewClient,
		DefaultConfigFile: cfgFile,
		Version:           Version,
		Dashboards:        dashboards.FS,
	}
}

// NewClient is the default client factory.
func NewClient(address string, timeout time.Duration, opts ...apiclient.Option) (*apiclient.Client, error) {
	base := []apiclient.Option{apiclient.WithTimeout(timeout), apiclient.WithUserAgent("kumactl/" + Version)}
	return apiclient.New(address, append(base, opts...)...)
}

// Execute runs kumactl with args, prints a failure as `Error: ...` on
// rc.Stderr and returns the process exit code.
func Execute(ctx context.Context, rc *RootContext, args []string) int {
	cmd := NewRootCmd(rc)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(rc.Stderr, "Error: %s\n", err)
		return 1
	}
	return 0
}

// NewRootCmd builds the command tree.
func NewRootCmd(rc *RootContext) *cobra.Command {
	if rc.Stdin == nil {
		rc.Stdin = os.Stdin
	}
	if rc.Stdout == nil {
		rc.Stdout = os.Stdout
	}
	if rc.Stderr == nil {
		rc.Stderr = os.Stderr
	}
	if rc.Now == nil {
		rc.Now = time.Now
	}
	if rc.NewClient == nil {
		rc.NewClient = NewClient
	}
	if rc.Version == "" {
		rc.Version = Version
	}
	if rc.Dashboards == nil {
		rc.Dashboards = dashboards.FS
	}
	cmd := &cobra.Command{
		Use:           "kumactl",
		Short:         "Manage the service mesh control plane",
		Long:          "kumactl reads and changes the resources of a control plane through its REST API.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(rc.Stdin)
	cmd.SetOut(rc.Stdout)
	cmd.SetErr(rc.Stderr)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nRun '%s --help' for usage", err, c.CommandPath())
	})
	cmd.PersistentFlags().StringVar(&rc.args.configFile, "config-file", rc.DefaultConfigFile, "path to the kumactl configuration file")
	cmd.PersistentFlags().DurationVar(&rc.args.apiTimeout, "api-timeout", DefaultAPITimeout, "timeout of each request to the control plane's API")

	cmd.AddCommand(
		newConfigCmd(rc),
		newApplyCmd(rc),
		newExportCmd(rc),
		newGetCmd(rc),
		newDeleteCmd(rc),
		newInspectCmd(rc),
		newGenerateCmd(rc),
		newInstallCmd(rc),
		newUninstallCmd(rc),
		newVersionCmd(rc),
	)
	return cmd
}

// loadConfig reads the config file (Default() when there is none).
func (rc *RootContext) loadConfig() (*config.Config, error) {
	if rc.args.configFile == "" {
		return nil, errors.New("--config-file must not be empty")
	}
	cfg, _, err := config.Load(rc.args.configFile)
	return cfg, err
}

// client returns the API client of the current control plane, with extra
// options (such as a page size) after the configured ones.
func (rc *RootContext) client(extra ...apiclient.Option) (*apiclient.Client, error) {
	cfg, err := rc.loadConfig()
	if err != nil {
		return nil, err
	}
	cp, err := cfg.CurrentControlPlane()
	if err != nil {
		return nil, err
	}
	opts, err := clientOptions(cp.Coordinates.APIServer)
	if err != nil {
		return nil, fmt.Errorf("control plane %q: %w", cp.Name, err)
	}
	rc.warnTokenInClear(cp.Name, cp.Coordinates.APIServer)
	c, err := rc.NewClient(cp.Address(), rc.args.apiTimeout, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("control plane %q: %w", cp.Name, err)
	}
	return c, nil
}

// clientOptions are the client options carrying a control plane's
// credentials and TLS settings. Errors are *config.FieldError.
func clientOptions(api config.APIServer) ([]apiclient.Option, error) {
	var opts []apiclient.Option
	tlsConfig, err := api.TLSConfig()
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		opts = append(opts, apiclient.WithTLSConfig(tlsConfig))
	}
	if token := api.Token(); token != "" {
		opts = append(opts, apiclient.WithToken(token))
	}
	return opts, nil
}

// warnTokenInClear warns on the standard error when a control plane's user
// token would be sent over plain HTTP to another host.
func (rc *RootContext) warnTokenInClear(name string, api config.APIServer) {
	if api.TokenInClear() {
		fmt.Fprintf(rc.Stderr, "Warning: control plane %q: the user token is sent in clear over http:// to a remote host; "+
			"use the control plane's https:// address (port 5682) with --ca-cert-file\n", name)
	}
}

// newGroupCmd returns a command that only holds subcommands: alone it prints
// its help; with an unknown subcommand it fails, listing the known ones.
func newGroupCmd(use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return c.Help()
			}
			var known []string
			for _, sub := range c.Commands() {
				if sub.IsAvailableCommand() {
					known = append(known, sub.Name())
				}
			}
			return fmt.Errorf("unknown command %q for %q; use one of: %s", args[0], c.CommandPath(), strings.Join(known, ", "))
		},
	}
}
