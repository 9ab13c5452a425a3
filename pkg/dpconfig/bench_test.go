package dpconfig

import (
	"fmt"
	"testing"

	"github.com/kumametrics/mesh/pkg/resource"
)

// BenchmarkNewIndex is what the dataplane server's reconciler computes at
// every change of the store while at least one proxy is connected: the
// index of every dataplane's endpoints (here n dataplanes of 100 services).
func BenchmarkNewIndex(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		in := Inputs{Meshes: []*resource.Object{mesh("default", true)}}
		for i := range n {
			in.Dataplanes = append(in.Dataplanes, dp("default", fmt.Sprintf("dp-%06d", i), resource.Networking{
				Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
				Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, fmt.Sprintf("svc-%d", i%100))}},
			}))
		}
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewIndex(in)
			}
		})
	}
}
