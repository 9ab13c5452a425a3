package resource

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func u32(v uint32) *uint32  { return &v }
func boolp(v bool) *bool    { return &v }
func strp(v string) *string { return &v }

func meshWith(m *Metrics) *Object { return New("", "m", &MeshSpec{Metrics: m}) }

func prom(name string, conf *PrometheusConf) MetricsBackend {
	return MetricsBackend{Name: name, Type: MetricsTypePrometheus, Conf: conf}
}

func validDataplane() *DataplaneSpec {
	return &DataplaneSpec{Networking: &Networking{
		Address: "127.0.0.2",
		Inbound: []Inbound{{Port: 8080, Tags: map[string]string{ServiceTag: "backend"}}},
	}}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		obj   *Object
		cause Cause
	}{
		{"secret without data", New("m", "s", &SecretSpec{}), Cause{"data", "must not be empty"}},
		{"secret data not base64", New("m", "s", &SecretSpec{Data: "not base64!"}), Cause{"data", "must be base64: illegal base64 data at input byte 3"}},
		{"unknown metrics backend type", meshWith(&Metrics{Backends: []MetricsBackend{{Name: "p", Type: "statsd"}}}),
			Cause{"metrics.backends[0].type", `unknown backend type "statsd"; available types: prometheus`}},
		{"duplicate backend names", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", nil), prom("p", nil)}}),
			Cause{"metrics.backends[1].name", `"p" is already used by another backend`}},
		{"enabledBackend naming no backend", meshWith(&Metrics{EnabledBackend: "q", Backends: []MetricsBackend{prom("p", nil)}}),
			Cause{"metrics.enabledBackend", "names no backend; defined backends: p"}},
		{"port 0", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Port: u32(0)})}}),
			Cause{"metrics.backends[0].conf.port", "must be in the range 1-65535"}},
		{"port 70000", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Port: u32(70000)})}}),
			Cause{"metrics.backends[0].conf.port", "must be in the range 1-65535"}},
		{"invalid filterRegex", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Envoy: &PrometheusEnvoy{FilterRegex: strp("(")}})}}),
			Cause{"metrics.backends[0].conf.envoy.filterRegex", "is not a valid regular expression: error parsing regexp: missing closing ): `(`"}},
		{"path without slash", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Path: "metrics"})}}),
			Cause{"metrics.backends[0].conf.path", "must start with '/'"}},
		{"skipMTLS contradicts tls mode", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{SkipMTLS: boolp(true), TLS: &PrometheusTLS{Mode: TLSModeActiveMTLSBackend}})}}),
			Cause{"metrics.backends[0].conf.tls.mode", `"activeMTLSBackend" contradicts skipMTLS: true (use mode "disabled" or drop skipMTLS)`}},
		{"unknown tls mode", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{TLS: &PrometheusTLS{Mode: "strict"}})}}),
			Cause{"metrics.backends[0].conf.tls.mode", `unknown mode "strict"; available modes: activeMTLSBackend, providedTLS, disabled`}},
		{"duplicate aggregate names", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Aggregate: []PrometheusAggregate{{Name: "a", Port: 1}, {Name: "a", Port: 2}}})}}),
			Cause{"metrics.backends[0].conf.aggregate[1].name", `"a" is already used by another aggregate entry`}},
		{"enabled aggregate without port", meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{Aggregate: []PrometheusAggregate{{Name: "a"}}})}}),
			Cause{"metrics.backends[0].conf.aggregate[0].port", "must be in the range 1-65535"}},
		{"unknown CA type", New("", "m", &MeshSpec{MTLS: &MTLS{Backends: []CertificateAuthorityBackend{{Name: "ca", Type: "vault"}}}}),
			Cause{"mtls.backends[0].type", `unknown backend type "vault"; available types: builtin`}},
		{"mtls enabledBackend naming no backend", New("", "m", &MeshSpec{MTLS: &MTLS{EnabledBackend: "x"}}),
			Cause{"mtls.enabledBackend", "names no backend; defined backends: none"}},
		{"bad CA expiration", New("", "m", &MeshSpec{MTLS: &MTLS{Backends: []CertificateAuthorityBackend{{Name: "ca", Type: "builtin", DpCert: &DpCert{Rotation: &DpCertRotation{Expiration: "soon"}}}}}}),
			Cause{"mtls.backends[0].dpCert.rotation.expiration", `must be a duration such as 24h, 90d or 10y: cannot parse "soon"`}},
		{"mesh name with upper case", New("", "Default", &MeshSpec{}),
			Cause{"name", "must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"}},
		{"dataplane without networking", New("default", "d", &DataplaneSpec{}),
			Cause{"networking", "must be set"}},
		{"inbound without service tag", New("default", "d", &DataplaneSpec{Networking: &Networking{Address: "1.2.3.4", Inbound: []Inbound{{Port: 1}}}}),
			Cause{`networking.inbound[0].tags["kuma.io/service"]`, "tag is required"}},
		{"inbound with unknown protocol", New("default", "d", &DataplaneSpec{Networking: &Networking{Address: "1.2.3.4", Inbound: []Inbound{{Port: 1, Tags: map[string]string{ServiceTag: "a", ProtocolTag: "udp"}}}}}),
			Cause{`networking.inbound[0].tags["kuma.io/protocol"]`, `unknown protocol "udp"; available protocols: tcp, http, http2, grpc`}},
		{"bad address", New("default", "d", &DataplaneSpec{Networking: &Networking{Address: "not an address", Inbound: validDataplane().Networking.Inbound}}),
			Cause{"networking.address", "must be an IP address or a host name"}},
		{"dataplane metrics of unknown type", New("default", "d", &DataplaneSpec{Networking: validDataplane().Networking, Metrics: &MetricsBackend{Type: "statsd"}}),
			Cause{"metrics.type", `unknown backend type "statsd"; available types: prometheus`}},
		{"dataplane metrics port 0", New("default", "d", &DataplaneSpec{Networking: validDataplane().Networking, Metrics: &MetricsBackend{Type: "prometheus", Conf: &PrometheusConf{Port: u32(0)}}}),
			Cause{"metrics.conf.port", "must be in the range 1-65535"}},
		{"traffic permission without sources", New("default", "t", &TrafficPermissionSpec{Destinations: []Selector{{Match: map[string]string{ServiceTag: "*"}}}}),
			Cause{"sources", "must have at least one selector"}},
		{"traffic permission with empty match", New("default", "t", &TrafficPermissionSpec{Sources: []Selector{{}}, Destinations: []Selector{{Match: map[string]string{ServiceTag: "*"}}}}),
			Cause{"sources[0].match", "must have at least one tag"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.obj)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, []Cause{tc.cause}, ve.Causes)
		})
	}
}

