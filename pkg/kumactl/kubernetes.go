package kumactl

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

// writeRefused is the control plane's refusal (405) of a write through its
// API: a control plane on Kubernetes keeps its resources as custom
// resources, written with kubectl (as the reference system's does).
type writeRefused struct {
	api *apiclient.Error
	// kubectl is the command that does the write instead.
	kubectl string
	// universal is true when the write came from a Universal-form document,
	// which kubectl does not take.
	universal bool
}

func (e *writeRefused) Error() string {
	var b strings.Builder
	b.WriteString("the control plane runs on Kubernetes and refuses writes through its API: write with kubectl (kumactl still reads everything):\n  ")
	b.WriteString(e.kubectl)
	if e.universal {
		b.WriteString("\n(kubectl takes the Kubernetes form: apiVersion: kuma.io/v1alpha1, kind, metadata.name, spec, and mesh for mesh-scoped kinds)")
	}
	if e.api.Details != "" {
		b.WriteString("\nThe control plane said: ")
		b.WriteString(strings.TrimSpace(e.api.Details))
	}
	return b.String()
}

func (e *writeRefused) Unwrap() error { return e.api }

// refusedWrite turns a 405 answer to a write into a writeRefused that names
// the kubectl command; other errors pass unchanged.
func refusedWrite(err error, kubectl string, universal bool) error {
	var ae *apiclient.Error
	if errors.As(err, &ae) && ae.Status == http.StatusMethodNotAllowed {
		return &writeRefused{api: ae, kubectl: kubectl, universal: universal}
	}
	return err
}

// kubectlDelete is the kubectl command that deletes a resource of the
// control plane on Kubernetes: Meshes and TrafficPermissions are
// cluster-scoped custom resources; a Dataplane <pod>.<namespace> is the
// custom resource <pod> of that namespace (one without a dot lives in the
// control plane's namespace).
func kubectlDelete(d resource.Descriptor, name string) string {
	switch d.Kind {
	case resource.KindMesh, resource.KindTrafficPermission:
		return fmt.Sprintf("kubectl delete %s %s", strings.ToLower(string(d.Kind)), name)
	case resource.KindDataplane:
		if i := strings.LastIndexByte(name, '.'); i > 0 && i < len(name)-1 {
			return fmt.Sprintf("kubectl delete dataplane %s --namespace %s", name[:i], name[i+1:])
		}
		return fmt.Sprintf("kubectl delete dataplane %s --namespace <the control plane's namespace, kuma-system by default>", name)
	}
	return fmt.Sprintf("kubectl delete the Kubernetes object of %s %q", d.Kind, name)
}
