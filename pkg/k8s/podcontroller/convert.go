// Package podcontroller turns the Pods of the mesh into Dataplanes: a pure
// function from a Pod, the Services of its namespace and its Namespace to the
// Pod's Dataplane (Convert), and the controller that keeps the Dataplane
// custom resources in step with Pods, Services and Namespaces, reporting
// annotations it cannot parse as Events on the Pod.
package podcontroller

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Result is what a Pod should have. Exactly one of three cases:
//   - Problems is not empty: the Pod's annotations (or its Services' or
//     Namespace's) cannot be turned into a Dataplane; the stored Dataplane,
//     if any, stays as it is and the problems are reported on the Pod;
//   - Dataplane is set: the Pod's Dataplane, validated and defaulted;
//   - neither: the Pod has no Dataplane (any stored one goes); Skip says why.
//
// Warnings are reported on the Pod in every case.
type Result struct {
	Dataplane *resource.Object
	Skip      string
	Problems  []Problem
	Warnings  []Problem
}

// Reasons a Pod has no Dataplane.
const (
	SkipNotInMesh   = "sidecar injection is not enabled for the Pod or its Namespace"
	SkipTerminating = "the Pod is terminating"
	SkipCompleted   = "the Pod has completed"
	SkipNoIP        = "the Pod has no IP yet"
	SkipNoService   = "no Service selects the Pod"
)

// DataplaneName is the name of a Pod's Dataplane in the control plane's view
// (REST API, MADS target): `<pod>.<namespace>`.
func DataplaneName(pod, namespace string) string { return pod + "." + namespace }

// Convert computes the Dataplane of pod, given the Services of its namespace
// and its Namespace (nil when unknown: then only the Pod's own labels and
// annotations count). It reads nothing else and changes nothing.
//
// A Pod is in the mesh when its annotation kuma.io/sidecar-injected is true,
// or its label or annotation kuma.io/sidecar-injection is enabled, or it has
// neither and its Namespace's label kuma.io/sidecar-injection is enabled. It
// gets a Dataplane once it has an IP, until it terminates or completes, and
// while a Service selects it: address = the Pod's IP, one inbound per TCP port
// of every Service that selects it (Services by name; ExternalName Services,
// Services without a selector and Services annotated kuma.io/ignore left
// out), inbound port = the container port the Service port targets (by
// number, or by name through the Pod's container ports; a name no container
// declares leaves that Service port out).
func Convert(pod *corev1.Pod, services []corev1.Service, ns *corev1.Namespace) Result {
	var r Result
	inMesh, problems := inMesh(pod, ns)
	if len(problems) > 0 {
		r.Problems = problems
		return r
	}
	switch {
	case !inMesh:
		r.Skip = SkipNotInMesh
		return r
	case pod.DeletionTimestamp != nil:
		r.Skip = SkipTerminating
		return r
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		r.Skip = SkipCompleted
		return r
	case pod.Status.PodIP == "":
		r.Skip = SkipNoIP
		return r
	}

	mesh := meshOf(pod, ns, &r.Problems)
	metrics := metricsFromAnnotations(pod.Annotations, &r.Problems)
	transparent := transparentFromAnnotations(pod.Annotations, &r.Problems)
	inbounds := inboundsFor(pod, services, transparent != nil, &r)
	if len(r.Problems) > 0 {
		return r
	}
	if len(inbounds) == 0 {
		r.Skip = SkipNoService
		r.Warnings = append(r.Warnings, Problem{Reason: ReasonNoService,
			Message: "no Service selects this Pod with a TCP port, so it has no inbound and no Dataplane; create a Service for it"})
		return r
	}
	spec := &resource.DataplaneSpec{
		Networking: &resource.Networking{Address: pod.Status.PodIP, Inbound: inbounds, TransparentProxying: transparent},
		Metrics:    metrics,
	}
	obj := resource.New(mesh, DataplaneName(pod.Name, pod.Namespace), spec)
	if err := resource.Validate(obj); err != nil {
		r.Problems = append(r.Problems, Problem{Reason: ReasonInvalidDataplane,
			Message: "the Dataplane made from this Pod is not valid: " + err.Error()})
		return r
	}
	resource.ApplyDefaults(obj)
	r.Dataplane = obj
	return r
}

