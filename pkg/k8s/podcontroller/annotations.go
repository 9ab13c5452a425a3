package podcontroller

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Labels and annotations the pod controller reads (the reference system's names).
const (
	// SidecarInjection turns a Pod into a Dataplane: as a label of the
	// Namespace, or a label or annotation of the Pod (which wins over its
	// Namespace). Values: enabled/true/yes or disabled/false/no.
	SidecarInjection = "kuma.io/sidecar-injection"
	// SidecarInjected is set on a Pod by the injector: true makes it a
	// Dataplane whatever its Namespace says.
	SidecarInjected = "kuma.io/sidecar-injected"
	// Mesh picks the Pod's mesh: the Pod's label, else its annotation, else
	// the Namespace's label, else its annotation, else `default`.
	Mesh = "kuma.io/mesh"
	// Ignore on a Service (true/yes/enabled) keeps it out of every Dataplane.
	Ignore = "kuma.io/ignore"

	// MetricsPort overrides the mesh's metrics port for the Pod's proxy.
	MetricsPort = "prometheus.metrics.kuma.io/port"
	// MetricsPath overrides the mesh's metrics path for the Pod's proxy.
	MetricsPath = "prometheus.metrics.kuma.io/path"
	// MetricsPrefix starts every metrics annotation; one this package does
	// not know is an error on the Pod, so that a misspelt one is noticed.
	MetricsPrefix = "prometheus.metrics.kuma.io/"
	// AggregatePrefix starts the annotations of an application endpoint
	// merged into the proxy's: aggregate-<name>-port|path|enabled|address.
	AggregatePrefix = MetricsPrefix + "aggregate-"

	// TransparentProxying (enabled/true/yes; set by the injector) says the
	// Pod's traffic is redirected to its proxy: its Dataplane gets
	// networking.transparentProxying and its inbounds the ClusterIP:port of
	// their Service as vips, so that the mesh's transparent proxies route a
	// connection to that address to the Pod's service.
	TransparentProxying = "kuma.io/transparent-proxying"
	// TransparentProxyingInboundPort and TransparentProxyingOutboundPort
	// are the redirect ports (default 15006 and 15001).
	TransparentProxyingInboundPort  = "kuma.io/transparent-proxying-inbound-port"
	TransparentProxyingOutboundPort = "kuma.io/transparent-proxying-outbound-port"

	// ServiceProtocolSuffix, after a Service port number, names the
	// annotation of a Service that sets the protocol of that port
	// (`80.service.kuma.io/protocol: http`) when appProtocol does not.
	ServiceProtocolSuffix = ".service.kuma.io/protocol"
)

// Tags the pod controller puts on every inbound besides the Pod's labels.
const (
	NamespaceTag   = "k8s.kuma.io/namespace"
	ServiceNameTag = "k8s.kuma.io/service-name"
	ServicePortTag = "k8s.kuma.io/service-port"
	// InstanceTag names the Pod on the inbounds of a headless Service.
	InstanceTag = "kuma.io/instance"
)

// DefaultMesh is the mesh of a Pod that names none.
const DefaultMesh = "default"

// Event reasons of the problems reported on a Pod.
const (
	// ReasonInvalidAnnotation: an annotation or label cannot be parsed; the
	// stored Dataplane is left as it is.
	ReasonInvalidAnnotation = "InvalidAnnotation"
	// ReasonInvalidDataplane: the Dataplane computed from the Pod is not
	// valid (e.g. a name too long); the stored Dataplane is left as it is.
	ReasonInvalidDataplane = "InvalidDataplane"
	// ReasonNoService: no Service selects the Pod, so it has no inbound and
	// no Dataplane.
	ReasonNoService = "NoService"
	// ReasonPortConflict: two Service ports lead to the same container
	// port; the first (Services by name) gets the inbound.
	ReasonPortConflict = "PortConflict"
)

// Problem is one reason a Pod cannot be turned into a Dataplane as it is,
// naming the annotation or label at fault and where it is.
type Problem struct {
	// Reason is the Kubernetes Event reason (Reason* constants).
	Reason string
	// Object holds the annotation or label: empty for the Pod itself, else
	// e.g. `Service "backend"` or `Namespace "kuma-example"`.
	Object string
	// Key is the annotation or label; empty when the problem has none.
	Key string
	// Label is true when Key is a label rather than an annotation.
	Label bool
	// Message says what is wrong.
	Message string
}

// Error renders the problem as one line, e.g.
// `annotation "prometheus.metrics.kuma.io/port": "http" is not a port number (1-65535)`.
func (p Problem) Error() string {
	var b strings.Builder
	if p.Key != "" {
		if p.Label {
			b.WriteString("label ")
		} else {
			b.WriteString("annotation ")
		}
		b.WriteString(strconv.Quote(p.Key))
		if p.Object != "" {
			b.WriteString(" of ")
			b.WriteString(p.Object)
		}
		b.WriteString(": ")
	} else if p.Object != "" {
		b.WriteString(p.Object)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// parseEnabled reads a switch as the reference system does.
func parseEnabled(v string) (bool, bool) {
	switch v {
	case "enabled", "true", "yes":
		return true, true
	case "disabled", "false", "no":
		return false, true
	}
	return false, false
}

const enabledValues = "enabled, true, yes, disabled, false or no"

// parsePort reads a port number 1-65535.
func parsePort(v string) (uint32, bool) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return uint32(n), true
}

// transparentFromAnnotations reads the Pod's transparent proxying
// annotations: nil when it is not transparently proxied.
func transparentFromAnnotations(annotations map[string]string, problems *[]Problem) *resource.TransparentProxying {
	bad := func(key, format string, args ...any) {
		*problems = append(*problems, Problem{Reason: ReasonInvalidAnnotation, Key: key, Message: fmt.Sprintf(format, args...)})
	}
	port := func(key string) uint32 {
		v, ok := annotations[key]
		if !ok {
			return 0
		}
		p, ok := parsePort(v)
		if !ok {
			bad(key, "%q is not a port number (1-65535)", v)
		}
		return p
	}
	in, out := port(TransparentProxyingInboundPort), port(TransparentProxyingOutboundPort)
	v, set := annotations[TransparentProxying]
	if !set {
		return nil
	}
	on, ok := parseEnabled(v)
	if !ok {
		bad(TransparentProxying, "%q is not one of %s", v, enabledValues)
		return nil
	}
	if !on {
		return nil
	}
	return &resource.TransparentProxying{RedirectPortInbound: in, RedirectPortOutbound: out}
}

// aggregateFields are the annotations of one aggregate entry.
var aggregateFields = []string{"port", "path", "enabled", "address"}

// metricsFromAnnotations turns the Pod's metrics annotations into the
// Dataplane's metrics override: nil when it has none.
func metricsFromAnnotations(annotations map[string]string, problems *[]Problem) *resource.MetricsBackend {
	bad := func(key, format string, args ...any) {
		*problems = append(*problems, Problem{Reason: ReasonInvalidAnnotation, Key: key, Message: fmt.Sprintf(format, args...)})
	}
	conf := &resource.PrometheusConf{}
	found := false
	aggregates := map[string]map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(annotations)) {
		if !strings.HasPrefix(key, MetricsPrefix) {
			continue
		}
		found = true
		v := annotations[key]
		switch {
		case key == MetricsPort:
			p, ok := parsePort(v)
			if !ok {
				bad(key, "%q is not a port number (1-65535)", v)
				continue
			}
			conf.Port = &p
		case key == MetricsPath:
			if !strings.HasPrefix(v, "/") {
				bad(key, "%q must start with '/'", v)
				continue
			}
			conf.Path = v
		case strings.HasPrefix(key, AggregatePrefix):
			name, field := splitAggregate(key[len(AggregatePrefix):])
			if field == "" {
				bad(key, "unknown annotation; an aggregated application is set by %s<name>-%s", AggregatePrefix, strings.Join(aggregateFields, "|"))
				continue
			}
			if name == "" {
				bad(key, "the application name between %q and %q is empty", AggregatePrefix, "-"+field)
				continue
			}
			if aggregates[name] == nil {
				aggregates[name] = map[string]string{}
			}
			aggregates[name][field] = v
		default:
			bad(key, "unknown annotation; known: %s, %s, %s<name>-%s", MetricsPort, MetricsPath, AggregatePrefix, strings.Join(aggregateFields, "|"))
		}
	}
	if !found {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(aggregates)) {
		if a, ok := aggregateFromAnnotations(name, aggregates[name], bad); ok {
			conf.Aggregate = append(conf.Aggregate, a)
		}
	}
	return &resource.MetricsBackend{Type: resource.MetricsTypePrometheus, Conf: conf}
}

// splitAggregate splits `<name>-<field>` at its last dash; field is empty
// when the suffix is not a known field.
func splitAggregate(s string) (name, field string) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return "", ""
	}
	for _, f := range aggregateFields {
		if s[i+1:] == f {
			return s[:i], f
		}
	}
	return "", ""
}

