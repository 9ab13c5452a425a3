// Command kuma-cp is the control plane of the mesh.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/version"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "kuma-cp",
		Short:         "Control plane of the mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var configFile, logLevel string
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the control plane",
		Long: "Run the control plane. Settings come from the built-in defaults, then --config-file, " +
			"then KUMA_* environment variables.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg, err := cpconfig.Load(configFile, os.LookupEnv)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			cp, err := controlplane.New(ctx, cfg, log)
			if err != nil {
				return err
			}
			return cp.Run(ctx)
		},
	}
	run.Flags().StringVarP(&configFile, "config-file", "c", "", "YAML configuration file")
	run.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(run, newMigrate(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", version.Product, version.Version)
		},
	})
	return root
}
