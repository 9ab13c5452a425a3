package apiserver_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
)

// meshWithBadPorts is a Mesh with n metrics backends whose port is out of
// range: n causes.
func meshWithBadPorts(n int) string {
	backends := make([]string, n)
	for i := range backends {
		backends[i] = fmt.Sprintf(`{"name":"p%d","type":"prometheus","conf":{"port":70000}}`, i)
	}
	return `{"type":"Mesh","name":"default","metrics":{"backends":[` + strings.Join(backends, ",") + `]}}`
}

func TestAtMostTwentyCauses(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "PUT", "/meshes/default", meshWithBadPorts(25))
	require.Equal(t, 400, r.status)
	eb := decode[errorBody](t, r.body)
	require.Len(t, eb.Causes, 21)
	for i, c := range eb.Causes[:20] {
		require.Equal(t, fmt.Sprintf("metrics.backends[%d].conf.port", i), c.Field)
	}
	require.Equal(t, resource.Cause{Message: "and 5 more"}, eb.Causes[20])

	r = e.do(t, "PUT", "/meshes/default", meshWithBadPorts(20))
	eb = decode[errorBody](t, r.body)
	require.Len(t, eb.Causes, 20, "twenty causes are all listed")
	require.Equal(t, "metrics.backends[19].conf.port", eb.Causes[19].Field)
}

func TestMaxErrorCausesIsConfigurable(t *testing.T) {
	tokens, err := authn.Load(t.TempDir(), nil)
	require.NoError(t, err)
	e := newEnvWith(t, func(o *apiserver.Options) { o.MaxErrorCauses, o.Tokens, o.LocalhostIsAdmin = 3, tokens, true })
	eb := decode[errorBody](t, e.do(t, "PUT", "/meshes/default", meshWithBadPorts(25)).body)
	require.Len(t, eb.Causes, 4)
	require.Equal(t, "and 22 more", eb.Causes[3].Message)

	// The token endpoints' causes are bounded too.
	r := e.do(t, "POST", "/tokens/user", `{"name":"","groups":["","","","",""]}`)
	require.Equal(t, 400, r.status, string(r.body))
	eb = decode[errorBody](t, r.body)
	require.Len(t, eb.Causes, 4)
	require.Equal(t, "and 3 more", eb.Causes[3].Message)
}

// A client inventing methods adds no series: they are counted as "other".
func TestInventedMethodsAreCountedAsOther(t *testing.T) {
	e := newEnv(t)
	for _, m := range []string{"FOO", "BAR", "X-INVENTED-1", "X-INVENTED-2"} {
		e.do(t, m, "/meshes/default", "")
	}
	e.do(t, "GET", "/meshes/default", "")
	n, err := testutil.GatherAndCount(e.reg, "api_server_http_request_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 2, n, "GET and other")
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	methods := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "method" {
					methods[lp.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	require.Equal(t, map[string]uint64{"GET": 1, "other": 4}, methods)
}
