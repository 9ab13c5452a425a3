package kumactl_test

import (
	"net/http"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
)

// putRecorder answers PUTs, creating what it has not seen and recording
// every resource it got.
type putRecorder struct {
	existing map[string]bool
	got      []string
}

func (p *putRecorder) put(w http.ResponseWriter, r *http.Request, obj *resource.Object) {
	p.got = append(p.got, string(obj.Meta.Kind)+" "+obj.Meta.Key().String())
	status := http.StatusCreated
	if p.existing[obj.Meta.Key().String()] {
		status = http.StatusOK
	}
	if r.Header.Get("If-Match") != "" {
		status = http.StatusBadRequest
	}
	obj.Meta.CreationTime, obj.Meta.ModificationTime = now, now
	w.Header().Set("ETag", `"1"`)
	writeJSON(w, status, obj)
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		// rejects answers a PUT of that name with a 400 and causes.
		rejects string
		// wantPut lists the resources that must reach the control plane.
		wantPut []string
	}{
		{
			name:    "mixed forms",
			args:    []string{"apply", "-f", "testdata/input/mixed.yaml"},
			wantPut: []string{"Mesh default", "Dataplane default/backend-1", "TrafficPermission default/allow-all"},
		},
		{
			name:    "from stdin",
			args:    []string{"apply", "-f", "-"},
			stdin:   "type: Mesh\nname: from-stdin\n",
			wantPut: []string{"Mesh from-stdin"},
		},
		{name: "syntax error in the second document", args: []string{"apply", "-f", "testdata/input/syntax-error.yaml"}},
		{name: "tab in the second document", args: []string{"apply", "-f", "testdata/input/tab-error.yaml"}},
		{name: "syntax error on the first line of a document", args: []string{"apply", "-f", "testdata/input/first-line-error.yaml"}},
		{name: "unknown field", args: []string{"apply", "-f", "testdata/input/unknown-field.yaml"}},
		{name: "empty file", args: []string{"apply", "-f", "testdata/input/empty.yaml"}},
		{name: "missing file", args: []string{"apply", "-f", "testdata/input/nope.yaml"}},
		{name: "no file flag", args: []string{"apply"}},
		{
			name:    "server rejects the second document",
			args:    []string{"apply", "-f", "testdata/input/server-rejects.yaml"},
			rejects: "other",
			wantPut: []string{"Mesh default", "Mesh other"},
		},
		{
			name:    "server rejects a kubernetes document",
			args:    []string{"apply", "-f", "testdata/input/k8s-server-rejects.yaml"},
			rejects: "other",
			wantPut: []string{"Mesh default", "Mesh other"},
		},
		{name: "dry run", args: []string{"apply", "--dry-run", "-f", "testdata/input/mixed.yaml"}},
		{name: "dry run invalid", args: []string{"apply", "--dry-run", "-f", "testdata/input/invalid.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.stdin = tc.stdin
			rec := &putRecorder{existing: map[string]bool{"default/backend-1": true}}
			if tc.wantPut != nil {
				e.cp.Put = func(w http.ResponseWriter, r *http.Request, obj *resource.Object) {
					if obj.Meta.Name == tc.rejects {
						rec.got = append(rec.got, string(obj.Meta.Kind)+" "+obj.Meta.Key().String())
						writeError(w, http.StatusBadRequest, "Could not process a resource", "Resource is not valid", []resource.Cause{
							{Field: "metrics.backends[0].conf.port", Message: "must be in the range 1-65535"},
							{Field: "name", Message: "must be lower-case"},
						})
						return
					}
					rec.put(w, r, obj)
				}
			}
			res := e.run(tc.args...)
			golden(t, "apply/"+tc.name, res.String())
			require.Equal(t, tc.wantPut, rec.got)
			if tc.wantPut == nil {
				require.Empty(t, e.cp.seen(), "nothing may be sent")
			}
		})
	}
}

func TestApplyDryRunNeedsNoConfig(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, os.WriteFile(e.cfgFile, []byte("currentContext: [broken"), 0o600))
	res := e.run("apply", "--dry-run", "-f", "testdata/input/mixed.yaml")
	require.Equal(t, 0, res.code, res.stderr)
}
