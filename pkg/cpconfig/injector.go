package cpconfig

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"

	k8sresource "k8s.io/apimachinery/pkg/api/resource"

	"github.com/kumametrics/mesh/pkg/dpserver"
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
	return filepath.Join(c.General.WorkDir, dpserver.CAFile)
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
	quantities := []struct{ key, env, v string }{
		{"requests.cpu", "REQUESTS_CPU", inj.SidecarContainer.Resources.Requests.CPU},
		{"requests.memory", "REQUESTS_MEMORY", inj.SidecarContainer.Resources.Requests.Memory},
		{"limits.cpu", "LIMITS_CPU", inj.SidecarContainer.Resources.Limits.CPU},
		{"limits.memory", "LIMITS_MEMORY", inj.SidecarContainer.Resources.Limits.Memory},
	}
	parsed := map[string]k8sresource.Quantity{}
	for _, q := range quantities {
		if q.v == "" {
			continue // no request or limit of that resource
		}
		v, err := k8sresource.ParseQuantity(q.v)
		if err != nil || v.Sign() < 0 {
			errs = append(errs, fmt.Sprintf("runtime.kubernetes.injector.sidecarContainer.resources.%s (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_%s): must be a non-negative Kubernetes quantity such as 50m or 64Mi, got %q",
				q.key, q.env, q.v))
			continue
		}
		parsed[q.key] = v
	}
	for _, r := range []string{"cpu", "memory"} {
		req, okR := parsed["requests."+r]
		lim, okL := parsed["limits."+r]
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
