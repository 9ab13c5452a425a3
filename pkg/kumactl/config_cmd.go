package kumactl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

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
	var caCertFile, clientCertFile, clientKeyFile string
	var skipVerify bool
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Add a control plane and switch to it",
		Long: "Add a control plane (and a context of the same name) and make it current. " +
			"The address must answer the API's index (GET /), so that a mistyped address (or a refused token) fails here. " +
			"With --auth-type=tokens --auth-conf token=TOKEN every request carries that user token; " +
			"the token is kept in the config file (mode 0600). " +
			"An https:// control plane is verified against --ca-cert-file (kuma-cp writes its generated CA to <work dir>/api-server-ca.pem), " +
			"else the system's trusted roots, or not at all with --skip-verify; --client-cert-file and --client-key-file present " +
			"a certificate (one of the control plane's apiServer.auth.clientCertsDir makes an admin). Files are referenced by their absolute path, not copied.",
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
			api := config.APIServer{URL: address, AuthType: authType, AuthConf: authConf, SkipVerify: skipVerify}
			for _, f := range []struct {
				flag      string
				value     string
				fieldName *string
			}{{"--ca-cert-file", caCertFile, &api.CACertFile}, {"--client-cert-file", clientCertFile, &api.ClientCertFile}, {"--client-key-file", clientKeyFile, &api.ClientKeyFile}} {
				if f.value == "" {
					continue
				}
				abs, err := filepath.Abs(f.value)
				if err != nil {
					return fmt.Errorf("%s: %w", f.flag, err)
				}
				*f.fieldName = abs
			}
			opts, err := clientOptions(api)
			if err != nil {
				return flagError(err)
			}
			rc.warnTokenInClear(name, api)
			client, err := rc.NewClient(address, rc.args.apiTimeout, opts...)
			if err != nil {
				return err
			}
			idx, err := client.Index(cmd.Context())
			if err != nil {
				return fmt.Errorf("could not verify the control plane at %s: %w%s", address, err, tlsHint(err))
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
	cmd.Flags().StringVar(&caCertFile, "ca-cert-file", "", "PEM bundle of the CAs that verify an https:// control plane (default: the system's trusted roots)")
	cmd.Flags().BoolVar(&skipVerify, "skip-verify", false, "connect to an https:// control plane without verifying its certificate")
	cmd.Flags().StringVar(&clientCertFile, "client-cert-file", "", "certificate (PEM) to present to an https:// control plane, with --client-key-file")
	cmd.Flags().StringVar(&clientKeyFile, "client-key-file", "", "private key (PEM) of --client-cert-file")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

// flagError names the flag of a *config.FieldError (in its message too).
func flagError(err error) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	flag := fieldFlags[fe.Field]
	if flag == "" {
		return err
	}
	msg := fe.Message
	for field, f := range fieldFlags {
		msg = strings.ReplaceAll(msg, field, f)
	}
	return fmt.Errorf("%s: %s", flag, msg)
}

// fieldFlags are the flags of `config control-planes add` by apiServer setting.
var fieldFlags = map[string]string{
	"authType": "--auth-type", "authConf": "--auth-conf",
	"caCertFile": "--ca-cert-file", "skipVerify": "--skip-verify",
	"clientCertFile": "--client-cert-file", "clientKeyFile": "--client-key-file",
}

// tlsHint tells how to trust a control plane whose certificate did not verify.
func tlsHint(err error) string {
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	if errors.As(err, &unknown) || errors.As(err, &verify) {
		return "; pass --ca-cert-file with the CA that issued its certificate (kuma-cp writes its generated one to <work dir>/api-server-ca.pem), or --skip-verify"
	}
	return ""
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
				api := cp.Coordinates.APIServer
				var methods []string
				if api.AuthType != "" {
					methods = append(methods, api.AuthType)
				}
				if api.ClientCertFile != "" {
					methods = append(methods, "client-certificate")
				}
				auth := strings.Join(methods, "+")
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
