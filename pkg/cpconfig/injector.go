package cpconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	k8sresource "k8s.io/apimachinery/pkg/api/resource"

	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/version"
)

// Injector configures the sidecar injector (Kubernetes mode): what the
// mutating admission webhook adds to a Pod of the mesh.
type Injector struct {
	SidecarContainer SidecarContainer `json:"sidecarContainer"`
	InitContainer    InitContainer    `json:"initContainer"`
	// ControlPlaneAddress is the dataplane server as the injected kuma-dp
	// dials it (its --cp-address). Empty: the control plane's Service in
	// its namespace, https://kuma-control-plane.<systemNamespace>:5678.
	ControlPlaneAddress string `json:"controlPlaneAddress"`
	// CACertFile is the PEM CA that verifies the dataplane server, given to
	// every injected kuma-dp. Empty: the dataplane server's generated CA
	// (<workDir>/dp-server-ca.pem); required when dpServer.tlsCertFile is set.
	CACertFile string `json:"caCertFile"`
}

// SidecarContainer is the injected kuma-dp container.
type SidecarContainer struct {
	Image string `json:"image"`
	// UID (and GID) the proxy runs as: the transparent proxy's iptables
	// rules let this user's traffic pass uncaptured.
	UID       int64            `json:"uid"`
	Resources SidecarResources `json:"resources"`
}

// SidecarResources are the proxy container's requests and limits
// (Kubernetes quantities).
type SidecarResources struct {
	Requests ResourceList `json:"requests"`
	Limits   ResourceList `json:"limits"`
}

// ResourceList is a CPU and a memory quantity, e.g. 50m and 64Mi.
type ResourceList struct {
	CPU    string `json:"cpu"`
	Memory string `json:"memory"`
}

// InitContainer is the injected kuma-init container, which installs the
// transparent proxy's iptables rules.
type InitContainer struct {
	// Image: empty is the sidecar container's image.
	Image string `json:"image"`
}

// Defaults of the injector (the reference system's).
const (
	DefaultSidecarImageRepository = "kumahq/kuma-dp"
	DefaultSidecarUID             = 5678
	// ControlPlaneServiceName is the Service kumactl install control-plane
	// gives the control plane.
	ControlPlaneServiceName = "kuma-control-plane"
	// DefaultDPServerServicePort is the dataplane server's port on that Service.
	DefaultDPServerServicePort = 5678
)

// DefaultInjector returns the injector's defaults for this build.
func DefaultInjector() Injector {
	return Injector{
		SidecarContainer: SidecarContainer{
			Image: DefaultSidecarImageRepository + ":" + version.Version,
			UID:   DefaultSidecarUID,
			Resources: SidecarResources{
				Requests: ResourceList{CPU: "50m", Memory: "64Mi"},
				Limits:   ResourceList{CPU: "1000m", Memory: "512Mi"},
			},
		},
	}
}

// InjectorControlPlaneAddress is the --cp-address of injected proxies.
func (c Config) InjectorControlPlaneAddress() string {
	if a := c.Runtime.Kubernetes.Injector.ControlPlaneAddress; a != "" {
		return a
	}
	return "https://" + net.JoinHostPort(ControlPlaneServiceName+"."+c.Store.Kubernetes.SystemNamespace, strconv.Itoa(DefaultDPServerServicePort))
}

// InjectorCACertFile is the CA file given to injected proxies.
func (c Config) InjectorCACertFile() string {
	if f := c.Runtime.Kubernetes.Injector.CACertFile; f != "" {
		return f
	}
	return filepath.Join(c.General.WorkDir, dpconfig.ServerCAFile)
}

// Requirements are the sidecar's requests and limits as Kubernetes takes
// them: a list without a quantity is nil. It fails, naming the setting, on
// a quantity validation refuses.
func (r SidecarResources) Requirements() (corev1.ResourceRequirements, error) {
	res, errs := r.requirements()
	if len(errs) > 0 {
		return corev1.ResourceRequirements{}, errors.New(strings.Join(errs, "; "))
	}
	return res, nil
}

// requirements parses the quantities, with an error for each one that is
// not a non-negative Kubernetes quantity.
func (r SidecarResources) requirements() (corev1.ResourceRequirements, []string) {
	var out corev1.ResourceRequirements
	var errs []string
	for _, q := range []struct {
		key, env string
		list     *corev1.ResourceList
		name     corev1.ResourceName
		v        string
	}{
		{"requests.cpu", "REQUESTS_CPU", &out.Requests, corev1.ResourceCPU, r.Requests.CPU},
		{"requests.memory", "REQUESTS_MEMORY", &out.Requests, corev1.ResourceMemory, r.Requests.Memory},
		{"limits.cpu", "LIMITS_CPU", &out.Limits, corev1.ResourceCPU, r.Limits.CPU},
		{"limits.memory", "LIMITS_MEMORY", &out.Limits, corev1.ResourceMemory, r.Limits.Memory},
	} {
		if q.v == "" {
			continue // no request or limit of that resource
		}
		v, err := k8sresource.ParseQuantity(q.v)
		if err != nil || v.Sign() < 0 {
			errs = append(errs, fmt.Sprintf("runtime.kubernetes.injector.sidecarContainer.resources.%s (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_%s): must be a non-negative Kubernetes quantity such as 50m or 64Mi, got %q",
				q.key, q.env, q.v))
			continue
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	return out, errs
}

// InitImage is the init container's image.
func (i Injector) InitImage() string {
	if i.InitContainer.Image != "" {
		return i.InitContainer.Image
	}
	return i.SidecarContainer.Image
}

// validate checks the injector's settings, naming each one at fault.
func (c Config) validateInjector() []string {
	var errs []string
	inj := c.Runtime.Kubernetes.Injector
	if inj.SidecarContainer.Image == "" {
		errs = append(errs, "runtime.kubernetes.injector.sidecarContainer.image (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE): must not be empty")
	}
	if uid := inj.SidecarContainer.UID; uid < 1 || uid > 2147483647 {
		errs = append(errs, fmt.Sprintf("runtime.kubernetes.injector.sidecarContainer.uid (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID): must be a user id from 1 to 2147483647 (not root: its traffic passes the transparent proxy uncaptured), got %d", uid))
	}
	res, resErrs := inj.SidecarContainer.Resources.requirements()
	errs = append(errs, resErrs...)
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okR := res.Requests[r]
		lim, okL := res.Limits[r]
		if okR && okL && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Sprintf("runtime.kubernetes.injector.sidecarContainer.resources.requests.%s: must not exceed limits.%s (%s), got %s", r, r, lim.String(), req.String()))
		}
	}
	if a := inj.ControlPlaneAddress; a != "" {
		u, err := url.Parse(a)
		if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			errs = append(errs, fmt.Sprintf("runtime.kubernetes.injector.controlPlaneAddress (KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS): must be https://host:port, got %q", a))
		}
	}
	if c.Kubernetes() && inj.CACertFile == "" && c.DPServer.TLSCertFile != "" {
		errs = append(errs, "runtime.kubernetes.injector.caCertFile (KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE): must name the CA of dpServer.tlsCertFile "+
			"(KUMA_DP_SERVER_TLS_CERT_FILE), which injected proxies verify the control plane with")
	}
	return errs
}
