package cpconfig

// KubernetesRuntime configures what the control plane runs in Kubernetes
// mode only.
type KubernetesRuntime struct {
	AdmissionServer AdmissionServer `json:"admissionServer"`
	Injector        Injector        `json:"injector"`
}

// AdmissionServer is the HTTPS server of the admission webhook that the
// Kubernetes API server calls for every write of a kuma.io resource.
type AdmissionServer struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// CertDir holds tls.crt and tls.key (a kubernetes.io/tls Secret
	// mounted as a volume), read at every handshake. Empty: a certificate
	// generated in the work directory, signed by a CA kept there.
	CertDir string `json:"certDir"`
}

// ListenAddress renders host:port.
func (a AdmissionServer) ListenAddress() string { return joinHostPort(a.Address, a.Port) }
