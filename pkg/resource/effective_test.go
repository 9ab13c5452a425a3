package resource

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEffectiveMetricsConfig(t *testing.T) {
	enabled := func(conf *PrometheusConf) *MeshSpec {
		return &MeshSpec{Metrics: &Metrics{EnabledBackend: "prom", Backends: []MetricsBackend{prom("other", &PrometheusConf{Port: u32(1)}), prom("prom", conf)}}}
	}
	dpWith := func(conf *PrometheusConf) *DataplaneSpec {
		d := validDataplane()
		d.Metrics = &MetricsBackend{Type: MetricsTypePrometheus, Conf: conf}
		return d
	}
	base := func() EffectiveMetrics {
		return EffectiveMetrics{Backend: "prom", Port: 5670, Path: "/metrics",
			Tags: map[string]string{ServiceTag: "dataplane-metrics"}, TLSMode: TLSModeActiveMTLSBackend}
	}
	tests := []struct {
		name string
		mesh *MeshSpec
		dp   *DataplaneSpec
		want func(e *EffectiveMetrics)
		none bool
	}{
		{name: "mesh without metrics gives none", mesh: &MeshSpec{}, dp: validDataplane(), none: true},
		{name: "no enabled backend gives none, even when the dataplane sets metrics", mesh: &MeshSpec{Metrics: &Metrics{Backends: []MetricsBackend{prom("prom", nil)}}}, dp: dpWith(&PrometheusConf{Port: u32(1234)}), none: true},
		{name: "nil mesh gives none", mesh: nil, dp: validDataplane(), none: true},
		{name: "enabled backend with no conf takes every default", mesh: enabled(nil), dp: validDataplane(), want: func(e *EffectiveMetrics) {}},
		{name: "the enabled backend is used, not the first", mesh: enabled(&PrometheusConf{Port: u32(9000)}), dp: validDataplane(), want: func(e *EffectiveMetrics) { e.Port = 9000 }},
		{name: "dataplane without metrics inherits the mesh", mesh: enabled(&PrometheusConf{Port: u32(9000), Path: "/m"}), dp: validDataplane(), want: func(e *EffectiveMetrics) { e.Port, e.Path = 9000, "/m" }},
		{name: "dataplane port and path win", mesh: enabled(&PrometheusConf{Port: u32(9000), Path: "/m"}), dp: dpWith(&PrometheusConf{Port: u32(1234), Path: "/non-standard-path"}),
			want: func(e *EffectiveMetrics) { e.Port, e.Path = 1234, "/non-standard-path" }},
		{name: "unset dataplane fields inherit", mesh: enabled(&PrometheusConf{Port: u32(9000), Path: "/m"}), dp: dpWith(&PrometheusConf{Path: "/x"}),
			want: func(e *EffectiveMetrics) { e.Port, e.Path = 9000, "/x" }},
		{name: "dataplane usedOnly false beats mesh true", mesh: enabled(&PrometheusConf{Envoy: &PrometheusEnvoy{UsedOnly: boolp(true), FilterRegex: strp("^cluster")}}), dp: dpWith(&PrometheusConf{Envoy: &PrometheusEnvoy{UsedOnly: boolp(false)}}),
			want: func(e *EffectiveMetrics) { e.UsedOnly, e.FilterRegex = false, "^cluster" }},
		{name: "dataplane empty filterRegex clears the mesh filter", mesh: enabled(&PrometheusConf{Envoy: &PrometheusEnvoy{FilterRegex: strp("^cluster")}}), dp: dpWith(&PrometheusConf{Envoy: &PrometheusEnvoy{FilterRegex: strp("")}}),
			want: func(e *EffectiveMetrics) { e.FilterRegex = "" }},
		{name: "mesh envoy settings inherited", mesh: enabled(&PrometheusConf{Envoy: &PrometheusEnvoy{UsedOnly: boolp(true), FilterRegex: strp("^http")}}), dp: validDataplane(),
			want: func(e *EffectiveMetrics) { e.UsedOnly, e.FilterRegex = true, "^http" }},
		{name: "tags merge key by key, dataplane wins", mesh: enabled(&PrometheusConf{Tags: map[string]string{ServiceTag: "m", "team": "a"}}), dp: dpWith(&PrometheusConf{Tags: map[string]string{"team": "b", "zone": "z"}}),
			want: func(e *EffectiveMetrics) { e.Tags = map[string]string{ServiceTag: "m", "team": "b", "zone": "z"} }},
		{name: "mesh skipMTLS true disables TLS", mesh: enabled(&PrometheusConf{SkipMTLS: boolp(true)}), dp: validDataplane(),
			want: func(e *EffectiveMetrics) { e.SkipMTLS, e.TLSMode = true, TLSModeDisabled }},
		{name: "dataplane skipMTLS false beats mesh true", mesh: enabled(&PrometheusConf{SkipMTLS: boolp(true), TLS: &PrometheusTLS{Mode: TLSModeDisabled}}), dp: dpWith(&PrometheusConf{SkipMTLS: boolp(false)}),
			want: func(e *EffectiveMetrics) { e.SkipMTLS, e.TLSMode = false, TLSModeActiveMTLSBackend }},
		{name: "dataplane skipMTLS true beats mesh false", mesh: enabled(&PrometheusConf{SkipMTLS: boolp(false)}), dp: dpWith(&PrometheusConf{SkipMTLS: boolp(true)}),
			want: func(e *EffectiveMetrics) { e.SkipMTLS, e.TLSMode = true, TLSModeDisabled }},
		{name: "dataplane skipMTLS false keeps the mesh's providedTLS", mesh: enabled(&PrometheusConf{TLS: &PrometheusTLS{Mode: TLSModeProvidedTLS}}), dp: dpWith(&PrometheusConf{SkipMTLS: boolp(false)}),
			want: func(e *EffectiveMetrics) { e.TLSMode = TLSModeProvidedTLS }},
		{name: "dataplane tls mode wins and sets skipMTLS", mesh: enabled(nil), dp: dpWith(&PrometheusConf{TLS: &PrometheusTLS{Mode: TLSModeDisabled}}),
			want: func(e *EffectiveMetrics) { e.TLSMode, e.SkipMTLS = TLSModeDisabled, true }},
		{name: "aggregate entries replaced whole by name and disabled ones dropped",
			mesh: enabled(&PrometheusConf{Aggregate: []PrometheusAggregate{
				{Name: "app", Port: 8000, Path: "/stats", Address: "127.0.0.9"},
				{Name: "sidecar", Port: 9000},
				{Name: "off", Port: 9100, Enabled: boolp(false)},
			}}),
			dp: dpWith(&PrometheusConf{Aggregate: []PrometheusAggregate{
				{Name: "app", Port: 8001},
				{Name: "sidecar", Enabled: boolp(false)},
				{Name: "off", Port: 9101, Enabled: boolp(true)},
				{Name: "extra", Port: 7000, Path: "/x"},
			}}),
			want: func(e *EffectiveMetrics) {
				e.Aggregate = []AggregateEndpoint{
					{Name: "app", Port: 8001, Path: "/metrics"},
					{Name: "extra", Port: 7000, Path: "/x"},
					{Name: "off", Port: 9101, Path: "/metrics"},
				}
			}},
		{name: "dataplane metrics without conf inherits everything", mesh: enabled(&PrometheusConf{Port: u32(9000)}), dp: func() *DataplaneSpec {
			d := validDataplane()
			d.Metrics = &MetricsBackend{Type: "prometheus"}
			return d
		}(),
			want: func(e *EffectiveMetrics) { e.Port = 9000 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := EffectiveMetricsConfig(tc.mesh, tc.dp)
			if tc.none {
				require.Nil(t, got)
				return
			}
			want := base()
			tc.want(&want)
			require.NotNil(t, got)
			require.Equal(t, want, *got)
		})
	}
}

func TestEffectiveMetricsOfGuideSnippets(t *testing.T) {
	mesh := decodeFile(t, "mesh-universal-short.yaml")[0]
	ApplyDefaults(mesh)
	dp := decodeFile(t, "dataplane-override-universal.yaml")[0]
	got := EffectiveMetricsConfig(mesh.Mesh(), dp.Dataplane())
	require.Equal(t, uint32(1234), got.Port)
	require.Equal(t, "/non-standard-path", got.Path)
	require.Equal(t, TLSModeDisabled, got.TLSMode)
	require.Equal(t, map[string]string{ServiceTag: "dataplane-metrics"}, got.Tags)
}
