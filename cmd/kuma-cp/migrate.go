package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/store/postgres"
)

// newMigrate is `kuma-cp migrate up`: it brings the PostgreSQL store's
// schema to the version this kuma-cp needs (the configuration as for run).
func newMigrate() *cobra.Command {
	var configFile string
	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "Migrate the store's database schema",
		Args:  cobra.NoArgs,
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply the missing schema migrations to the PostgreSQL store",
		Long: "Apply, one transaction each, the schema migrations the PostgreSQL store (store.type postgres) " +
			"lacks. Settings as for run: the defaults, then --config-file, then KUMA_* environment variables. " +
			"Two at once are safe: the second waits and finds nothing left to do.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cpconfig.Load(configFile, os.LookupEnv)
			if err != nil {
				return err
			}
			if cfg.Store.Type != cpconfig.StorePostgres {
				return fmt.Errorf("migrate up: store.type (KUMA_STORE_TYPE) is %q: only the %s store has migrations (SQLite migrates itself on start)", cfg.Store.Type, cpconfig.StorePostgres)
			}
			opts, err := postgres.OptionsOf(cfg.Store.Postgres, nil)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			applied, err := postgres.Migrate(ctx, opts.Conn)
			for _, v := range applied {
				fmt.Fprintf(cmd.OutOrStdout(), "applied migration %d\n", v)
			}
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "the schema is up to date (version %d)\n", postgres.SchemaVersion())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "the schema is now at version %d\n", postgres.SchemaVersion())
			return nil
		},
	}
	up.Flags().StringVarP(&configFile, "config-file", "c", "", "YAML configuration file (as for run)")
	migrate.AddCommand(up)
	return migrate
}
