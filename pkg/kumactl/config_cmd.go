package kumactl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
)

func newConfigCmd(rc *RootContext) *cobra.Command {
	cmd := newGroupCmd("config", "Manage kumactl's configuration", "")
	cps := newGroupCmd("control-planes", "Manage the control planes kumactl knows", "")
	cps.Aliases = []string{"control-plane", "cp"}
	cps.AddCommand(
		newConfigAddCmd(rc),
		newConfigListCmd(rc),
		newConfigSwitchCmd(rc),
		newConfigRemoveCmd(rc),
	)
	cmd.AddCommand(cps)
	return cmd
}

func newConfigAddCmd(rc *RootContext) *cobra.Command {
	var name, address, authType string
	var authConf map[string]string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Add a control plane and switch to it",
		Long: "Add a control plane (and a context of the same name) and make it current. " +
			"The address must answer the API's index (GET /), so that a mistyped address (or a refused token) fails here. " +
			"With --auth-type=tokens --auth-conf token=TOKEN every request carries that user token; " +
			"the token is kept in the config file (mode 0600).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name must not be empty")
			}
			cfg, err := rc.loadConfig()
			if err != nil {
				return err
			}
			if !overwrite && (cfg.ControlPlane(name) != nil || cfg.Context(name) != nil) {
				return fmt.Errorf("control plane %q already exists; use --overwrite to replace it", name)
			}
			if err := config.CheckAuth(authType, authConf); err != nil {
				return flagError(err)
			}
			u, err := apiclient.ParseAddress(address)
			if err != nil {
				return err
			}
			address = u.String()
			api := config.APIServer{URL: address, AuthType: authType, AuthConf: authConf}
			client, err := rc.NewClient(address, rc.args.apiTimeout, authOptions(api)...)
			if err != nil {
				return err
			}
			idx, err := client.Index(cmd.Context())
			if err != nil {
				return fmt.Errorf("could not verify the control plane at %s: %w", address, err)
			}
			if idx.Tagline == "" && idx.Version == "" {
				return fmt.Errorf("could not verify the control plane at %s: its index names no product or version", address)
			}
			cp := config.ControlPlane{Name: name, Coordinates: config.Coordinates{APIServer: api}}
			if err := cfg.AddControlPlane(cp, overwrite); err != nil {
				return err
			}
			if err := config.Save(rc.args.configFile, cfg); err != nil {
				return err
			}
			fmt.Fprintf(rc.Stdout, "added Control Plane %q\n", name)
			fmt.Fprintf(rc.Stdout, "switched context to %q\n", name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the control plane (required)")
	cmd.Flags().StringVar(&address, "address", "", "URL of the control plane's API, such as http://localhost:5681 (required)")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace a control plane of the same name")
	cmd.Flags().StringVar(&authType, "auth-type", "", "how to authenticate to the control plane: tokens (a user token), or empty for no credentials")
	cmd.Flags().StringToStringVar(&authConf, "auth-conf", nil, "settings of --auth-type, as key=value: token=TOKEN for tokens")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

// flagError names the flag of a config.CheckAuth error.
func flagError(err error) error {
	var ae *config.AuthError
	if !errors.As(err, &ae) {
		return err
	}
	flag := map[string]string{"authType": "--auth-type", "authConf": "--auth-conf"}[ae.Field]
	if flag == "" {
		return err
	}
	return fmt.Errorf("%s: %s", flag, ae.Message)
}

func newConfigListCmd(rc *RootContext) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the control planes and how kumactl authenticates to them; * marks the current one",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := rc.loadConfig()
			if err != nil {
				return err
			}
			current := ""
			if ctx := cfg.Context(cfg.CurrentContext); ctx != nil {
				current = ctx.ControlPlane
			}
			t := newTable(rc.Stdout, "ACTIVE", "NAME", "ADDRESS", "AUTH")
			for _, cp := range cfg.ControlPlanes {
				active := ""
				if cp.Name == current {
					active = "*"
				}
				auth := cp.Coordinates.APIServer.AuthType
				if auth == "" {
					auth = "none"
				}
				t.row(active, cp.Name, cp.Address(), auth)
			}
			return t.flush()
		},
	}
}

func newConfigSwitchCmd(rc *RootContext) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "switch",
		Short: "Make a control plane current",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := rc.loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.SwitchContext(name); err != nil {
				return err
			}
			if err := config.Save(rc.args.configFile, cfg); err != nil {
				return err
			}
			fmt.Fprintf(rc.Stdout, "switched context to %q\n", cfg.CurrentContext)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the control plane (required)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newConfigRemoveCmd(rc *RootContext) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Forget a control plane",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := rc.loadConfig()
			if err != nil {
				return err
			}
			before := cfg.CurrentContext
			if err := cfg.RemoveControlPlane(name); err != nil {
				return err
			}
			if err := config.Save(rc.args.configFile, cfg); err != nil {
				return err
			}
			fmt.Fprintf(rc.Stdout, "removed Control Plane %q\n", name)
			if cfg.CurrentContext != before {
				if cfg.CurrentContext == "" {
					fmt.Fprintln(rc.Stdout, "no control plane is current any more; add one with `kumactl config control-planes add`")
				} else {
					fmt.Fprintf(rc.Stdout, "switched context to %q\n", cfg.CurrentContext)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the control plane (required)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}
