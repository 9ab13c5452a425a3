package resource

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Cause is one reason a resource is invalid, at one field path.
type Cause struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every reason a resource is invalid.
type ValidationError struct {
	Causes []Cause
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Causes))
	for i, c := range e.Causes {
		if c.Field == "" {
			parts[i] = c.Message
		} else {
			parts[i] = c.Field + ": " + c.Message
		}
	}
	return "invalid resource: " + strings.Join(parts, "; ")
}

type verr struct{ causes []Cause }

func (v *verr) add(field, format string, args ...any) {
	v.causes = append(v.causes, Cause{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *verr) err() error {
	if len(v.causes) == 0 {
		return nil
	}
	return &ValidationError{Causes: v.causes}
}

var (
	meshNameRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	nameRe     = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9._]*[a-zA-Z0-9])?$`)
	tagKeyRe   = regexp.MustCompile(`^[a-zA-Z0-9.\-_:/]+$`)
	tagValueRe = regexp.MustCompile(`^[a-zA-Z0-9.\-_:]+$`)
)

// Messages of invalid tag names and values.
const (
	TagKeyMessage   = "tag name must consist of letters, digits, '.', '-', '_', ':' and '/'"
	TagValueMessage = "tag value must consist of letters, digits, '.', '-', '_' and ':'"
)

// ValidTagKey tells whether k may be a tag name.
func ValidTagKey(k string) bool { return tagKeyRe.MatchString(k) }

// ValidTagValue tells whether v may be a tag value (not a selector's `*`).
func ValidTagValue(v string) bool { return tagValueRe.MatchString(v) }

// Validate checks an object's identity and spec. It returns a *ValidationError
// naming every failing field, or nil.
func Validate(o *Object) error {
	v := &verr{}
	d, err := Describe(o.Meta.Kind)
	if err != nil {
		v.add("type", "%s", err.Error())
		return v.err()
	}
	if o.Spec == nil || o.Spec.Kind() != o.Meta.Kind {
		v.add("type", "spec does not match type %s", o.Meta.Kind)
		return v.err()
	}
	validateName(v, d, o.Meta)
	switch s := o.Spec.(type) {
	case *MeshSpec:
		validateMesh(v, s)
	case *DataplaneSpec:
		validateDataplane(v, s)
	case *TrafficPermissionSpec:
		validateTrafficPermission(v, s)
	case *SecretSpec:
		validateSecretData(v, s.Data)
	case *GlobalSecretSpec:
		validateSecretData(v, s.Data)
	}
	return v.err()
}

// ValidateKey checks the identity of a resource of kind without its spec:
// the name, and for mesh-scoped kinds the mesh, which must be a valid mesh
// name. It returns a *ValidationError naming the failing fields, or nil.
func ValidateKey(kind Kind, key Key) error {
	v := &verr{}
	d, err := Describe(kind)
	if err != nil {
		v.add("type", "%s", err.Error())
		return v.err()
	}
	validateName(v, d, Meta{Kind: kind, Mesh: key.Mesh, Name: key.Name})
	if d.Scoped && key.Mesh != "" && !validMeshName(key.Mesh) {
		v.add("mesh", meshNameMessage)
	}
	return v.err()
}

const meshNameMessage = "must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"

func validMeshName(name string) bool { return len(name) <= 63 && meshNameRe.MatchString(name) }

func validateName(v *verr, d Descriptor, m Meta) {
	switch {
	case m.Name == "":
		v.add("name", "must not be empty")
	case d.Kind == KindMesh && !validMeshName(m.Name):
		v.add("name", meshNameMessage)
	case len(m.Name) > 253 || !nameRe.MatchString(m.Name):
		v.add("name", "must be at most 253 letters, digits, '-', '.' and '_', starting and ending with a letter or digit")
	}
	if d.Scoped && m.Mesh == "" {
		v.add("mesh", "must not be empty")
	}
}

func validateMesh(v *verr, s *MeshSpec) {
	if s.MTLS != nil {
		validateMTLS(v, "mtls", s.MTLS)
	}
	if s.Metrics != nil {
		validateMetrics(v, "metrics", s.Metrics)
	}
}

// Types of the backends.
const (
	MetricsTypePrometheus = "prometheus"
	CATypeBuiltin         = "builtin"
)

func validateMTLS(v *verr, p string, m *MTLS) {
	names := map[string]bool{}
	for i, b := range m.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", p, i)
		switch {
		case b.Name == "":
			v.add(bp+".name", "must not be empty")
		case names[b.Name]:
			v.add(bp+".name", "%q is already used by another backend", b.Name)
		}
		names[b.Name] = true
		if b.Type != CATypeBuiltin {
			v.add(bp+".type", "unknown backend type %q; available types: %s", b.Type, CATypeBuiltin)
		}
		if b.DpCert != nil && b.DpCert.Rotation != nil && b.DpCert.Rotation.Expiration != "" {
			validateDuration(v, bp+".dpCert.rotation.expiration", b.DpCert.Rotation.Expiration)
		}
		if b.Conf != nil && b.Conf.CACert != nil {
			c := b.Conf.CACert
			if c.RSAbits != 0 && (c.RSAbits < 2048 || c.RSAbits > 8192) {
				v.add(bp+".conf.caCert.RSAbits", "must be between 2048 and 8192")
			}
			if c.Expiration != "" {
				validateDuration(v, bp+".conf.caCert.expiration", c.Expiration)
			}
		}
	}
	if m.EnabledBackend != "" && !names[m.EnabledBackend] {
		v.add(p+".enabledBackend", "names no backend; defined backends: %s", listNames(names))
	}
}

func validateDuration(v *verr, p, s string) {
	d, err := ParseDuration(s)
	if err != nil {
		v.add(p, "must be a duration such as 24h, 90d or 10y: %s", err.Error())
		return
	}
	if d <= 0 {
		v.add(p, "must be positive")
	}
}

// ParseDuration accepts Go durations (`1h30m`) and Prometheus' units (`90d`, `10y`, `2w`).
func ParseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse %q", s)
	}
	return time.Duration(d), nil
}

func listNames(names map[string]bool) string {
	if len(names) == 0 {
		return "none"
	}
	l := make([]string, 0, len(names))
	for n := range names {
		l = append(l, n)
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

func validateMetrics(v *verr, p string, m *Metrics) {
	names := map[string]bool{}
	for i, b := range m.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", p, i)
		switch {
		case b.Name == "":
			v.add(bp+".name", "must not be empty")
		case names[b.Name]:
			v.add(bp+".name", "%q is already used by another backend", b.Name)
		}
		names[b.Name] = true
		validateMetricsBackendType(v, bp+".type", b.Type)
		if b.Conf != nil {
			validatePrometheusConf(v, bp+".conf", b.Conf)
		}
	}
	if m.EnabledBackend != "" && !names[m.EnabledBackend] {
		v.add(p+".enabledBackend", "names no backend; defined backends: %s", listNames(names))
	}
}

func validateMetricsBackendType(v *verr, p, t string) {
	if t != MetricsTypePrometheus {
		v.add(p, "unknown backend type %q; available types: %s", t, MetricsTypePrometheus)
	}
}

func validPort(p uint32) bool { return p >= 1 && p <= 65535 }

const portRange = "must be in the range 1-65535"

func validatePrometheusConf(v *verr, p string, c *PrometheusConf) {
	if c.Port != nil && !validPort(*c.Port) {
		v.add(p+".port", portRange)
	}
	if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
		v.add(p+".path", "must start with '/'")
	}
	validateTags(v, p+".tags", c.Tags, false)
	if c.TLS != nil {
		switch c.TLS.Mode {
		case "", TLSModeActiveMTLSBackend, TLSModeProvidedTLS, TLSModeDisabled:
		default:
			v.add(p+".tls.mode", "unknown mode %q; available modes: %s, %s, %s", c.TLS.Mode, TLSModeActiveMTLSBackend, TLSModeProvidedTLS, TLSModeDisabled)
		}
		if c.SkipMTLS != nil && c.TLS.Mode != "" {
			skip := *c.SkipMTLS
			if skip && c.TLS.Mode != TLSModeDisabled {
				v.add(p+".tls.mode", "%q contradicts skipMTLS: true (use mode %q or drop skipMTLS)", c.TLS.Mode, TLSModeDisabled)
			}
			if !skip && c.TLS.Mode == TLSModeDisabled {
				v.add(p+".tls.mode", "%q contradicts skipMTLS: false", c.TLS.Mode)
			}
		}
	}
	if c.Envoy != nil && c.Envoy.FilterRegex != nil {
		if _, err := regexp.Compile(*c.Envoy.FilterRegex); err != nil {
			v.add(p+".envoy.filterRegex", "is not a valid regular expression: %s", err.Error())
		}
	}
	names := map[string]bool{}
	for i, a := range c.Aggregate {
		ap := fmt.Sprintf("%s.aggregate[%d]", p, i)
		switch {
		case a.Name == "":
			v.add(ap+".name", "must not be empty")
		case names[a.Name]:
			v.add(ap+".name", "%q is already used by another aggregate entry", a.Name)
		}
		names[a.Name] = true
		enabled := a.Enabled == nil || *a.Enabled
		if enabled && !validPort(a.Port) {
			v.add(ap+".port", portRange)
		} else if a.Port > 65535 {
			v.add(ap+".port", portRange)
		}
		if a.Path != "" && !strings.HasPrefix(a.Path, "/") {
			v.add(ap+".path", "must start with '/'")
		}
		if a.Address != "" && net.ParseIP(a.Address) == nil {
			v.add(ap+".address", "must be an IP address")
		}
	}
}

// validateTags checks tag keys and values; selectors may use `*` as a value.
func validateTags(v *verr, p string, tags map[string]string, selector bool) {
	for _, k := range sortedKeys(tags) {
		val := tags[k]
		kp := fmt.Sprintf("%s[%q]", p, k)
		if !ValidTagKey(k) {
			v.add(kp, TagKeyMessage)
		}
		switch {
		case val == "":
			v.add(kp, "tag value must not be empty")
		case selector && val == "*":
		case !ValidTagValue(val):
			v.add(kp, TagValueMessage)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortStrings(s []string) { sort.Strings(s) }

var protocols = []string{"tcp", "http", "http2", "grpc"}

func validateDataplane(v *verr, s *DataplaneSpec) {
	n := s.Networking
	if n == nil {
		v.add("networking", "must be set")
	} else {
		validateAddress(v, "networking.address", n.Address, true)
		if n.AdvertisedAddress != "" {
			validateAddress(v, "networking.advertisedAddress", n.AdvertisedAddress, false)
		}
		if len(n.Inbound) == 0 {
			v.add("networking.inbound", "must have at least one inbound")
		}
		seen := map[string]int{}
		for i, in := range n.Inbound {
			p := fmt.Sprintf("networking.inbound[%d]", i)
			if !validPort(in.Port) {
				v.add(p+".port", portRange)
			}
			if in.ServicePort != 0 && !validPort(in.ServicePort) {
				v.add(p+".servicePort", portRange)
			}
			if in.ServiceAddress != "" && net.ParseIP(in.ServiceAddress) == nil {
				v.add(p+".serviceAddress", "must be an IP address")
			}
			if in.Address != "" && net.ParseIP(in.Address) == nil {
				v.add(p+".address", "must be an IP address")
			}
			key := fmt.Sprintf("%s:%d", in.Address, in.Port)
			if j, dup := seen[key]; dup && validPort(in.Port) {
				v.add(p+".port", "port %d is already used by inbound[%d]", in.Port, j)
			}
			seen[key] = i
			validateTags(v, p+".tags", in.Tags, false)
			if in.Tags[ServiceTag] == "" {
				v.add(fmt.Sprintf("%s.tags[%q]", p, ServiceTag), "tag is required")
			}
			if proto, ok := in.Tags[ProtocolTag]; ok && !contains(protocols, proto) {
				v.add(fmt.Sprintf("%s.tags[%q]", p, ProtocolTag), "unknown protocol %q; available protocols: %s", proto, strings.Join(protocols, ", "))
			}
			for j, vip := range in.VIPs {
				if _, err := ParseVIP(vip); err != nil {
					v.add(fmt.Sprintf("%s.vips[%d]", p, j), "%s", err.Error())
				}
			}
		}
		if tp := n.TransparentProxying; tp != nil {
			validateTransparentProxying(v, n, tp)
		}
		seenOut := map[string]int{}
		for i, out := range n.Outbound {
			p := fmt.Sprintf("networking.outbound[%d]", i)
			if !validPort(out.Port) {
				v.add(p+".port", portRange)
			}
			if out.Address != "" && net.ParseIP(out.Address) == nil {
				v.add(p+".address", "must be an IP address")
			}
			key := fmt.Sprintf("%s:%d", out.Address, out.Port)
			if j, dup := seenOut[key]; dup && validPort(out.Port) {
				v.add(p+".port", "port %d is already used by outbound[%d]", out.Port, j)
			}
			seenOut[key] = i
			validateTags(v, p+".tags", out.Tags, false)
			if out.Tags[ServiceTag] == "" {
				v.add(fmt.Sprintf("%s.tags[%q]", p, ServiceTag), "tag is required")
			}
		}
	}
	if s.Metrics != nil {
		validateMetricsBackendType(v, "metrics.type", s.Metrics.Type)
		if s.Metrics.Conf != nil {
			validatePrometheusConf(v, "metrics.conf", s.Metrics.Conf)
		}
	}
}

// ParseVIP reads a virtual address, an IP address and a port ("10.96.0.10:80").
func ParseVIP(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q must be an IP address and a port, such as 10.96.0.10:80", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: port %s", s, portRange)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func validateTransparentProxying(v *verr, n *Networking, tp *TransparentProxying) {
	const p = "networking.transparentProxying"
	if tp.RedirectPortInbound > 65535 {
		v.add(p+".redirectPortInbound", portRange)
	}
	if tp.RedirectPortOutbound > 65535 {
		v.add(p+".redirectPortOutbound", portRange)
	}
	in, out := tp.InboundPort(), tp.OutboundPort()
	if in == out {
		v.add(p+".redirectPortOutbound", "must differ from redirectPortInbound (%d)", in)
	}
	for i, ib := range n.Inbound {
		if ib.Port == in || ib.Port == out {
			v.add(fmt.Sprintf("networking.inbound[%d].port", i), "port %d is a redirect port of transparentProxying", ib.Port)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var hostnameRe = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$`)

func validateAddress(v *verr, p, addr string, required bool) {
	switch {
	case addr == "":
		if required {
			v.add(p, "must not be empty")
		}
	case net.ParseIP(addr) != nil:
	case len(addr) <= 253 && hostnameRe.MatchString(addr):
	default:
		v.add(p, "must be an IP address or a host name")
	}
}

func validateTrafficPermission(v *verr, s *TrafficPermissionSpec) {
	validateSelectors(v, "sources", s.Sources)
	validateSelectors(v, "destinations", s.Destinations)
}

func validateSelectors(v *verr, p string, sel []Selector) {
	if len(sel) == 0 {
		v.add(p, "must have at least one selector")
	}
	for i, s := range sel {
		sp := fmt.Sprintf("%s[%d].match", p, i)
		if len(s.Match) == 0 {
			v.add(sp, "must have at least one tag")
			continue
		}
		validateTags(v, sp, s.Match, true)
	}
}

// validateSecretData checks the data of a Secret or GlobalSecret: base64 of
// at least one byte.
func validateSecretData(v *verr, data string) {
	if data == "" {
		v.add("data", "must not be empty")
	} else if _, err := base64.StdEncoding.DecodeString(data); err != nil {
		v.add("data", "must be base64: %v", err)
	}
}