func aggregateAnnotation(name, field string) string { return AggregatePrefix + name + "-" + field }

func aggregateFromAnnotations(name string, fields map[string]string, bad func(key, format string, args ...any)) (resource.PrometheusAggregate, bool) {
	a := resource.PrometheusAggregate{Name: name}
	ok := true
	enabled := true
	if v, set := fields["enabled"]; set {
		e, valid := parseEnabled(v)
		if !valid {
			bad(aggregateAnnotation(name, "enabled"), "%q is not one of %s", v, enabledValues)
			ok = false
		}
		enabled = e
		a.Enabled = &e
	}
	if v, set := fields["port"]; set {
		p, valid := parsePort(v)
		if !valid {
			bad(aggregateAnnotation(name, "port"), "%q is not a port number (1-65535)", v)
			ok = false
		}
		a.Port = p
	} else if enabled && ok {
		bad(aggregateAnnotation(name, "port"), "missing: the port of application %q is required unless %s is false", name, aggregateAnnotation(name, "enabled"))
		ok = false
	}
	if v, set := fields["path"]; set {
		if !strings.HasPrefix(v, "/") {
			bad(aggregateAnnotation(name, "path"), "%q must start with '/'", v)
			ok = false
		}
		a.Path = v
	}
	if v, set := fields["address"]; set {
		if net.ParseIP(v) == nil {
			bad(aggregateAnnotation(name, "address"), "%q is not an IP address", v)
			ok = false
		}
		a.Address = v
	}
	return a, ok
}
