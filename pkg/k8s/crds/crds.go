// Package crds embeds the CustomResourceDefinitions of group kuma.io,
// version v1alpha1 (YAML with OpenAPI v3 schemas and printer columns), for
// `kumactl install crds` / `install control-plane` and the test harness. It
// imports nothing heavy: the manifests are plain bytes.
package crds

import (
	"bytes"
	"embed"
)

//go:embed kuma.io_*.yaml
var files embed.FS

// order is the order of the manifests: meshes first.
var order = []string{
	"kuma.io_meshes.yaml",
	"kuma.io_trafficpermissions.yaml",
	"kuma.io_dataplanes.yaml",
	"kuma.io_dataplaneinsights.yaml",
	"kuma.io_controlplaneinstances.yaml",
}

// Manifest is one CRD manifest.
type Manifest struct {
	// File is its file name (kuma.io_<plural>.yaml).
	File string
	YAML []byte
}

// Manifests returns every CRD manifest, meshes first.
func Manifests() []Manifest {
	out := make([]Manifest, len(order))
	for i, f := range order {
		b, err := files.ReadFile(f)
		if err != nil {
			panic("crds: embedded manifest missing: " + f) // a build defect, caught by the package's tests
		}
		out[i] = Manifest{File: f, YAML: b}
	}
	return out
}

// YAML returns every CRD as one multi-document YAML stream (what
// `kumactl install crds` prints).
func YAML() []byte {
	var b bytes.Buffer
	for i, m := range Manifests() {
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(m.YAML)
	}
	return b.Bytes()
}
