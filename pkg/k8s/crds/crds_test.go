package crds

import (
	"bytes"
	"io/fs"
	"testing"
)

// TestEveryEmbeddedManifestIsListed: a CRD file added beside the others is
// also in the install order, and every listed one is embedded.
func TestEveryEmbeddedManifestIsListed(t *testing.T) {
	embedded, err := fs.Glob(files, "*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(embedded) != len(order) {
		t.Fatalf("embedded %v, listed %v", embedded, order)
	}
	all := YAML()
	for _, m := range Manifests() {
		if !bytes.HasPrefix(m.YAML, []byte("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")) {
			t.Errorf("%s is not a CustomResourceDefinition", m.File)
		}
		if !bytes.Contains(all, m.YAML) {
			t.Errorf("%s missing from YAML()", m.File)
		}
	}
}
