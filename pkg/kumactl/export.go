package kumactl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

// ExportPageSize is the page size `kumactl export` reads collections with:
// the API's largest, so that 100k dataplanes take 100 requests and kumactl
// never holds more than one page.
const ExportPageSize = 1000

func newExportCmd(rc *RootContext) *cobra.Command {
	var output string
	var includeSecrets bool
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export every resource of every mesh as YAML that `kumactl apply -f` restores",
		Long: "Export the configuration of the control plane: every resource of every mesh, as a stream of " +
			"YAML documents (separated by ---) in the Universal form, in an order that `kumactl apply -f` " +
			"applies as it is (meshes first, then secrets, then everything else, owners before what they own). " +
			"Runtime state the control plane writes itself (dataplane insights, control plane instances) is " +
			"left out, and so are creation times and versions. Secrets (and every other admin-only kind, such " +
			"as the CA material of meshes with builtin mTLS) are written only with --include-secrets, which " +
			"needs an admin's credentials; without it the standard error says how many were left out.",
		Example: "kumactl export --include-secrets -o export.yaml\n" +
			"kumactl config control-planes switch --name new-cp && kumactl apply -f export.yaml",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			client, err := rc.client(apiclient.WithPageSize(ExportPageSize))
			if err != nil {
				return err
			}
			kinds, leftOut := exportKinds(resource.Descriptors(), includeSecrets)
			return writeOutput(rc, output, func(w io.Writer) error {
				counts, err := export(c.Context(), client, kinds, w)
				if err != nil {
					return err
				}
				var summary []string
				for i, d := range kinds {
					summary = append(summary, countOf(counts[i], d))
				}
				fmt.Fprintf(rc.Stderr, "exported %s\n", strings.Join(summary, ", "))
				for _, d := range leftOut {
					n, err := client.Count(c.Context(), d.Kind, "")
					if err != nil {
						fmt.Fprintf(rc.Stderr, "left out the %s (not counted: %s): use --include-secrets, as an admin, to export them\n", d.Plural, err)
						continue
					}
					if n > 0 {
						fmt.Fprintf(rc.Stderr, "left out %s: use --include-secrets to export them\n", countOf(n, d))
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "-", "file to write the export to (created with mode 0600), or - for standard output")
	cmd.Flags().BoolVar(&includeSecrets, "include-secrets", false, "also export secrets and every other admin-only kind (needs an admin's credentials)")
	return cmd
}

func countOf(n int, d resource.Descriptor) string {
	if n == 1 {
		return "1 " + d.Singular
	}
	return fmt.Sprintf("%d %s", n, d.Plural)
}

// exportKinds returns the kinds export writes, in the order that applying
// them works, and the sensitive kinds left out without includeSecrets. Kinds
// the control plane writes itself (ReadOnly: insights, instances) are never
// exported: they are runtime state, and the API refuses to write them.
//
// The order: Mesh first (everything else lives in a mesh); then the
// sensitive mesh-scoped kinds (secrets: a mesh's CA material must be in
// place before anything asks for a certificate); then the other kinds; last
// the sensitive kinds outside meshes (signing keys: once applied, the
// credentials kumactl uses may change). A kind with an Owner comes after its
// owner.
func exportKinds(descs []resource.Descriptor, includeSecrets bool) (kinds, leftOut []resource.Descriptor) {
	byKind := map[resource.Kind]resource.Descriptor{}
	for _, d := range descs {
		byKind[d.Kind] = d
	}
	rank := func(d resource.Descriptor) int {
		switch {
		case d.Kind == resource.KindMesh:
			return 0
		case d.Sensitive && d.Scoped:
			return 1
		case d.Sensitive:
			return 3
		default:
			return 2
		}
	}
	// order is a kind's rank, raised to its owner's, and its depth below
	// the kinds without an owner.
	type order struct{ rank, depth int }
	orderOf := func(d resource.Descriptor) order {
		o := order{rank: rank(d)}
		for seen := 0; d.Owner != "" && seen < len(descs); seen++ {
			owner, ok := byKind[d.Owner]
			if !ok {
				break
			}
			o.rank = max(o.rank, rank(owner))
			o.depth++
			d = owner
		}
		return o
	}
	for _, d := range descs {
		switch {
		case d.ReadOnly:
		case d.Sensitive && !includeSecrets:
			leftOut = append(leftOut, d)
		default:
			kinds = append(kinds, d)
		}
	}
	slices.SortStableFunc(kinds, func(a, b resource.Descriptor) int {
		oa, ob := orderOf(a), orderOf(b)
		if oa.rank != ob.rank {
			return oa.rank - ob.rank
		}
		return oa.depth - ob.depth
	})
	return kinds, leftOut
}

// pageLister is what export needs of the API client.
type pageLister interface {
	ListPages(ctx context.Context, kind resource.Kind, mesh string, fn func(page []*resource.Object) error) error
}

// export writes every resource of kinds to w, page by page, as YAML
// documents separated by `---`, without times, versions or name extensions
// (what a store fills in), and returns how many of each kind it wrote.
func export(ctx context.Context, client pageLister, kinds []resource.Descriptor, w io.Writer) ([]int, error) {
	counts := make([]int, len(kinds))
	first := true
	for i, d := range kinds {
		err := client.ListPages(ctx, d.Kind, "", func(page []*resource.Object) error {
			for _, o := range page {
				o.Meta = resource.Meta{Kind: o.Meta.Kind, Mesh: o.Meta.Mesh, Name: o.Meta.Name}
				y, err := resource.MarshalYAML(o)
				if err != nil {
					return fmt.Errorf("%s: %w", kindRef(o), err)
				}
				if !first {
					if _, err := io.WriteString(w, "---\n"); err != nil {
						return err
					}
				}
				first = false
				if _, err := w.Write(y); err != nil {
					return err
				}
				counts[i]++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("export the %s: %w", d.Plural, err)
		}
	}
	return counts, nil
}

// writeOutput runs write on standard output (output "-") or on a new file
// (mode 0600: an export may hold secrets), which is removed when write
// fails, so that a partial export is never taken for a whole one.
func writeOutput(rc *RootContext, output string, write func(io.Writer) error) (err error) {
	if output == "-" {
		bw := bufio.NewWriter(rc.Stdout)
		if err := write(bw); err != nil {
			return errors.Join(err, bw.Flush())
		}
		return bw.Flush()
	}
	if output == "" {
		return errors.New("--output must not be empty: give a file, or - for standard output")
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("--output: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(output)
		}
	}()
	bw := bufio.NewWriter(f)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	return f.Sync()
}
