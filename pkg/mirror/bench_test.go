package mirror

import (
	"fmt"
	"testing"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

// BenchmarkViewAfterChange measures what one dataplane's update costs the
// mirror: applying its event, building the next view and listing the
// dataplanes sorted, as every reconciler does after a change.
func BenchmarkViewAfterChange(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("dataplanes=%d", n), func(b *testing.B) {
			ctx := b.Context()
			s := memory.New()
			if err := s.Create(ctx, storetest.Mesh("m")); err != nil {
				b.Fatal(err)
			}
			for i := range n {
				if err := s.Create(ctx, storetest.Dataplane("m", fmt.Sprintf("dp-%06d", i), i)); err != nil {
					b.Fatal(err)
				}
			}
			m := New(s, nil, resource.KindMesh, resource.KindDataplane)
			if err := m.reload(ctx); err != nil {
				b.Fatal(err)
			}
			v, _ := m.View()
			v.List(resource.KindDataplane, "")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				key := resource.Key{Mesh: "m", Name: fmt.Sprintf("dp-%06d", i*7919%n)}
				b.StopTimer()
				o, err := s.Get(ctx, resource.KindDataplane, key)
				if err != nil {
					b.Fatal(err)
				}
				upd := &resource.Object{Meta: o.Meta, Spec: storetest.Dataplane("m", key.Name, i+1).Spec}
				if err := s.Update(ctx, upd); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := m.apply(ctx, []store.Event{{Type: store.Updated, Kind: resource.KindDataplane, Key: key, Version: o.Meta.Version + 1}}); err != nil {
					b.Fatal(err)
				}
				v, _ := m.View()
				if len(v.List(resource.KindDataplane, "")) != n {
					b.Fatal("wrong count")
				}
				i++
			}
		})
	}
}
