package cpconfig

// KubernetesRuntime configures what the control plane runs in Kubernetes
// mode only.
type KubernetesRuntime struct {
	AdmissionServer AdmissionServer `json:"admissionServer"`
	Injector        Injector        `json:"injector"`
	// ClientConfig bounds the control plane's requests to the API server.
	ClientConfig KubernetesClientConfig `json:"clientConfig"`
}

// KubernetesClientConfig is the client-side rate limit of every request the
// control plane makes to the Kubernetes API server (store, pod controller,
// ServiceAccount token checks): the reference system's settings and
// defaults. client-go's own defaults (5 per second, bursts of 10) would
// make the Dataplanes of 1000 new Pods take over three minutes.
type KubernetesClientConfig struct {
	// QPS is the sustained rate of requests per second; 0 is client-go's default, 5.
	QPS int `json:"qps"`
	// BurstQPS is how many requests may go at once above that rate; 0 is client-go's default, 10.
	BurstQPS int `json:"burstQps"`
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
