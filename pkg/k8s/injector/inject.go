// Package injector is the control plane's sidecar injector on Kubernetes:
// a mutating admission webhook that gives every Pod of the mesh, as it is
// created, the kuma-dp container (kuma-sidecar), the init container that
// installs the transparent proxy (kuma-init), the volume holding the
// proxy's ServiceAccount token and the control plane's CA, and the
// annotations that mark it. Inject is the mutation, a pure function of the
// Pod, its Namespace, its Mesh and the Settings; Patch renders it as the
// JSON patch the API server applies; Injector answers admission requests
// (served by the control plane's admission server at Path, through
// webhook.Serve).
package injector

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Path is where the admission server serves the injector.
const Path = "/inject-sidecar"

// Annotations the injector sets or reads (the reference system's names,
// except ControlPlaneCACert, which is this project's).
const (
	// SidecarInjected marks an injected Pod ("true").
	SidecarInjected = podcontroller.SidecarInjected
	// TransparentProxying is "enabled" on an injected Pod: its traffic is
	// captured by iptables rules and reaches the proxy at the redirect ports.
	TransparentProxying = podcontroller.TransparentProxying
	// TransparentProxyingInboundPort and TransparentProxyingOutboundPort are
	// the redirect ports the rules send traffic to.
	TransparentProxyingInboundPort  = podcontroller.TransparentProxyingInboundPort
	TransparentProxyingOutboundPort = podcontroller.TransparentProxyingOutboundPort
	// ExcludeInboundPorts and ExcludeOutboundPorts (comma-separated port
	// numbers) are left out of the capture, besides the metrics port.
	ExcludeInboundPorts  = "traffic.kuma.io/exclude-inbound-ports"
	ExcludeOutboundPorts = "traffic.kuma.io/exclude-outbound-ports"
	// ControlPlaneCACert holds the PEM CA that verifies the control plane's
	// dataplane server; the proxy reads it as a file of its volume (the
	// downward API), so no object outside the Pod is needed.
	ControlPlaneCACert = "kuma.io/control-plane-ca-cert"
)

// What the injector adds.
const (
	SidecarName = "kuma-sidecar"
	InitName    = "kuma-init"
	// VolumeName is a projected volume: the ServiceAccount token (TokenFile)
	// and the control plane's CA (CAFile), mounted read-only at MountPath in
	// the sidecar.
	VolumeName = "kuma-sidecar"
	MountPath  = "/var/run/secrets/kuma.io/sidecar"
	TokenFile  = "token"
	CAFile     = "ca.crt"
	// TokenExpirationSeconds is the lifetime of the projected token; the
	// kubelet renews it at 80% and kuma-dp re-reads the file.
	TokenExpirationSeconds = 3600
	// RedirectInboundPort and RedirectOutboundPort are the transparent
	// proxy's ports (the reference system's).
	RedirectInboundPort  = resource.DefaultRedirectPortInbound
	RedirectOutboundPort = resource.DefaultRedirectPortOutbound
	// DefaultServiceAccount is the ServiceAccount of a Pod that names none.
	DefaultServiceAccount = "default"
	// TransparentProxyCommand is the init container's command.
	TransparentProxyCommand = "kumactl"
)

// Settings are the control plane's choices for every injected Pod.
type Settings struct {
	SidecarImage, InitImage string
	// ControlPlaneAddress is kuma-dp's --cp-address.
	ControlPlaneAddress string
	// CACert (PEM) verifies the control plane's dataplane server.
	CACert []byte
	// UID is the user (and group) kuma-dp runs as; the transparent proxy
	// lets its traffic pass uncaptured.
	UID int64
	// Resources of the sidecar container.
	Resources corev1.ResourceRequirements
}

// Input is what a Pod's injection depends on.
type Input struct {
	Pod *corev1.Pod
	// Namespace is the Pod's namespace: the admission request's (a Pod
	// being created need not carry it).
	Namespace string
	// NamespaceObject is the Pod's Namespace; nil when unknown.
	NamespaceObject *corev1.Namespace
	// Mesh is the spec of the Pod's mesh (MeshName), nil when it does not
	// exist (yet): its metrics port is excluded from the capture.
	Mesh *resource.MeshSpec
}

