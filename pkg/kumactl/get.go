package kumactl

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

func newGetCmd(rc *RootContext) *cobra.Command {
	var mesh, output string
	cmd := newGroupCmd("get", "Show resources",
		"Show one resource (`get mesh NAME`) or all of a kind (`get meshes`), as a table, YAML or JSON.")
	cmd.PersistentFlags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh of mesh-scoped resources (ignored for meshes; empty lists every mesh)")
	cmd.PersistentFlags().StringVarP(&output, "output", "o", outputTable, "output format: table, yaml or json")

	for _, d := range resource.Descriptors() {
		cmd.AddCommand(&cobra.Command{
			Use:   d.Plural + " [NAME]",
			Short: fmt.Sprintf("Show every %s%s", d.Kind, scopeHint(d)),
			Args:  cobra.MaximumNArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				if len(args) == 1 {
					return getOne(c, rc, d, mesh, args[0], output)
				}
				return getList(c, rc, d, mesh, output)
			},
		})
		cmd.AddCommand(&cobra.Command{
			Use:   d.Singular + " NAME",
			Short: fmt.Sprintf("Show one %s%s", d.Kind, scopeHint(d)),
			Args:  nameArg(d),
			RunE: func(c *cobra.Command, args []string) error {
				return getOne(c, rc, d, mesh, args[0], output)
			},
		})
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "zones",
		Short: "Show the zones of the control plane",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return getZones(c, rc, output)
		},
	})
	return cmd
}

func scopeHint(d resource.Descriptor) string {
	if d.Scoped {
		return " of a mesh (-m)"
	}
	return ""
}

// nameArg requires exactly one NAME argument.
func nameArg(d resource.Descriptor) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s takes one %s name, got %d arguments", c.CommandPath(), d.Singular, len(args))
		}
		return nil
	}
}

// notFound is the error of a 404 for one resource.
func notFound(d resource.Descriptor, mesh, name string) error {
	if d.Scoped {
		return fmt.Errorf("%s %q not found in mesh %q", d.Singular, name, mesh)
	}
	return fmt.Errorf("%s %q not found", d.Singular, name)
}

func getOne(c *cobra.Command, rc *RootContext, d resource.Descriptor, mesh, name, output string) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	client, err := rc.client()
	if err != nil {
		return err
	}
	obj, err := client.Get(c.Context(), d.Kind, mesh, name)
	if apiclient.IsNotFound(err) {
		return notFound(d, mesh, name)
	}
	if err != nil {
		return err
	}
	switch output {
	case outputYAML:
		y, err := resource.MarshalYAML(obj)
		if err != nil {
			return err
		}
		_, err = rc.Stdout.Write(y)
		return err
	case outputJSON:
		return printJSON(rc.Stdout, obj)
	}
	return printObjects(rc.Stdout, d, []*resource.Object{obj}, rc.Now())
}

func getList(c *cobra.Command, rc *RootContext, d resource.Descriptor, mesh, output string) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	client, err := rc.client()
	if err != nil {
		return err
	}
	if !d.Scoped {
		mesh = ""
	}
	objs, err := client.List(c.Context(), d.Kind, mesh)
	if apiclient.IsNotFound(err) && mesh != "" {
		return fmt.Errorf("mesh %q not found", mesh)
	}
	if err != nil {
		return err
	}
	if output != outputTable {
		return printList(rc.Stdout, output, objs)
	}
	if len(objs) == 0 {
		fmt.Fprintln(rc.Stderr, noResources(mesh))
		return nil
	}
	return printObjects(rc.Stdout, d, objs, rc.Now())
}

func noResources(mesh string) string {
	if mesh == "" {
		return "No resources found."
	}
	return fmt.Sprintf("No resources found in %s mesh.", mesh)
}

// printObjects writes the table of a kind.
func printObjects(w io.Writer, d resource.Descriptor, objs []*resource.Object, now time.Time) error {
	var t *table
	switch d.Kind {
	case resource.KindMesh:
		t = newTable(w, "NAME", "MTLS", "METRICS", "AGE")
		for _, o := range objs {
			t.row(o.Meta.Name, mtlsOf(o.Mesh()), metricsOf(o.Mesh()), age(now, o.Meta.CreationTime))
		}
	case resource.KindGlobalSecret:
		t = newTable(w, "NAME", "AGE")
		for _, o := range objs {
			t.row(o.Meta.Name, age(now, o.Meta.CreationTime))
		}
	case resource.KindDataplane:
		t = newTable(w, "MESH", "NAME", "TAGS", "AGE")
		for _, o := range objs {
			t.row(o.Meta.Mesh, o.Meta.Name, tagsOf(o.Dataplane()), age(now, o.Meta.CreationTime))
		}
	default:
		t = newTable(w, "MESH", "NAME", "AGE")
		for _, o := range objs {
			t.row(o.Meta.Mesh, o.Meta.Name, age(now, o.Meta.CreationTime))
		}
	}
	return t.flush()
}

func getZones(c *cobra.Command, rc *RootContext, output string) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	client, err := rc.client()
	if err != nil {
		return err
	}
	zones, err := client.Zones(c.Context())
	if err != nil {
		return err
	}
	if output != outputTable {
		type zone struct {
			Type    string `json:"type"`
			Name    string `json:"name"`
			Enabled bool   `json:"enabled"`
		}
		items := make([]zone, len(zones))
		for i, z := range zones {
			items[i] = zone{Type: "Zone", Name: z.Name, Enabled: z.Enabled}
		}
		return printList(rc.Stdout, output, items)
	}
	if len(zones) == 0 {
		fmt.Fprintln(rc.Stderr, noResources(""))
		return nil
	}
	t := newTable(rc.Stdout, "NAME", "ENABLED")
	for _, z := range zones {
		t.row(z.Name, strconv.FormatBool(z.Enabled))
	}
	return t.flush()
}

// kindRef renders a resource as `dataplane/dp-1`.
func kindRef(o *resource.Object) string {
	if d, err := resource.Describe(o.Meta.Kind); err == nil {
		return d.Singular + "/" + o.Meta.Name
	}
	return strings.ToLower(string(o.Meta.Kind)) + "/" + o.Meta.Name
}
