package mads

import (
	"fmt"
	"testing"

	"github.com/kumametrics/mesh/pkg/resource"
)

func benchInput(n int) (meshes, dataplanes []*resource.Object) {
	meshes = []*resource.Object{metricsMesh("default", nil)}
	for i := range n {
		dataplanes = append(dataplanes, dp("default", fmt.Sprintf("dp-%05d", i), resource.Networking{
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			Inbound: []resource.Inbound{inbound(resource.ServiceTag, fmt.Sprintf("svc-%d", i%100), "version", "v1", "zone", "z1")},
		}, nil))
	}
	return meshes, dataplanes
}

// BenchmarkGenerate measures one regeneration: cold (a first start:
// everything is generated, the HTTP forms are not rendered yet) and after
// one dataplane changed (the usual case; with the long-poll answer rendered).
// BenchmarkRenderCold is the first HTTP answer after a cold start.
func BenchmarkGenerate(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		meshes, dps := benchInput(n)
		b.Run(fmt.Sprintf("cold/dataplanes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			var p *published
			for b.Loop() {
				var g generator
				var err error
				if p, err = g.generate(meshes, dps); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.fetchResponse().size), "fetch-bytes")
			b.ReportMetric(float64(p.httpSD().size), "http_sd-bytes")
		})
		b.Run(fmt.Sprintf("one-change/dataplanes=%d", n), func(b *testing.B) {
			var g generator
			p, err := g.generate(meshes, dps)
			if err != nil {
				b.Fatal(err)
			}
			p.fetchResponse() // every fragment rendered, as in a running server
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// A new object for one dataplane, as the store mirror hands out after an update.
				k := i % n
				changed := *dps[k]
				spec := *changed.Dataplane()
				nw := *spec.Networking
				nw.Address = fmt.Sprintf("172.16.%d.%d", i>>8&255, i&255)
				spec.Networking = &nw
				changed.Spec = &spec
				dps[k] = &changed
				p, err := g.generate(meshes, dps)
				if err != nil {
					b.Fatal(err)
				}
				p.fetchResponse()
				i++
			}
		})
	}
}

func BenchmarkRenderCold(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		meshes, dps := benchInput(n)
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				var g generator
				p, err := g.generate(meshes, dps)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				p.fetchResponse()
			}
		})
	}
}