// Result of Inject: exactly one of Pod (injected), Skip (left alone) and
// Problems (refused) is set.
type Result struct {
	Pod      *corev1.Pod
	Skip     string
	Problems []podcontroller.Problem
}

// Reasons a Pod is left as it is.
const (
	SkipNotInMesh       = "sidecar injection is not enabled for the Pod or its Namespace"
	SkipAlreadyInjected = "the Pod is already injected"
)

// MeshName is the mesh inp's Pod joins (see podcontroller.MeshOf).
func MeshName(inp Input) string {
	m, _ := podcontroller.MeshOf(inp.Pod, inp.NamespaceObject)
	return m
}

// Inject computes the injected Pod. It changes nothing of its input.
//
// A Pod is injected when it is in the mesh as the pod controller sees it
// (podcontroller.InMesh: its label or annotation kuma.io/sidecar-injection,
// else its Namespace's label) and not injected already (annotation
// kuma.io/sidecar-injected true, or a container kuma-sidecar): injecting
// twice returns the Pod unchanged. An annotation the injector or the pod
// controller cannot parse refuses the Pod, naming it.
func Inject(inp Input, s Settings) Result {
	pod := inp.Pod
	if v, ok := pod.Annotations[SidecarInjected]; ok && v == "true" || hasContainer(pod.Spec.Containers, SidecarName) {
		return Result{Skip: SkipAlreadyInjected}
	}
	in, problems := podcontroller.InMesh(pod, inp.NamespaceObject)
	if len(problems) > 0 {
		return Result{Problems: problems}
	}
	if !in {
		return Result{Skip: SkipNotInMesh}
	}
	mesh, meshProblems := podcontroller.MeshOf(pod, inp.NamespaceObject)
	problems = append(problems, meshProblems...)
	override, metricsProblems := podcontroller.MetricsOverride(pod.Annotations)
	problems = append(problems, metricsProblems...)
	excludeIn := portList(pod.Annotations, ExcludeInboundPorts, &problems)
	excludeOut := portList(pod.Annotations, ExcludeOutboundPorts, &problems)
	for _, clash := range []struct {
		name, kind string
		found      bool
	}{
		{InitName, "init container", hasContainer(pod.Spec.InitContainers, InitName)},
		{VolumeName, "volume", hasVolume(pod.Spec.Volumes, VolumeName)},
	} {
		if clash.found {
			problems = append(problems, podcontroller.Problem{Reason: podcontroller.ReasonInvalidAnnotation,
				Message: fmt.Sprintf("the Pod has a %s named %s, the injector's own, but no %s container: remove it or opt out with %s: disabled",
					clash.kind, clash.name, SidecarName, podcontroller.SidecarInjection)})
		}
	}
	if len(problems) > 0 {
		return Result{Problems: problems}
	}

	// The metrics endpoint is reached directly on its port, never through
	// the inbound redirect: the proxy serves it itself (with mTLS when the
	// mesh has it).
	metricsPort := resource.DefaultMetricsPort
	if e := resource.EffectiveMetricsConfig(inp.Mesh, &resource.DataplaneSpec{Metrics: override}); e != nil {
		metricsPort = e.Port
	} else if override != nil && override.Conf != nil && override.Conf.Port != nil {
		metricsPort = *override.Conf.Port
	}
	excludeIn = sortedPorts(append(excludeIn, metricsPort))

	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for k, v := range injectedAnnotations(s) {
		out.Annotations[k] = v
	}
	out.Spec.InitContainers = append(out.Spec.InitContainers, initContainer(s, excludeIn, excludeOut))
	out.Spec.Containers = append(out.Spec.Containers, sidecarContainer(s, pod.Name, inp.Namespace, mesh))
	out.Spec.Volumes = append(out.Spec.Volumes, volume())
	if out.Spec.ServiceAccountName == "" {
		// A projected token needs a ServiceAccount; the API server's
		// ServiceAccount admission plugin, which runs before webhooks, sets
		// this default already where it is on.
		out.Spec.ServiceAccountName = DefaultServiceAccount
	}
	return Result{Pod: out}
}

