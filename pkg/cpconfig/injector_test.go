package cpconfig

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/version"
)

func TestInjectorDefaults(t *testing.T) {
	c, err := Load("", env(map[string]string{"KUMA_ENVIRONMENT": "kubernetes"}))
	require.NoError(t, err)
	inj := c.Runtime.Kubernetes.Injector
	// The reference system's defaults.
	require.Equal(t, "kumahq/kuma-dp:"+version.Version, inj.SidecarContainer.Image)
	require.Equal(t, inj.SidecarContainer.Image, inj.InitImage(), "the init container runs the sidecar's image")
	require.EqualValues(t, 5678, inj.SidecarContainer.UID)
	require.Equal(t, SidecarResources{Requests: ResourceList{CPU: "50m", Memory: "64Mi"}, Limits: ResourceList{CPU: "1000m", Memory: "512Mi"}}, inj.SidecarContainer.Resources)
	require.Equal(t, "https://kuma-control-plane.kuma-system:5678", c.InjectorControlPlaneAddress())
	require.Equal(t, filepath.Join("kuma-data", "dp-server-ca.pem"), c.InjectorCACertFile())

	c, err = Load("", env(map[string]string{"KUMA_ENVIRONMENT": "kubernetes", "KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE": "mesh-system"}))
	require.NoError(t, err)
	require.Equal(t, "https://kuma-control-plane.mesh-system:5678", c.InjectorControlPlaneAddress(), "the Service in the control plane's namespace")
}

func TestInjectorSettings(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"KUMA_ENVIRONMENT": "kubernetes",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE":                     "registry.local/kuma-dp:1.2.3",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID":                       "1234",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_CPU":    "100m",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_MEMORY": "128Mi",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_CPU":      "2",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_MEMORY":   "1Gi",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_INIT_CONTAINER_IMAGE":                        "registry.local/kuma-init:1.2.3",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS":                       "https://cp.example:15678",
		"KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE":                                "/certs/ca.crt",
		"KUMA_DP_SERVER_TLS_CERT_FILE":                                                 "/certs/tls.crt",
		"KUMA_DP_SERVER_TLS_KEY_FILE":                                                  "/certs/tls.key",
	}))
	require.NoError(t, err)
	require.Equal(t, Injector{
		SidecarContainer: SidecarContainer{Image: "registry.local/kuma-dp:1.2.3", UID: 1234,
			Resources: SidecarResources{Requests: ResourceList{CPU: "100m", Memory: "128Mi"}, Limits: ResourceList{CPU: "2", Memory: "1Gi"}}},
		InitContainer:       InitContainer{Image: "registry.local/kuma-init:1.2.3"},
		ControlPlaneAddress: "https://cp.example:15678",
		CACertFile:          "/certs/ca.crt",
	}, c.Runtime.Kubernetes.Injector)
	require.Equal(t, "registry.local/kuma-init:1.2.3", c.Runtime.Kubernetes.Injector.InitImage())
	require.Equal(t, "https://cp.example:15678", c.InjectorControlPlaneAddress())
	require.Equal(t, "/certs/ca.crt", c.InjectorCACertFile())

	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte(`runtime:
  kubernetes:
    injector:
      sidecarContainer:
        image: kuma-dp:file
        resources:
          limits:
            cpu: ""
      initContainer:
        image: kuma-init:file
`), 0o600))
	c, err = Load(f, env(nil))
	require.NoError(t, err)
	require.Equal(t, "kuma-dp:file", c.Runtime.Kubernetes.Injector.SidecarContainer.Image)
	require.Equal(t, "kuma-init:file", c.Runtime.Kubernetes.Injector.InitImage())
	require.Equal(t, ResourceList{Memory: "512Mi"}, c.Runtime.Kubernetes.Injector.SidecarContainer.Resources.Limits, "an empty quantity sets no limit")
}

func TestInjectorValidation(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE": ""},
			"runtime.kubernetes.injector.sidecarContainer.image (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_IMAGE): must not be empty"},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID": "0"},
			"runtime.kubernetes.injector.sidecarContainer.uid (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID): must be a user id from 1"},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID": "kuma"},
			`KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_UID: must be a user id, got "kuma"`},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_CPU": "lots"},
			`runtime.kubernetes.injector.sidecarContainer.resources.requests.cpu (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_CPU): must be a non-negative Kubernetes quantity such as 50m or 64Mi, got "lots"`},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_MEMORY": "-1Gi"},
			`runtime.kubernetes.injector.sidecarContainer.resources.limits.memory (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_MEMORY): must be a non-negative`},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_REQUESTS_MEMORY": "1Gi"},
			"runtime.kubernetes.injector.sidecarContainer.resources.requests.memory: must not exceed limits.memory (512Mi), got 1Gi"},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS": "grpc://cp:5678"},
			`runtime.kubernetes.injector.controlPlaneAddress (KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS): must be https://host:port, got "grpc://cp:5678"`},
		{map[string]string{"KUMA_RUNTIME_KUBERNETES_INJECTOR_CONTROL_PLANE_ADDRESS": "https://cp"},
			"must be https://host:port"},
		{map[string]string{"KUMA_ENVIRONMENT": "kubernetes", "KUMA_DP_SERVER_TLS_CERT_FILE": "/c/tls.crt", "KUMA_DP_SERVER_TLS_KEY_FILE": "/c/tls.key"},
			"runtime.kubernetes.injector.caCertFile (KUMA_RUNTIME_KUBERNETES_INJECTOR_CA_CERT_FILE): must name the CA of dpServer.tlsCertFile"},
	} {
		_, err := Load("", env(tc.env))
		require.ErrorContains(t, err, tc.want, "%v", tc.env)
	}
	// Universal mode injects nothing: a provided dataplane server
	// certificate needs no injector CA there.
	_, err := Load("", env(map[string]string{"KUMA_DP_SERVER_TLS_CERT_FILE": "/c/tls.crt", "KUMA_DP_SERVER_TLS_KEY_FILE": "/c/tls.key"}))
	require.NoError(t, err)
}

// TestSidecarRequirements: the configured quantities are the sidecar's
// Kubernetes requests and limits; an unset list is none, a bad quantity
// an error naming its setting.
func TestSidecarRequirements(t *testing.T) {
	res, err := DefaultInjector().SidecarContainer.Resources.Requirements()
	require.NoError(t, err)
	require.Equal(t, "50m", res.Requests.Cpu().String())
	require.Equal(t, "64Mi", res.Requests.Memory().String())
	require.Equal(t, "1", res.Limits.Cpu().String())
	require.Equal(t, "512Mi", res.Limits.Memory().String())

	res, err = SidecarResources{Requests: ResourceList{Memory: "32Mi"}}.Requirements()
	require.NoError(t, err)
	require.Len(t, res.Requests, 1)
	require.Nil(t, res.Limits)

	_, err = SidecarResources{Limits: ResourceList{CPU: "-1"}}.Requirements()
	require.ErrorContains(t, err, `runtime.kubernetes.injector.sidecarContainer.resources.limits.cpu (KUMA_RUNTIME_KUBERNETES_INJECTOR_SIDECAR_CONTAINER_RESOURCES_LIMITS_CPU): must be a non-negative Kubernetes quantity such as 50m or 64Mi, got "-1"`)
}
