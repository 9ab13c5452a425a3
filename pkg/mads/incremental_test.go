package mads

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
)

// TestIncrementalEqualsFromScratch: after random changes (dataplanes
// updated, added, removed; meshes changed, removed, added), with the bodies
// rendered in some generations only, the incremental generator's snapshot
// and HTTP bodies are byte for byte those of a generator starting from
// scratch, and those the pure functions describe. Blocks are small here so
// that a body has many.
func TestIncrementalEqualsFromScratch(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 13))
	objs := map[string]*resource.Object{} // by kind/mesh/name
	put := func(o *resource.Object) { objs[string(o.Meta.Kind)+"/"+o.Meta.Key().String()] = o }
	del := func(o *resource.Object) { delete(objs, string(o.Meta.Kind)+"/"+o.Meta.Key().String()) }
	meshNames := []string{"m1", "m1-a", "m2", "plain"}
	newMesh := func(name string) *resource.Object {
		if name == "plain" {
			return resource.New("", name, &resource.MeshSpec{})
		}
		return metricsMesh(name, &resource.PrometheusConf{Port: u32(uint32(9000 + rnd.IntN(100)))})
	}
	newDP := func(mesh string, i int) *resource.Object {
		return dp(mesh, fmt.Sprintf("dp-%03d", i), resource.Networking{
			Address: fmt.Sprintf("10.0.%d.%d", rnd.IntN(256), rnd.IntN(256)),
			Inbound: []resource.Inbound{inbound(resource.ServiceTag, fmt.Sprintf("svc-%d", rnd.IntN(5)), "version", fmt.Sprint(rnd.IntN(3)))},
		}, nil)
	}
	for _, m := range meshNames {
		put(newMesh(m))
		for i := range 40 {
			put(newDP(m, i))
		}
	}
	g := generator{blockEvery: 3}
	for round := range 80 {
		var list []*resource.Object
		for _, o := range objs {
			list = append(list, o)
		}
		view := mirror.NewView(list...)
		meshes, dps := view.List(resource.KindMesh, ""), view.List(resource.KindDataplane, "")

		p, err := g.generate(meshes, dps)
		require.NoError(t, err)
		fresh := generator{blockEvery: 3}
		q, err := fresh.generate(meshes, dps)
		require.NoError(t, err)
		want, err := Snapshot(Assignments(meshes, dps))
		require.NoError(t, err)
		require.Equal(t, want.Version(), p.snap.Version(), "round %d", round)
		require.Equal(t, q.snap.Resources(), p.snap.Resources(), "round %d", round)

		// Render the bodies in some rounds only: a generation that nobody
		// fetched passes its predecessor's blocks on.
		if rnd.IntN(3) > 0 {
			body := p.fetchResponse().bytes()
			require.Equal(t, string(q.fetchResponse().bytes()), string(body), "round %d: fetch body", round)
			require.Equal(t, len(body), p.fetchResponse().size)
			resp := &discoveryv3.DiscoveryResponse{}
			require.NoError(t, protojson.Unmarshal(body, resp))
			require.Len(t, resp.GetResources(), want.Len())
			// In the order of Assignments: by mesh, then dataplane.
			for i, a := range Assignments(meshes, dps) {
				r, ok := want.Get(a.Name)
				require.True(t, ok)
				require.True(t, proto.Equal(r.Body, resp.GetResources()[i]), "round %d: resource %s", round, r.Name)
			}
		}
		if rnd.IntN(3) > 0 {
			sd := p.httpSD().bytes()
			require.Equal(t, string(q.httpSD().bytes()), string(sd), "round %d: http_sd body", round)
			var groups []TargetGroup
			require.NoError(t, json.Unmarshal(sd, &groups))
			wantGroups := HTTPSDGroups(Assignments(meshes, dps))
			if len(wantGroups) == 0 {
				require.Empty(t, groups, "round %d", round)
			} else {
				require.Equal(t, wantGroups, groups, "round %d", round)
			}
		}

		// Change a few things for the next round.
		for range 1 + rnd.IntN(6) {
			mesh := meshNames[rnd.IntN(len(meshNames))]
			i := rnd.IntN(50)
			switch op := rnd.IntN(20); {
			case op == 0:
				put(newMesh(mesh))
			case op == 1:
				del(resource.New("", mesh, &resource.MeshSpec{}))
			case op < 8:
				del(newDP(mesh, i))
			default:
				put(newDP(mesh, i))
			}
		}
	}
}
