package dpconfig

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kumametrics/mesh/pkg/resource"
)

// BenchmarkNewIndex is what the dataplane server's reconciler computes at
// every change of the store while at least one proxy is connected: the
// index of every dataplane's endpoints (here n dataplanes of 100 services).
func BenchmarkNewIndex(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		in := benchInputs(n)
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NewIndex(in)
			}
		})
	}
}

// BenchmarkIndexAfterOneChange is the reconciler's index at a change of
// one dataplane (its address) among n of 100 services: Next from the
// previous view's index.
func BenchmarkIndexAfterOneChange(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		in := benchInputs(n)
		// other is in with dataplane n/2 moved to another address.
		other := in
		other.Dataplanes = slices.Clone(in.Dataplanes)
		other.Dataplanes[n/2] = dp("default", fmt.Sprintf("dp-%06d", n/2), resource.Networking{
			Address: "10.255.255.255",
			Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, fmt.Sprintf("svc-%d", n/2%100))}},
		})
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			ix := NewIndex(in)
			next := [2]Inputs{other, in}
			i := 0
			for b.Loop() {
				ix = ix.Next(next[i%2])
				i++
			}
		})
	}
}

// benchInputs is a mesh of n dataplanes of 100 services, in a view's order.
func benchInputs(n int) Inputs {
	in := Inputs{Meshes: []*resource.Object{mesh("default", true)}}
	for i := range n {
		in.Dataplanes = append(in.Dataplanes, dp("default", fmt.Sprintf("dp-%06d", i), resource.Networking{
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, fmt.Sprintf("svc-%d", i%100))}},
		}))
	}
	return in
}
