package kumactl

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

func newApplyCmd(rc *RootContext) *cobra.Command {
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from a YAML file",
		Long: "Create or update the resources of a YAML file (several documents separated by ---, " +
			"each in the Universal form `type: Mesh` or the Kubernetes form `apiVersion: kuma.io/v1alpha1`). " +
			"Every document is decoded before anything is sent; documents are then applied in order, " +
			"stopping at the first the control plane refuses. The CA material of a mesh with builtin mTLS " +
			"(as `kumactl export --include-secrets` writes it) replaces the CA the control plane created for the mesh, " +
			"so that certificates issued before a move stay valid. With --dry-run the resources are validated " +
			"locally and printed, and the control plane is not contacted.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("a file is required: -f FILE, or -f - to read standard input")
			}
			name, data, err := readInput(rc, file)
			if err != nil {
				return err
			}
			docs, err := decodeDocuments(name, data)
			if err != nil {
				return err
			}
			if dryRun {
				return dryRunApply(rc, docs)
			}
			client, err := rc.client()
			if err != nil {
				return err
			}
			cas := newCAMaterial(docs)
			for _, d := range docs {
				if err := cas.awaitOwnPair(c.Context(), client, d.obj); err != nil {
					return d.errorf(err, "%s", kindRef(d.obj))
				}
				_, created, err := client.Put(c.Context(), d.obj, 0)
				if err != nil {
					err = refusedWrite(translateAPIError(d, err), "kubectl apply -f "+shellQuote(file), !d.kubernetes)
					return d.errorf(err, "%s", kindRef(d.obj))
				}
				verb := "configured"
				if created {
					verb = "created"
				}
				fmt.Fprintf(rc.Stdout, "%s %s\n", kindRef(d.obj), verb)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file to apply, or - for standard input (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and print the resources without sending them")
	return cmd
}

func readInput(rc *RootContext, file string) (name string, data []byte, err error) {
	if file == "-" {
		data, err = io.ReadAll(rc.Stdin)
		if err != nil {
			return "", nil, fmt.Errorf("read standard input: %w", err)
		}
		return "<stdin>", data, nil
	}
	data, err = os.ReadFile(file)
	if err != nil {
		return "", nil, err
	}
	return file, data, nil
}

// document is one decoded document of the input.
type document struct {
	file string
	line int
	// kubernetes is true for the `apiVersion: kuma.io/v1alpha1` form.
	kubernetes bool
	obj        *resource.Object
}

// errorf locates an error in the input: `FILE:LINE: what: err`.
func (d document) errorf(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if what != "" {
		what += ": "
	}
	return fmt.Errorf("%s:%d: %s%w", d.file, d.line, what, err)
}

// decodeDocuments decodes every document of the input, stopping at the first
// that does not decode.
func decodeDocuments(file string, data []byte) ([]document, error) {
	var docs []document
	for _, raw := range resource.SplitYAML(data) {
		d := document{file: file, line: raw.Line, kubernetes: isKubernetesForm(raw.Body)}
		obj, err := resource.DecodeYAML(raw.Body, raw.Line)
		if err != nil {
			var se *resource.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("%s:%d: invalid YAML: %s", file, max(se.Line, raw.Line), se.Reason)
			}
			return nil, d.errorf(describeInvalid(err), "")
		}
		d.obj = obj
		docs = append(docs, d)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no resources found", file)
	}
	return docs, nil
}

func dryRunApply(rc *RootContext, docs []document) error {
	var out bytes.Buffer
	for i, d := range docs {
		if err := resource.Validate(d.obj); err != nil {
			return d.errorf(describeInvalid(translateValidation(d, err)), "%s", kindRef(d.obj))
		}
		y, err := resource.MarshalYAML(d.obj)
		if err != nil {
			return err
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
	}
	_, err := rc.Stdout.Write(out.Bytes())
	return err
}

// isKubernetesForm tells the forms apart the way resource.DecodeYAML does.
func isKubernetesForm(body []byte) bool {
	var top map[string]any
	if err := yaml.Unmarshal(body, &top); err != nil {
		return false
	}
	_, api := top["apiVersion"]
	_, kind := top["kind"]
	return api || kind
}

// invalidError renders a *resource.ValidationError like the API's errors:
// a summary line, then one line per cause.
type invalidError struct{ causes []resource.Cause }

func (e *invalidError) Error() string {
	var b strings.Builder
	b.WriteString("Resource is not valid")
	writeCauses(&b, e.causes)
	return b.String()
}

func writeCauses(b *strings.Builder, causes []resource.Cause) {
	for _, c := range causes {
		b.WriteString("\n* ")
		if c.Field != "" {
			b.WriteString(c.Field)
			b.WriteString(": ")
		}
		b.WriteString(c.Message)
	}
}

func describeInvalid(err error) error {
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		return &invalidError{causes: ve.Causes}
	}
	return err
}

func translateCauses(d document, causes []resource.Cause) []resource.Cause {
	if !d.kubernetes {
		return causes
	}
	return resource.KubernetesCauses(causes)
}

func translateValidation(d document, err error) error {
	var ve *resource.ValidationError
	if errors.As(err, &ve) {
		return &resource.ValidationError{Causes: translateCauses(d, ve.Causes)}
	}
	return err
}

// translateAPIError makes the causes of an API error name the fields of the
// document's form.
func translateAPIError(d document, err error) error {
	var ae *apiclient.Error
	if errors.As(err, &ae) && len(ae.Causes) > 0 && d.kubernetes {
		cp := *ae
		cp.Causes = translateCauses(d, ae.Causes)
		return &cp
	}
	return err
}
