package resource

import "encoding/base64"

// MeshSpec is the body of a Mesh.
type MeshSpec struct {
	MTLS    *MTLS    `json:"mtls,omitempty"`
	Metrics *Metrics `json:"metrics,omitempty"`
}

// Kind implements Spec.
func (*MeshSpec) Kind() Kind { return KindMesh }

// MTLS is a mesh's mutual TLS configuration.
type MTLS struct {
	EnabledBackend string                        `json:"enabledBackend,omitempty"`
	Backends       []CertificateAuthorityBackend `json:"backends,omitempty"`
}

// CertificateAuthorityBackend is one CA of a mesh.
type CertificateAuthorityBackend struct {
	Name   string         `json:"name"`
	Type   string         `json:"type"`
	DpCert *DpCert        `json:"dpCert,omitempty"`
	Conf   *BuiltinCAConf `json:"conf,omitempty"`
}

// DpCert configures the workload certificates a CA issues.
type DpCert struct {
	Rotation *DpCertRotation `json:"rotation,omitempty"`
}

// DpCertRotation sets the lifetime of workload certificates.
type DpCertRotation struct {
	Expiration string `json:"expiration,omitempty"`
}

// BuiltinCAConf configures a builtin CA.
type BuiltinCAConf struct {
	CACert *BuiltinCACert `json:"caCert,omitempty"`
}

// BuiltinCACert configures the root certificate of a builtin CA.
type BuiltinCACert struct {
	RSAbits    uint32 `json:"RSAbits,omitempty"`
	Expiration string `json:"expiration,omitempty"`
}

// Metrics is a mesh's metrics configuration.
type Metrics struct {
	EnabledBackend string           `json:"enabledBackend,omitempty"`
	Backends       []MetricsBackend `json:"backends,omitempty"`
}

// MetricsBackend is one metrics backend; on a Dataplane its name is ignored.
type MetricsBackend struct {
	Name string          `json:"name,omitempty"`
	Type string          `json:"type,omitempty"`
	Conf *PrometheusConf `json:"conf,omitempty"`
}

// PrometheusConf configures the Prometheus endpoint of every proxy. Optional
// fields are pointers so that an explicit value (even false or empty) can be
// told apart from an unset one when a Dataplane overrides its Mesh.
type PrometheusConf struct {
	Port      *uint32               `json:"port,omitempty"`
	Path      string                `json:"path,omitempty"`
	Tags      map[string]string     `json:"tags,omitempty"`
	SkipMTLS  *bool                 `json:"skipMTLS,omitempty"`
	Aggregate []PrometheusAggregate `json:"aggregate,omitempty"`
	Envoy     *PrometheusEnvoy      `json:"envoy,omitempty"`
	TLS       *PrometheusTLS        `json:"tls,omitempty"`
}

// PrometheusAggregate is an application metrics endpoint merged into the proxy's.
type PrometheusAggregate struct {
	Name    string `json:"name"`
	Port    uint32 `json:"port,omitempty"`
	Path    string `json:"path,omitempty"`
	Enabled *bool  `json:"enabled,omitempty"`
	Address string `json:"address,omitempty"`
}

// PrometheusEnvoy filters the proxy's own statistics.
type PrometheusEnvoy struct {
	FilterRegex *string `json:"filterRegex,omitempty"`
	UsedOnly    *bool   `json:"usedOnly,omitempty"`
}

// PrometheusTLS selects how the metrics endpoint is served.
type PrometheusTLS struct {
	Mode string `json:"mode,omitempty"`
}

// The TLS modes of the metrics endpoint.
const (
	TLSModeActiveMTLSBackend = "activeMTLSBackend"
	TLSModeProvidedTLS       = "providedTLS"
	TLSModeDisabled          = "disabled"
)

// DataplaneSpec is the body of a Dataplane.
type DataplaneSpec struct {
	Networking *Networking     `json:"networking,omitempty"`
	Metrics    *MetricsBackend `json:"metrics,omitempty"`
}

// Kind implements Spec.
func (*DataplaneSpec) Kind() Kind { return KindDataplane }

// Networking is where a dataplane lives and what it carries.
type Networking struct {
	Address           string     `json:"address,omitempty"`
	AdvertisedAddress string     `json:"advertisedAddress,omitempty"`
	Inbound           []Inbound  `json:"inbound,omitempty"`
	Outbound          []Outbound `json:"outbound,omitempty"`
}

// Inbound is a port where the dataplane accepts traffic for its workload.
type Inbound struct {
	Port           uint32            `json:"port,omitempty"`
	ServicePort    uint32            `json:"servicePort,omitempty"`
	ServiceAddress string            `json:"serviceAddress,omitempty"`
	Address        string            `json:"address,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
}

// Outbound is a local port through which the workload reaches a service.
type Outbound struct {
	Port    uint32            `json:"port,omitempty"`
	Address string            `json:"address,omitempty"`
	Tags    map[string]string `json:"tags,omitempty"`
}

// Well-known tags.
const (
	ServiceTag  = "kuma.io/service"
	ProtocolTag = "kuma.io/protocol"
)

// DefaultServiceAddress is where an inbound forwards traffic unless it says otherwise.
const DefaultServiceAddress = "127.0.0.1"

// EffectiveServicePort is the application port behind an inbound (its port when unset).
func (in Inbound) EffectiveServicePort() uint32 {
	if in.ServicePort != 0 {
		return in.ServicePort
	}
	return in.Port
}

// EffectiveServiceAddress is the application address behind an inbound.
func (in Inbound) EffectiveServiceAddress() string {
	if in.ServiceAddress != "" {
		return in.ServiceAddress
	}
	return DefaultServiceAddress
}

// Services returns the sorted distinct kuma.io/service values of the inbounds.
func (d *DataplaneSpec) Services() []string {
	return d.TagValues()[ServiceTag]
}

// TagValues returns, for every tag key over all inbounds, its sorted distinct values.
func (d *DataplaneSpec) TagValues() map[string][]string {
	out := map[string][]string{}
	if d.Networking == nil {
		return out
	}
	seen := map[[2]string]bool{}
	for _, in := range d.Networking.Inbound {
		for k, v := range in.Tags {
			if seen[[2]string{k, v}] {
				continue
			}
			seen[[2]string{k, v}] = true
			out[k] = append(out[k], v)
		}
	}
	for k := range out {
		sortStrings(out[k])
	}
	return out
}

// TrafficPermissionSpec is the body of a TrafficPermission.
type TrafficPermissionSpec struct {
	Sources      []Selector `json:"sources,omitempty"`
	Destinations []Selector `json:"destinations,omitempty"`
}

// Kind implements Spec.
func (*TrafficPermissionSpec) Kind() Kind { return KindTrafficPermission }

// Selector matches dataplanes by tags; `*` matches any value.
type Selector struct {
	Match map[string]string `json:"match"`
}

// SecretSpec is the body of a Secret: opaque bytes, base64 in JSON and YAML
// (`data: <base64>`). The control plane keeps CA material in secrets.
type SecretSpec struct {
	Data string `json:"data"`
}

// Kind implements Spec.
func (*SecretSpec) Kind() Kind { return KindSecret }

// Bytes decodes the data.
func (s *SecretSpec) Bytes() ([]byte, error) { return base64.StdEncoding.DecodeString(s.Data) }

// NewSecret returns a Secret holding data.
func NewSecret(mesh, name string, data []byte) *Object {
	return New(mesh, name, &SecretSpec{Data: base64.StdEncoding.EncodeToString(data)})
}