// injectedAnnotations are the annotations an injected Pod carries.
func injectedAnnotations(s Settings) map[string]string {
	return map[string]string{
		SidecarInjected:                 "true",
		TransparentProxying:             "enabled",
		TransparentProxyingInboundPort:  strconv.Itoa(int(RedirectInboundPort)),
		TransparentProxyingOutboundPort: strconv.Itoa(int(RedirectOutboundPort)),
		ControlPlaneCACert:              string(s.CACert),
	}
}

// Downward API environment of the sidecar when the Pod's name is not known
// at admission (generateName: the API server names it after the webhooks).
const (
	envPodName      = "POD_NAME"
	envPodNamespace = "POD_NAMESPACE"
	// envDataplaneName is kuma-dp's KUMA_DATAPLANE_NAME.
	envDataplaneName = "KUMA_DATAPLANE_NAME"
)

func sidecarContainer(s Settings, pod, namespace, mesh string) corev1.Container {
	args := []string{"run", "--cp-address", s.ControlPlaneAddress}
	var env []corev1.EnvVar
	if pod != "" {
		args = append(args, "--name", podcontroller.DataplaneName(pod, namespace))
	} else {
		env = []corev1.EnvVar{
			{Name: envPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			{Name: envPodNamespace, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}},
			{Name: envDataplaneName, Value: podcontroller.DataplaneName("$("+envPodName+")", "$("+envPodNamespace+")")},
		}
	}
	args = append(args, "--mesh", mesh,
		"--ca-cert-file", MountPath+"/"+CAFile,
		"--dataplane-token-file", MountPath+"/"+TokenFile)
	return corev1.Container{
		Name:      SidecarName,
		Image:     s.SidecarImage,
		Args:      args,
		Env:       env,
		Resources: *s.Resources.DeepCopy(),
		VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeName, MountPath: MountPath, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(s.UID),
			RunAsGroup:               ptr(s.UID),
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

func initContainer(s Settings, excludeIn, excludeOut []uint32) corev1.Container {
	args := []string{"install", "transparent-proxy",
		"--redirect-inbound-port", strconv.Itoa(int(RedirectInboundPort)),
		"--redirect-outbound-port", strconv.Itoa(int(RedirectOutboundPort)),
		"--kuma-dp-uid", strconv.FormatInt(s.UID, 10),
		"--exclude-inbound-ports", joinPorts(excludeIn),
	}
	if len(excludeOut) > 0 {
		args = append(args, "--exclude-outbound-ports", joinPorts(excludeOut))
	}
	return corev1.Container{
		Name:    InitName,
		Image:   s.InitImage,
		Command: []string{TransparentProxyCommand},
		Args:    args,
		// iptables needs root with NET_ADMIN and NET_RAW in the Pod's
		// network namespace, and nothing else.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsGroup:               ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}
}

func volume() corev1.Volume {
	return corev1.Volume{Name: VolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			// The API server's own audience: the token the control plane
			// reviews (pkg/k8s/dpauth), bound to this Pod.
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: TokenFile, ExpirationSeconds: ptr(int64(TokenExpirationSeconds))}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path:     CAFile,
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.annotations['" + ControlPlaneCACert + "']"},
			}}}},
		},
	}}}
}

// portList reads a comma-separated list of port numbers.
func portList(annotations map[string]string, key string, problems *[]podcontroller.Problem) []uint32 {
	v, ok := annotations[key]
	if !ok {
		return nil
	}
	var out []uint32
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			*problems = append(*problems, podcontroller.Problem{Reason: podcontroller.ReasonInvalidAnnotation, Key: key,
				Message: fmt.Sprintf("%q is not a comma-separated list of port numbers (1-65535): %q", v, f)})
			return nil
		}
		out = append(out, uint32(n))
	}
	return out
}

func sortedPorts(ps []uint32) []uint32 {
	slices.Sort(ps)
	return slices.Compact(ps)
}

func joinPorts(ps []uint32) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(s, ",")
}

func hasContainer(cs []corev1.Container, name string) bool {
	return slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == name })
}

func hasVolume(vs []corev1.Volume, name string) bool {
	return slices.ContainsFunc(vs, func(v corev1.Volume) bool { return v.Name == name })
}

func ptr[T any](v T) *T { return &v }
