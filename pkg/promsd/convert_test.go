package promsd

import (
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

func TestSanitizeLabelName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"plain_name", "plain_name"},
		{"CamelCase09", "CamelCase09"},
		{"kuma.io/service", "kuma_io_service"},
		{"k8s.kuma.io/namespace", "k8s_kuma_io_namespace"},
		{"app-version", "app_version"},
		{"1st", "_1st"},
		{"9", "_9"},
		{"a1", "a1"},
		{"héllo wörld", "h_llo_w_rld"},
		{"日本", "__"},
		{"_x", "_x"},
	} {
		t.Run(strconv.Quote(tc.in), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, SanitizeLabelName(tc.in))
		})
	}
}

func TestConvert(t *testing.T) {
	t.Parallel()
	web := func(name, addr string) target {
		return target{name: name, scheme: "http", address: addr, path: "/metrics"}
	}
	for _, tc := range []struct {
		name string
		in   []*observabilityv1.MonitoringAssignment
		want []TargetGroup
	}{
		{
			name: "nil is an empty list",
			in:   nil,
			want: []TargetGroup{},
		},
		{
			name: "an assignment without targets gives no group",
			in:   []*observabilityv1.MonitoringAssignment{assignment("default", "web", map[string]string{"a": "b"})},
			want: []TargetGroup{},
		},
		{
			name: "several tags with several values",
			in: []*observabilityv1.MonitoringAssignment{assignment("default", "backend", nil, target{
				name: "backend-1", scheme: "https", address: "10.0.0.1:5670", path: "/stats",
				labels: map[string]string{
					"kuma_io_service":  "backend",
					"kuma_io_services": ",backend,backend-admin,",
					"version":          "v1",
					"versions":         ",v1,v2,",
					"kuma_io_zone":     "east",
				},
			})},
			want: []TargetGroup{{
				Targets: []string{"10.0.0.1:5670"},
				Labels: map[string]string{
					"__scheme__":       "https",
					"__metrics_path__": "/stats",
					"job":              "backend",
					"instance":         "backend-1",
					"mesh":             "default",
					"service":          "backend",
					"dataplane":        "backend-1",
					"kuma_io_service":  "backend",
					"kuma_io_services": ",backend,backend-admin,",
					"version":          "v1",
					"versions":         ",v1,v2,",
					"kuma_io_zone":     "east",
				},
			}},
		},
		{
			name: "assignment labels win over target labels, fixed labels over both",
			in: []*observabilityv1.MonitoringAssignment{assignment("default", "web",
				map[string]string{"team": "from-assignment", "job": "from-assignment", "k8s_kuma_io_namespace": "shop"},
				target{
					name: "web-1", scheme: "http", address: "10.0.0.2:5670", path: "/metrics",
					labels: map[string]string{"team": "from-target", "mesh": "from-target", "instance": "x", "only_target": "t"},
				},
			)},
			want: []TargetGroup{{
				Targets: []string{"10.0.0.2:5670"},
				Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "web", "instance": "web-1",
					"mesh": "default", "service": "web", "dataplane": "web-1",
					"team": "from-assignment", "k8s_kuma_io_namespace": "shop", "only_target": "t",
				},
			}},
		},
		{
			name: "label names are sanitized; reserved and empty names and empty values are dropped",
			in: []*observabilityv1.MonitoringAssignment{assignment("default", "web",
				map[string]string{"kuma.io/zone": "east", "__param_target": "evil", "": "nameless"},
				target{
					name: "web-1", scheme: "http", address: "10.0.0.2:5670", path: "/metrics",
					labels: map[string]string{
						"app.kubernetes.io/name": "web",
						"2fa":                    "on",
						"__address__":            "1.2.3.4:80",
						"__scheme__":             "https",
						"empty":                  "",
						// Sanitize alike: the smaller original name wins.
						"a-b": "dash",
						"a.b": "dot",
					},
				},
			)},
			want: []TargetGroup{{
				Targets: []string{"10.0.0.2:5670"},
				Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "web", "instance": "web-1",
					"mesh": "default", "service": "web", "dataplane": "web-1",
					"kuma_io_zone": "east", "app_kubernetes_io_name": "web", "_2fa": "on", "a_b": "dash",
				},
			}},
		},
		{
			name: "empty fixed values are left to Prometheus' defaults",
			in: []*observabilityv1.MonitoringAssignment{assignment("default", "", nil, target{
				name: "dp", address: "10.0.0.3:5670", labels: map[string]string{"__metrics_path__": "/x", "job": "j"},
			})},
			want: []TargetGroup{{
				Targets: []string{"10.0.0.3:5670"},
				Labels:  map[string]string{"instance": "dp", "mesh": "default", "dataplane": "dp"},
			}},
		},
		{
			name: "one group per target; targets without an address are skipped",
			in: []*observabilityv1.MonitoringAssignment{assignment("default", "web", nil,
				web("web-1", "10.0.0.9:5670"),
				web("web-1", ""),
				web("web-1", "10.0.0.8:5670"),
			)},
			want: []TargetGroup{
				{Targets: []string{"10.0.0.8:5670"}, Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "web", "instance": "web-1",
					"mesh": "default", "service": "web", "dataplane": "web-1",
				}},
				{Targets: []string{"10.0.0.9:5670"}, Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "web", "instance": "web-1",
					"mesh": "default", "service": "web", "dataplane": "web-1",
				}},
			},
		},
		{
			name: "sorted by mesh, then dataplane, then address",
			in: []*observabilityv1.MonitoringAssignment{
				assignment("zeta", "a", nil, web("a-1", "10.0.0.1:1")),
				assignment("alpha", "b", nil, web("b-2", "10.0.0.2:1")),
				assignment("alpha", "c", nil, web("a-9", "10.0.0.3:1")),
			},
			want: []TargetGroup{
				{Targets: []string{"10.0.0.3:1"}, Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "c", "instance": "a-9",
					"mesh": "alpha", "service": "c", "dataplane": "a-9",
				}},
				{Targets: []string{"10.0.0.2:1"}, Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "b", "instance": "b-2",
					"mesh": "alpha", "service": "b", "dataplane": "b-2",
				}},
				{Targets: []string{"10.0.0.1:1"}, Labels: map[string]string{
					"__scheme__": "http", "__metrics_path__": "/metrics", "job": "a", "instance": "a-1",
					"mesh": "zeta", "service": "a", "dataplane": "a-1",
				}},
			},
		},
		{
			name: "nil assignments and nil targets are tolerated",
			in: []*observabilityv1.MonitoringAssignment{
				nil,
				{Mesh: "default", Service: "web", Targets: []*observabilityv1.MonitoringAssignment_Target{nil}},
			},
			want: []TargetGroup{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, Convert(tc.in))
		})
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	t.Run("empty set is an empty JSON list", func(t *testing.T) {
		t.Parallel()
		for _, in := range [][]*observabilityv1.MonitoringAssignment{nil, {}} {
			data, err := Render(in)
			require.NoError(t, err)
			require.Equal(t, "[]\n", string(data))
		}
	})
	t.Run("file_sd format with sorted keys", func(t *testing.T) {
		t.Parallel()
		data, err := Render([]*observabilityv1.MonitoringAssignment{dataplane("default", "web-1", "10.0.0.1:5670", "web")})
		require.NoError(t, err)
		require.Equal(t, `[
  {
    "targets": [
      "10.0.0.1:5670"
    ],
    "labels": {
      "__metrics_path__": "/metrics",
      "__scheme__": "http",
      "dataplane": "web-1",
      "instance": "web-1",
      "job": "web",
      "kuma_io_service": "web",
      "kuma_io_services": ",web,",
      "mesh": "default",
      "service": "web"
    }
  }
]
`, string(data))
		var parsed []TargetGroup
		require.NoError(t, json.Unmarshal(data, &parsed))
	})
	t.Run("deterministic whatever the input order", func(t *testing.T) {
		t.Parallel()
		in := []*observabilityv1.MonitoringAssignment{
			dataplane("default", "web-1", "10.0.0.1:5670", "web"),
			dataplane("default", "web-2", "10.0.0.2:5670", "web"),
			dataplane("other", "db-1", "10.0.1.1:5670", "db"),
			dataplane("default", "backend-1", "10.0.0.3:5670", "backend"),
			// Same mesh, name and address: told apart by the rest.
			assignment("default", "dup", nil, target{name: "web-1", address: "10.0.0.1:5670", scheme: "https"}),
		}
		want, err := Render(in)
		require.NoError(t, err)
		rnd := rand.New(rand.NewPCG(1, 2))
		for range 20 {
			shuffled := append([]*observabilityv1.MonitoringAssignment(nil), in...)
			rnd.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got, err := Render(shuffled)
			require.NoError(t, err)
			require.Equal(t, string(want), string(got))
		}
	})
}