func TestValidResourcesPass(t *testing.T) {
	for _, o := range []*Object{
		New("", "default", &MeshSpec{}),
		meshWith(&Metrics{EnabledBackend: "p", Backends: []MetricsBackend{prom("p", &PrometheusConf{
			Port: u32(65535), Aggregate: []PrometheusAggregate{{Name: "off", Enabled: boolp(false)}, {Name: "app", Port: 8000, Address: "127.0.0.1"}},
			Envoy: &PrometheusEnvoy{FilterRegex: strp("^cluster\\..*")},
		})}}),
		New("default", "d", validDataplane()),
		New("default", "t", &TrafficPermissionSpec{
			Sources:      []Selector{{Match: map[string]string{ServiceTag: "*"}}},
			Destinations: []Selector{{Match: map[string]string{ServiceTag: "*"}}},
		}),
	} {
		require.NoError(t, Validate(o), o.Meta.Name)
	}
}

func TestDefaults(t *testing.T) {
	o := meshWith(&Metrics{EnabledBackend: "p", Backends: []MetricsBackend{prom("p", nil)}})
	o.Mesh().MTLS = &MTLS{EnabledBackend: "ca", Backends: []CertificateAuthorityBackend{{Name: "ca", Type: CATypeBuiltin}}}
	ApplyDefaults(o)
	c := o.Mesh().Metrics.Backends[0].Conf
	require.Equal(t, uint32(5670), *c.Port)
	require.Equal(t, "/metrics", c.Path)
	require.Equal(t, map[string]string{ServiceTag: "dataplane-metrics"}, c.Tags)
	require.Equal(t, TLSModeActiveMTLSBackend, c.TLS.Mode)
	require.Nil(t, c.SkipMTLS, "skipMTLS stays unset")
	ca := o.Mesh().MTLS.Backends[0]
	require.Equal(t, "24h", ca.DpCert.Rotation.Expiration)
	require.Equal(t, uint32(2048), ca.Conf.CACert.RSAbits)

	skip := meshWith(&Metrics{Backends: []MetricsBackend{prom("p", &PrometheusConf{SkipMTLS: boolp(true), Tags: map[string]string{"team": "a"}})}})
	ApplyDefaults(skip)
	sc := skip.Mesh().Metrics.Backends[0].Conf
	require.Equal(t, TLSModeDisabled, sc.TLS.Mode)
	require.Equal(t, map[string]string{"team": "a"}, sc.Tags, "tags are only defaulted when empty")
	require.NoError(t, Validate(skip), "defaults never make a valid resource invalid")
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		kind  Kind
		key   Key
		cause []Cause
	}{
		{KindDataplane, Key{Mesh: "default", Name: "backend-5c89f4d995-85znn.my-namespace"}, nil},
		{KindMesh, Key{Name: "default"}, nil},
		{KindDataplane, Key{Mesh: "default"}, []Cause{{Field: "name", Message: "must not be empty"}}},
		{KindDataplane, Key{Name: "web"}, []Cause{{Field: "mesh", Message: "must not be empty"}}},
		{KindDataplane, Key{Mesh: "Default", Name: "web/1"}, []Cause{
			{Field: "name", Message: "must be at most 253 letters, digits, '-', '.' and '_', starting and ending with a letter or digit"},
			{Field: "mesh", Message: meshNameMessage},
		}},
		{KindMesh, Key{Name: "My_Mesh"}, []Cause{{Field: "name", Message: meshNameMessage}}},
	} {
		err := ValidateKey(tc.kind, tc.key)
		if tc.cause == nil {
			require.NoError(t, err, "%s %s", tc.kind, tc.key)
			continue
		}
		var ve *ValidationError
		require.ErrorAs(t, err, &ve, "%s %s", tc.kind, tc.key)
		require.Equal(t, tc.cause, ve.Causes)
	}
	require.ErrorContains(t, ValidateKey("Nope", Key{Name: "x"}), `unknown resource type "Nope"`)
}