// inMesh tells whether the Pod should be part of the mesh.
func inMesh(pod *corev1.Pod, ns *corev1.Namespace) (bool, []Problem) {
	var problems []Problem
	bad := func(object, key string, label bool, v string) {
		problems = append(problems, Problem{Reason: ReasonInvalidAnnotation, Object: object, Key: key, Label: label,
			Message: fmt.Sprintf("%q is not one of %s", v, enabledValues)})
	}
	if v, ok := pod.Annotations[SidecarInjected]; ok {
		injected, valid := parseEnabled(v)
		if !valid {
			bad("", SidecarInjected, false, v)
			return false, problems
		}
		if injected {
			return true, nil
		}
	}
	// The Pod's own setting wins over its Namespace's: label, then annotation.
	if v, ok := pod.Labels[SidecarInjection]; ok {
		enabled, valid := parseEnabled(v)
		if !valid {
			bad("", SidecarInjection, true, v)
		}
		return enabled, problems
	}
	if v, ok := pod.Annotations[SidecarInjection]; ok {
		enabled, valid := parseEnabled(v)
		if !valid {
			bad("", SidecarInjection, false, v)
		}
		return enabled, problems
	}
	if ns == nil {
		return false, nil
	}
	if v, ok := ns.Labels[SidecarInjection]; ok {
		enabled, valid := parseEnabled(v)
		if !valid {
			bad(fmt.Sprintf("Namespace %q", ns.Name), SidecarInjection, true, v)
		}
		return enabled, problems
	}
	return false, nil
}

// meshOf picks the Pod's mesh and checks its name.
func meshOf(pod *corev1.Pod, ns *corev1.Namespace, problems *[]Problem) string {
	type source struct {
		m      map[string]string
		object string
		label  bool
	}
	sources := []source{{pod.Labels, "", true}, {pod.Annotations, "", false}}
	if ns != nil {
		object := fmt.Sprintf("Namespace %q", ns.Name)
		sources = append(sources, source{ns.Labels, object, true}, source{ns.Annotations, object, false})
	}
	for _, s := range sources {
		name := s.m[Mesh]
		if name == "" {
			continue
		}
		// The rule for mesh names is the Mesh resource's.
		if err := resource.Validate(resource.New("", name, &resource.MeshSpec{})); err != nil {
			msg := err.Error()
			var verr *resource.ValidationError
			if errors.As(err, &verr) && len(verr.Causes) > 0 {
				msg = verr.Causes[0].Message
			}
			*problems = append(*problems, Problem{Reason: ReasonInvalidAnnotation, Object: s.object, Key: Mesh, Label: s.label,
				Message: fmt.Sprintf("%q is not a mesh name: %s", name, msg)})
		}
		return name
	}
	return DefaultMesh
}

// inboundsFor makes one inbound per TCP port of every Service selecting the
// Pod; with vips, each gets its Service's ClusterIP(s) and port as vips.
func inboundsFor(pod *corev1.Pod, services []corev1.Service, vips bool, r *Result) []resource.Inbound {
	order := make([]int, 0, len(services))
	for i := range services {
		if selects(&services[i], pod, r) {
			order = append(order, i)
		}
	}
	sort.Slice(order, func(a, b int) bool { return services[order[a]].Name < services[order[b]].Name })

	var inbounds []resource.Inbound
	type servicePort struct {
		*corev1.Service
		port int
	}
	taken := map[uint32]servicePort{} // container port → the Service port that has it
	for _, i := range order {
		svc := &services[i]
		for pi := range svc.Spec.Ports {
			sp := &svc.Spec.Ports[pi]
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			port, ok := containerPort(pod, sp)
			if !ok {
				continue
			}
			protocol, ok := protocolOf(svc, sp, &r.Problems)
			if !ok {
				continue
			}
			if first, dup := taken[port]; dup {
				r.Warnings = append(r.Warnings, Problem{Reason: ReasonPortConflict,
					Message: fmt.Sprintf("port %d of Service %q targets container port %d, which port %d of Service %q already has; it gets no inbound",
						sp.Port, svc.Name, port, first.Spec.Ports[first.port].Port, first.Name)})
				continue
			}
			taken[port] = servicePort{svc, pi}
			in := resource.Inbound{Port: port, Tags: inboundTags(pod, svc, sp.Port, protocol)}
			if vips {
				in.VIPs = clusterVIPs(svc, sp.Port)
			}
			inbounds = append(inbounds, in)
		}
	}
	return inbounds
}

// clusterVIPs are the addresses clients reach a Service port at: each of
// its ClusterIPs with the port (none for a headless Service).
func clusterVIPs(svc *corev1.Service, port int32) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue // None (headless), or not an address
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), uint16(port)).String())
	}
	return out
}

