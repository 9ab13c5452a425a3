package kumactl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
)

// table writes columns aligned like kubectl: upper-case headers, two spaces
// between columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		// A tab or newline in a value would break the alignment.
		cols[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// Output formats of -o/--output.
const (
	outputTable = "table"
	outputYAML  = "yaml"
	outputJSON  = "json"
)

func checkOutput(format string) error {
	switch format {
	case outputTable, outputYAML, outputJSON:
		return nil
	}
	return fmt.Errorf("unknown output format %q; use one of table, yaml, json", format)
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// printYAML writes v's JSON as YAML, keeping the order of object keys.
func printYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	y, err := resource.JSONToOrderedYAML(b)
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// yamlList is the YAML shape of a listing: items, then total.
type yamlList[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

// jsonList is the JSON shape of a listing, the API's (without next).
type jsonList[T any] struct {
	Total int `json:"total"`
	Items []T `json:"items"`
}

// printList writes a listing as YAML or JSON.
func printList[T any](w io.Writer, format string, items []T) error {
	if items == nil {
		items = []T{}
	}
	if format == outputYAML {
		return printYAML(w, yamlList[T]{Items: items, Total: len(items)})
	}
	return printJSON(w, jsonList[T]{Total: len(items), Items: items})
}

// age renders how long ago t was, like kubectl's AGE column.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return humanDuration(now.Sub(t))
}

// humanDuration is kubectl's rendering of a duration: two significant units
// at most, coarser as the duration grows (45s, 3m20s, 2h, 5d3h, 400d, 3y).
func humanDuration(d time.Duration) string {
	if seconds := int(d.Seconds()); seconds < -1 {
		return "<invalid>"
	} else if seconds < 0 {
		return "0s"
	} else if seconds < 60*2 {
		return fmt.Sprintf("%ds", seconds)
	}
	minutes := int(d / time.Minute)
	if minutes < 10 {
		s := int(d/time.Second) % 60
		if s == 0 {
			return fmt.Sprintf("%dm", minutes)
		}
		return fmt.Sprintf("%dm%ds", minutes, s)
	} else if minutes < 60*3 {
		return fmt.Sprintf("%dm", minutes)
	}
	hours := int(d / time.Hour)
	if hours < 8 {
		m := int(d/time.Minute) % 60
		if m == 0 {
			return fmt.Sprintf("%dh", hours)
		}
		return fmt.Sprintf("%dh%dm", hours, m)
	} else if hours < 48 {
		return fmt.Sprintf("%dh", hours)
	} else if hours < 24*8 {
		h := hours % 24
		if h == 0 {
			return fmt.Sprintf("%dd", hours/24)
		}
		return fmt.Sprintf("%dd%dh", hours/24, h)
	} else if hours < 24*365*2 {
		return fmt.Sprintf("%dd", hours/24)
	} else if hours < 24*365*8 {
		dy := (hours / 24) % 365
		if dy == 0 {
			return fmt.Sprintf("%dy", hours/24/365)
		}
		return fmt.Sprintf("%dy%dd", hours/24/365, dy)
	}
	return fmt.Sprintf("%dy", hours/24/365)
}

// tagsOf renders the tags of every inbound of a dataplane, sorted:
// `kuma.io/service=backend version=v1`.
func tagsOf(spec *resource.DataplaneSpec) string {
	if spec == nil {
		return "<none>"
	}
	values := spec.TagValues()
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		for _, v := range values[k] {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) == 0 {
		return "<none>"
	}
	return strings.Join(parts, " ")
}

// backendOf renders the enabled backend of a mesh as `type/name`, or `off`.
func backendOf(enabled string, types map[string]string) string {
	if enabled == "" {
		return "off"
	}
	if t := types[enabled]; t != "" {
		return t + "/" + enabled
	}
	return enabled
}

func mtlsOf(m *resource.MeshSpec) string {
	if m == nil || m.MTLS == nil {
		return "off"
	}
	types := map[string]string{}
	for _, b := range m.MTLS.Backends {
		types[b.Name] = b.Type
	}
	return backendOf(m.MTLS.EnabledBackend, types)
}

func metricsOf(m *resource.MeshSpec) string {
	if m == nil || m.Metrics == nil {
		return "off"
	}
	types := map[string]string{}
	for _, b := range m.Metrics.Backends {
		types[b.Name] = b.Type
	}
	return backendOf(m.Metrics.EnabledBackend, types)
}
