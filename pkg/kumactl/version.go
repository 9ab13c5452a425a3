package kumactl

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// versionTimeout bounds the server lookup of `kumactl version`, which must
// not hang on an unreachable control plane.
const versionTimeout = 5 * time.Second

func newVersionCmd(rc *RootContext) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of kumactl and of the control plane",
		Long:  "Print kumactl's version and, when the current control plane answers, its version too.",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprintf(rc.Stdout, "Client: kumactl %s\n", rc.Version)
			server, err := serverVersion(c.Context(), rc)
			if err != nil {
				fmt.Fprintf(rc.Stderr, "WARNING: the control plane's version is unknown: %s\n", err)
				return nil
			}
			fmt.Fprintf(rc.Stdout, "Server: %s\n", server)
			return nil
		},
	}
}

func serverVersion(ctx context.Context, rc *RootContext) (string, error) {
	client, err := rc.client()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	idx, err := client.Index(ctx)
	if err != nil {
		return "", err
	}
	product := idx.Tagline
	if product == "" {
		product = "control plane"
	}
	v := idx.Version
	if v == "" {
		v = "(unknown version)"
	}
	return product + " " + v, nil
}