// selects tells whether a Service takes part in the Pod's inbounds.
func selects(svc *corev1.Service, pod *corev1.Pod, r *Result) bool {
	if svc.Namespace != "" && svc.Namespace != pod.Namespace {
		return false
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName || len(svc.Spec.Selector) == 0 {
		return false
	}
	for k, v := range svc.Spec.Selector {
		if have, ok := pod.Labels[k]; !ok || have != v {
			return false
		}
	}
	if v, ok := svc.Annotations[Ignore]; ok {
		ignore, valid := parseEnabled(v)
		if !valid {
			r.Problems = append(r.Problems, Problem{Reason: ReasonInvalidAnnotation, Object: fmt.Sprintf("Service %q", svc.Name), Key: Ignore,
				Message: fmt.Sprintf("%q is not one of %s", v, enabledValues)})
			return false
		}
		if ignore {
			return false
		}
	}
	return true
}

// containerPort resolves a Service port's target in the Pod: a number is
// taken as it is (containers need not declare the ports they listen on), a
// name must be a container port of the same protocol.
func containerPort(pod *corev1.Pod, sp *corev1.ServicePort) (uint32, bool) {
	t := sp.TargetPort
	if t.Type == intstr.String && t.StrVal != "" {
		for ci := range pod.Spec.Containers {
			for _, cp := range pod.Spec.Containers[ci].Ports {
				if cp.Name == t.StrVal && sameProtocol(cp.Protocol, sp.Protocol) && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
					return uint32(cp.ContainerPort), true
				}
			}
		}
		return 0, false
	}
	n := t.IntVal
	if t.Type == intstr.String || n == 0 {
		n = sp.Port // the API server's default for an unset targetPort
	}
	if n <= 0 || n > 65535 {
		return 0, false
	}
	return uint32(n), true
}

func sameProtocol(a, b corev1.Protocol) bool {
	if a == "" {
		a = corev1.ProtocolTCP
	}
	if b == "" {
		b = corev1.ProtocolTCP
	}
	return a == b
}

// Protocols the proxies speak, as kuma.io/protocol values.
var protocols = []string{"tcp", "http", "http2", "grpc"}

// protocolOf is the kuma.io/protocol of a Service port: its appProtocol when
// that is a protocol the proxies speak (any case), else the Service's
// annotation <port>.service.kuma.io/protocol, else tcp. An annotation naming
// an unknown protocol is a problem (the reference system would store it and
// leave the port unusable).
func protocolOf(svc *corev1.Service, sp *corev1.ServicePort, problems *[]Problem) (string, bool) {
	if sp.AppProtocol != nil {
		if p := strings.ToLower(*sp.AppProtocol); knownProtocol(p) {
			return p, true
		}
	}
	key := strconv.Itoa(int(sp.Port)) + ServiceProtocolSuffix
	if v := svc.Annotations[key]; v != "" {
		if p := strings.ToLower(v); knownProtocol(p) {
			return p, true
		}
		*problems = append(*problems, Problem{Reason: ReasonInvalidAnnotation, Object: fmt.Sprintf("Service %q", svc.Name), Key: key,
			Message: fmt.Sprintf("unknown protocol %q; available protocols: %s", v, strings.Join(protocols, ", "))})
		return "", false
	}
	return "tcp", true
}

func knownProtocol(p string) bool {
	for _, k := range protocols {
		if p == k {
			return true
		}
	}
	return false
}

// inboundTags are the Pod's labels (those with a value and outside the
// kuma.io/ domain, as the reference system copies them), then the tags that
// say which Service port the inbound serves.
func inboundTags(pod *corev1.Pod, svc *corev1.Service, port int32, protocol string) map[string]string {
	tags := make(map[string]string, len(pod.Labels)+6)
	for k, v := range pod.Labels {
		if v == "" || strings.Contains(k, "kuma.io/") {
			continue
		}
		tags[k] = v
	}
	p := strconv.Itoa(int(port))
	tags[resource.ServiceTag] = svc.Name + "_" + pod.Namespace + "_svc_" + p
	tags[NamespaceTag] = pod.Namespace
	tags[ServiceNameTag] = svc.Name
	tags[ServicePortTag] = p
	tags[resource.ProtocolTag] = protocol
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		tags[InstanceTag] = pod.Name
	}
	return tags
}
