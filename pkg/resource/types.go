package resource

import "encoding/base64"

// MeshSpec is the body of a Mesh.
type MeshSpec struct {
	MTLS       *MTLS           `json:"mtls,omitempty"`
	Metrics    *Metrics        `json:"metrics,omitempty"`
	Networking *MeshNetworking `json:"networking,omitempty"`
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

// MeshNetworking is how the mesh's transparent proxies treat traffic.
type MeshNetworking struct {
	Outbound *MeshOutbound `json:"outbound,omitempty"`
}

// MeshOutbound configures the outbound side of transparent proxies.
type MeshOutbound struct {
	// Passthrough lets a transparent proxy forward a connection whose
	// original destination is no outbound straight to that destination
	// (unset: true, as the reference system's default); false refuses it.
	Passthrough *bool `json:"passthrough,omitempty"`
}

// OutboundPassthrough tells whether the mesh's transparent proxies pass
// connections to unknown destinations through (the default) or refuse them.
func (m *MeshSpec) OutboundPassthrough() bool {
	if m == nil || m.Networking == nil || m.Networking.Outbound == nil || m.Networking.Outbound.Passthrough == nil {
		return true
	}
	return *m.Networking.Outbound.Passthrough
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
	// TransparentProxying is set when iptables rules (kumactl install
	// transparent-proxy) redirect the workload's traffic to the proxy.
	TransparentProxying *TransparentProxying `json:"transparentProxying,omitempty"`
}

// TransparentProxying says where the workload's redirected traffic arrives:
// the proxy listens on both ports on every address and routes each
// connection by its original destination. The reference system's
// redirectPortInboundV6, directAccessServices, reachableServices and
// ipFamilyMode are not supported (IPv4 only; every service of the mesh is
// reachable).
type TransparentProxying struct {
	RedirectPortInbound  uint32 `json:"redirectPortInbound,omitempty"`
	RedirectPortOutbound uint32 `json:"redirectPortOutbound,omitempty"`
}

// Default redirect ports of transparent proxying (the reference system's).
const (
	DefaultRedirectPortInbound  uint32 = 15006
	DefaultRedirectPortOutbound uint32 = 15001
)

// InboundPort is the port redirected inbound traffic arrives at.
func (t *TransparentProxying) InboundPort() uint32 {
	if t.RedirectPortInbound != 0 {
		return t.RedirectPortInbound
	}
	return DefaultRedirectPortInbound
}

// OutboundPort is the port redirected outbound traffic arrives at.
func (t *TransparentProxying) OutboundPort() uint32 {
	if t.RedirectPortOutbound != 0 {
		return t.RedirectPortOutbound
	}
	return DefaultRedirectPortOutbound
}

// Inbound is a port where the dataplane accepts traffic for its workload.
type Inbound struct {
	Port           uint32            `json:"port,omitempty"`
	ServicePort    uint32            `json:"servicePort,omitempty"`
	ServiceAddress string            `json:"serviceAddress,omitempty"`
	Address        string            `json:"address,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	// VIPs are the virtual addresses (ip:port) at which clients reach the
	// service of this inbound, on Kubernetes its Service's ClusterIP and
	// port (set by the pod controller): the transparent proxies of the
	// mesh route a connection to one of them to this service.
	VIPs []string `json:"vips,omitempty"`
}

// Outbound is an address through which the workload reaches a service: a
// local port the proxy listens on, or, for a transparently proxied
// dataplane, any address that is not a loopback one (e.g. a virtual IP the
// workload connects to), reached through the outbound redirect port by
// original destination.
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

// GlobalSecretSpec is the body of a GlobalSecret: opaque bytes, base64 in
// JSON and YAML (`data: <base64>`), as a Secret's.
type GlobalSecretSpec struct {
	Data string `json:"data"`
}

// Kind implements Spec.
func (*GlobalSecretSpec) Kind() Kind { return KindGlobalSecret }

// Bytes decodes the data.
func (s *GlobalSecretSpec) Bytes() ([]byte, error) { return base64.StdEncoding.DecodeString(s.Data) }

// NewGlobalSecret returns a GlobalSecret holding data.
func NewGlobalSecret(name string, data []byte) *Object {
	return New("", name, &GlobalSecretSpec{Data: base64.StdEncoding.EncodeToString(data)})
}
