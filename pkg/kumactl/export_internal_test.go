package kumactl

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Every kind of resource.Descriptors() is placed without a change to export:
// a kind added later (an owned one, a sensitive one outside meshes) is
// ordered by its descriptor alone.
func TestExportKindsOrder(t *testing.T) {
	kinds, left := exportKinds(resource.Descriptors(), false)
	require.Equal(t, []resource.Kind{resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission}, kindsOf(kinds))
	require.Equal(t, []resource.Kind{resource.KindSecret, resource.KindGlobalSecret}, kindsOf(left))

	descs := append([]resource.Descriptor{
		{Kind: "Owned", Plural: "owneds", Scoped: true, Owner: "Policy"},
		{Kind: "Policy", Plural: "policies", Scoped: true},
		{Kind: "OwnedSecret", Plural: "owned-secrets", Scoped: true, Sensitive: true, Owner: resource.KindDataplane},
	}, resource.Descriptors()...)
	kinds, left = exportKinds(descs, true)
	require.Empty(t, left)
	require.Equal(t, []resource.Kind{
		resource.KindMesh,
		resource.KindSecret,
		"Policy", resource.KindDataplane, resource.KindTrafficPermission,
		"Owned", "OwnedSecret",
		resource.KindGlobalSecret,
	}, kindsOf(kinds), "meshes, secrets, the rest with owners first, secrets outside meshes last; no read-only kind")
}

func kindsOf(descs []resource.Descriptor) []resource.Kind {
	var out []resource.Kind
	for _, d := range descs {
		out = append(out, d.Kind)
	}
	return out
}
