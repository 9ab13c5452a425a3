package controlplane

import (
	"context"
	"fmt"
	"log/slog"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/k8s/api/v1alpha1"
	"github.com/kumametrics/mesh/pkg/k8s/dpauth"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
)

// Kubernetes mode (environment: kubernetes): the store is the Kubernetes
// API, and the parts only this mode has join the control plane here.
// Everything else (mirror, MADS, the dataplane server, the CA manager, the
// insights recorder) is the same as in Universal mode.

// kubernetesMode is what Kubernetes mode adds to a control plane.
type kubernetesMode struct {
	// config reaches the API server the store uses.
	config *rest.Config
	store  *kubernetes.Store
}

// KubeConfig returns the configuration of the API server kuma-cp works on:
// the current context of KUBECONFIG (or ~/.kube/config), or, without one,
// the cluster's own when kuma-cp runs in a Pod; its requests limited as
// client says.
func KubeConfig(client cpconfig.KubernetesClientConfig) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("Kubernetes API server: no usable kubeconfig (KUBECONFIG, ~/.kube/config) and not running in a Pod: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(client.QPS), client.BurstQPS
	return cfg, nil
}

// openKubernetes connects the Kubernetes store.
func openKubernetes(ctx context.Context, cfg cpconfig.Config, log *slog.Logger) (*kubernetesMode, error) {
	rc, err := KubeConfig(cfg.Runtime.Kubernetes.ClientConfig)
	if err != nil {
		return nil, err
	}
	s, err := kubernetes.New(ctx, rc, kubernetes.Options{
		SystemNamespace: cfg.Store.Kubernetes.SystemNamespace, Log: log.With("component", "kubernetes-store"),
	})
	if err != nil {
		return nil, fmt.Errorf("open the Kubernetes store on %s: %w", rc.Host, err)
	}
	log.Info("using the Kubernetes store", "server", rc.Host, "system_namespace", cfg.Store.Kubernetes.SystemNamespace,
		"client_qps", cfg.Runtime.Kubernetes.ClientConfig.QPS, "client_burst_qps", cfg.Runtime.Kubernetes.ClientConfig.BurstQPS)
	return &kubernetesMode{config: rc, store: s}, nil
}

// kubectlKinds are the kinds kept as custom resources: users write them
// with kubectl; the REST API and kumactl only read them.
func kubectlKinds() []resource.Kind {
	var out []resource.Kind
	for _, k := range v1alpha1.Kinds() {
		out = append(out, k.Resource)
	}
	return out
}

// addKubernetesParts adds the parts only Kubernetes mode has, once the
// store, the manager and the servers every control plane runs are built:
// this is where the pod controller (Pods and Services become Dataplanes)
// joins, as tasks (cp.tasks) or listeners (cp.listen), with k.config to
// reach the API server and mgr to write through validation. (The admission
// webhook server starts earlier, before the first write:
// startKubernetesAdmission.)
func (cp *ControlPlane) addKubernetesParts(k *kubernetesMode, mgr *manager.Manager) error {
	return cp.addPodController(k)
}

// dataplaneAuthenticator authenticates proxies by their Pod's
// ServiceAccount token (dpServer.authn.dpProxy.type: serviceAccountToken).
func (k *kubernetesMode) dataplaneAuthenticator() (dpserver.Authenticator, error) {
	a, err := dpauth.NewForConfig(k.config, k.store.Names())
	if err != nil {
		return nil, err
	}
	return a, nil
}
