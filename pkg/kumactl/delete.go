package kumactl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

func newDeleteCmd(rc *RootContext) *cobra.Command {
	var mesh string
	cmd := newGroupCmd("delete", "Delete a resource",
		"Delete one resource. Deleting a mesh deletes every resource in it.")
	cmd.PersistentFlags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh of mesh-scoped resources (ignored for meshes)")
	for _, d := range resource.Descriptors() {
		if d.ReadOnly {
			continue // the control plane's own: not deleted by hand
		}
		cmd.AddCommand(&cobra.Command{
			Use:   d.Singular + " NAME",
			Short: fmt.Sprintf("Delete a %s%s", d.Kind, scopeHint(d)),
			Args:  nameArg(d),
			RunE: func(c *cobra.Command, args []string) error {
				client, err := rc.client()
				if err != nil {
					return err
				}
				err = client.Delete(c.Context(), d.Kind, mesh, args[0])
				if apiclient.IsNotFound(err) {
					return notFound(d, mesh, args[0])
				}
				if err != nil {
					return refusedWrite(err, kubectlDelete(d, args[0]), false)
				}
				fmt.Fprintf(rc.Stdout, "deleted %s %q\n", d.Kind, args[0])
				return nil
			},
		})
	}
	return cmd
}
