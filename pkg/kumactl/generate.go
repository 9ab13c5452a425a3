package kumactl

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/resource"
)

func newGenerateCmd(rc *RootContext) *cobra.Command {
	cmd := newGroupCmd("generate", "Generate tokens",
		"Ask the control plane for a token (admins only). The token alone is printed on standard output.")
	cmd.AddCommand(newGenerateDataplaneTokenCmd(rc), newGenerateUserTokenCmd(rc))
	return cmd
}

func newGenerateDataplaneTokenCmd(rc *RootContext) *cobra.Command {
	var mesh, name string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "dataplane-token",
		Short: "Generate the token with which one dataplane's proxy connects",
		Long: "Generate a dataplane token: the proxy of the Dataplane --name in --mesh presents it to the " +
			"control plane, which refuses it for any other dataplane or mesh.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if mesh == "" {
				return errors.New("--mesh must not be empty")
			}
			if name == "" {
				return errors.New("--name must not be empty")
			}
			if validFor < 0 {
				return fmt.Errorf("--valid-for must not be negative, got %s", validFor)
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			token, err := client.GenerateDataplaneToken(c.Context(), mesh, name, validFor)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(rc.Stdout, token)
			return err
		},
	}
	cmd.Flags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh of the dataplane")
	cmd.Flags().StringVar(&name, "name", "", "name of the Dataplane (required)")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the token is valid, such as 24h or 30m (default: it never expires)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newGenerateUserTokenCmd(rc *RootContext) *cobra.Command {
	var name string
	var groups []string
	var validFor time.Duration
	cmd := &cobra.Command{
		Use:   "user-token",
		Short: "Generate a user token for the control plane's API",
		Long: "Generate a user token. Group mesh-system:admin makes an admin; other users may read " +
			"what anonymous clients may read. Use it with `kumactl config control-planes add --auth-type=tokens --auth-conf token=TOKEN`.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if name == "" {
				return errors.New("--name must not be empty")
			}
			for _, g := range groups {
				if g == "" {
					return errors.New("--group must not be empty")
				}
			}
			if validFor < 0 {
				return fmt.Errorf("--valid-for must not be negative, got %s", validFor)
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			token, err := client.GenerateUserToken(c.Context(), name, groups, validFor)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(rc.Stdout, token)
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the user (required)")
	cmd.Flags().StringArrayVar(&groups, "group", nil, "a group of the user (repeat for several), such as mesh-system:admin")
	cmd.Flags().DurationVar(&validFor, "valid-for", 0, "how long the token is valid, such as 24h or 30m (default: it never expires)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}
