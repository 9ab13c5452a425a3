package resource

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKubernetesField(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"name":                  "metadata.name",
		"type":                  "kind",
		"mesh":                  "mesh",
		"apiVersion":            "apiVersion",
		"kind":                  "kind",
		"spec":                  "spec",
		"networking.inbound[0]": "spec.networking.inbound[0]",
		"spec.networking":       "spec.networking",
		"metadata.name":         "metadata.name",
		"specification":         "spec.specification",
	} {
		require.Equal(t, want, KubernetesField(in), in)
	}
	require.Equal(t, []Cause{{Field: "spec.metrics.backends[0].conf.port", Message: "m"}, {Field: "metadata.name", Message: "n"}},
		KubernetesCauses([]Cause{{Field: "metrics.backends[0].conf.port", Message: "m"}, {Field: "name", Message: "n"}}))
}
