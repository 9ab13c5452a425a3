package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoKubernetesClient: kuma-dp runs beside every workload, also on
// Kubernetes, without the Kubernetes client libraries: it presents a token
// and the control plane asks the API server (pkg/k8s/dpauth).
// sigs.k8s.io/yaml is the project's YAML library, not a Kubernetes client.
func TestNoKubernetesClient(t *testing.T) {
	for _, pkg := range deps(t) {
		if strings.HasPrefix(pkg, "k8s.io/") || (strings.HasPrefix(pkg, "sigs.k8s.io/") && pkg != "sigs.k8s.io/yaml") {
			t.Errorf("kuma-dp depends on %s", pkg)
		}
	}
}

// TestNoControlPlaneServer: what kuma-dp and the dataplane server agree on
// lives in pkg/dpconfig; linking the server would bring the control plane's
// xDS server and the Prometheus client library (with their init-time
// registrations) into every sidecar.
func TestNoControlPlaneServer(t *testing.T) {
	for _, pkg := range deps(t) {
		switch pkg {
		case "github.com/kumametrics/mesh/pkg/dpserver", "github.com/kumametrics/mesh/pkg/xds",
			"github.com/kumametrics/mesh/pkg/manager", "github.com/prometheus/client_golang/prometheus":
			t.Errorf("kuma-dp depends on %s", pkg)
		}
	}
}

// deps are the packages kuma-dp is built from.
func deps(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}
