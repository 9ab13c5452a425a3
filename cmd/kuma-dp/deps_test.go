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
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/") || (strings.HasPrefix(pkg, "sigs.k8s.io/") && pkg != "sigs.k8s.io/yaml") {
			t.Errorf("kuma-dp depends on %s", pkg)
		}
	}
}
