package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/k8s/injector"

	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/webhook"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
)

// AdmissionServingFiles are the files of the admission server's generated
// certificate in the work directory, when
// runtime.kubernetes.admissionServer.certDir is unset (a control plane
// outside the cluster): the CA (admission-server-ca.pem) is the caBundle of
// a webhook configuration that registers the control plane by URL.
var AdmissionServingFiles = pki.ServingFiles{
	Server:       "admission server",
	CACommonName: "kuma-admission-server-ca",
	CACert:       "admission-server-ca.pem",
	CAKey:        "admission-server-ca.key",
	Cert:         "admission-server.pem",
	Key:          "admission-server.key",
}

// startKubernetesAdmission starts the admission server of Kubernetes mode:
// new resources' meshes are read from the API server k reaches.
func (cp *ControlPlane) startKubernetesAdmission(k *kubernetesMode) error {
	scheme, err := kubernetes.Scheme()
	if err != nil {
		return fmt.Errorf("admission server: scheme: %w", err)
	}
	c, err := client.New(k.config, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("admission server: client for %s: %w", k.config.Host, err)
	}
	meshes := webhook.APIMeshes{Reader: c}
	settings, err := injectorSettings(cp.cfg)
	if err != nil {
		return err
	}
	inj := &injector.Injector{Settings: settings, CACertFile: cp.cfg.InjectorCACertFile(), Namespaces: c, Meshes: meshes}
	return cp.startAdmissionServer(meshes, cp.cfg.Store.Kubernetes.SystemNamespace, inj)
}

// injectorSettings are the sidecar injector's settings of cfg (but the CA,
// which the injector reads from its file).
func injectorSettings(cfg cpconfig.Config) (injector.Settings, error) {
	c := cfg.Runtime.Kubernetes.Injector
	res, err := c.SidecarContainer.Resources.Requirements()
	if err != nil {
		return injector.Settings{}, err
	}
	return injector.Settings{
		SidecarImage: c.SidecarContainer.Image, InitImage: c.InitImage(),
		ControlPlaneAddress: cfg.InjectorControlPlaneAddress(),
		UID:                 c.SidecarContainer.UID,
		Resources:           res,
	}, nil
}

// startAdmissionServer binds the admission webhooks' HTTPS server
// (runtime.kubernetes.admissionServer): the validating webhook at
// webhook.Path and, when inj is not nil, the sidecar injector at
// injector.Path. It serves at once, not
// from Run: in Kubernetes mode the API server calls it for writes of kuma.io
// resources, and the control plane's own first writes (the default mesh)
// may be among them. Its listener is "admission-server" in Addrs; it stops
// with the control plane's tasks, or when New fails (close closes the
// listener). meshes is where the mesh of a new resource is looked up
// (webhook.APIMeshes over a client that reads the API server, not a
// cache); systemNamespace is the control plane's namespace.
func (cp *ControlPlane) startAdmissionServer(meshes webhook.MeshReader, systemNamespace string, inj *injector.Injector) error {
	cfg := cp.cfg.Runtime.Kubernetes.AdmissionServer
	var tlsConfig *tls.Config
	if cfg.CertDir != "" {
		var err error
		if tlsConfig, err = webhook.CertDirTLS(cfg.CertDir); err != nil {
			return fmt.Errorf("runtime.kubernetes.admissionServer.certDir (KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR): %w", err)
		}
	} else {
		cert, err := pki.ServingCertificate(cp.cfg.General.WorkDir, AdmissionServingFiles, "", "", time.Now(), net.ParseIP(cfg.Address))
		if err != nil {
			return err
		}
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", cfg.ListenAddress())
	if err != nil {
		return fmt.Errorf("admission server: listen on %s: %w", cfg.ListenAddress(), err)
	}
	cp.listeners["admission-server"] = ln
	log := cp.log.With("component", "admission-server")
	v := &webhook.Validator{Names: v1alpha1.Names{SystemNamespace: systemNamespace}, Meshes: meshes}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, webhook.Serve(v, log))
	if inj != nil {
		mux.Handle(injector.Path, webhook.Serve(inj, log))
	}
	srv := netserve.HTTPServer(mux, cp.cfg.ServerLimits.HTTP.Limits(), log)
	srv.TLSConfig = tlsConfig
	accepting := netserve.Listen(ln, netserve.AcceptOptions{Name: "admission-server", Log: log, Errors: cp.acceptErrors.WithLabelValues("admission-server")})
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(accepting, "", "") }()
	cp.tasks = append(cp.tasks, task{"admission-server", func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("server shutdown", "err", err)
			}
			return nil
		case err := <-served:
			if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}})
	return nil
}
