package controlplane

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kumametrics/mesh/pkg/k8s/podcontroller"
	"github.com/kumametrics/mesh/pkg/store/kubernetes"
)

// addPodController runs the pod controller (Pods, Services and Namespaces
// become Dataplanes) in a controller-runtime manager of its own, as a task:
// it writes the Dataplane custom resources, which reach everything else
// through the store like any other write.
func (cp *ControlPlane) addPodController(k *kubernetesMode) error {
	scheme, err := kubernetes.Scheme()
	if err != nil {
		return fmt.Errorf("pod controller: scheme: %w", err)
	}
	log := cp.log.With("component", "pod-controller")
	mgr, err := ctrl.NewManager(k.config, ctrl.Options{
		Scheme: scheme,
		// controller-runtime's own metrics and probes are not served: the
		// controller's metrics are on the control plane's registry.
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 logr.FromSlogHandler(log.Handler()),
	})
	if err != nil {
		return fmt.Errorf("pod controller: manager on %s: %w", k.config.Host, err)
	}
	err = podcontroller.Setup(mgr, podcontroller.Options{
		Log:        log,
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"zone": ZoneName}, cp.registry),
	})
	if err != nil {
		return err
	}
	cp.tasks = append(cp.tasks, task{"pod-controller", mgr.Start})
	return nil
}
