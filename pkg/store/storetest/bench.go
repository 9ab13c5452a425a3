package storetest

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
)

// BenchMesh is the mesh the benchmarks' dataplanes live in.
const BenchMesh = "bench"

// BenchSize is how many dataplanes the benchmarks' store holds.
const BenchSize = 10_000

// BenchSeed returns the objects a benchmark store starts with: the mesh
// BenchMesh, then BenchSize dataplanes in it.
func BenchSeed() []*resource.Object {
	objs := make([]*resource.Object, 0, BenchSize+1)
	objs = append(objs, Mesh(BenchMesh))
	for i := range BenchSize {
		objs = append(objs, Dataplane(BenchMesh, benchName(i), i))
	}
	return objs
}

func benchName(i int) string { return fmt.Sprintf("dp-%05d", i) }

// Seed creates objs one by one, in order.
func Seed(tb testing.TB, s store.Store, objs []*resource.Object) {
	tb.Helper()
	for _, o := range objs {
		if err := s.Create(tb.Context(), o); err != nil {
			tb.Fatalf("seed: %v", err)
		}
	}
}

// RunBenchmarks benchmarks a backend holding BenchSize dataplanes in one
// mesh. open must return a new store already holding seed (as Seed would
// create it; a backend may load it faster, outside the timed part) and
// should register its Close with b.Cleanup.
func RunBenchmarks(b *testing.B, open func(b *testing.B, seed []*resource.Object) store.Store) {
	b.Run("Create", func(b *testing.B) {
		s := open(b, BenchSeed())
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if err := s.Create(b.Context(), Dataplane(BenchMesh, fmt.Sprintf("new-%07d", i), i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})

	b.Run("Get", func(b *testing.B) {
		s := open(b, BenchSeed())
		rng := rand.New(rand.NewPCG(1, 2))
		keys := make([]resource.Key, 4096)
		for i := range keys {
			keys[i] = resource.Key{Mesh: BenchMesh, Name: benchName(rng.IntN(BenchSize))}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			obj, err := s.Get(b.Context(), resource.KindDataplane, keys[i%len(keys)])
			if err != nil {
				b.Fatal(err)
			}
			if obj.Meta.Name != keys[i%len(keys)].Name {
				b.Fatalf("got %s", obj.Meta.Name)
			}
			i++
		}
	})

	b.Run("ListMesh", func(b *testing.B) {
		s := open(b, BenchSeed())
		b.ReportAllocs()
		for b.Loop() {
			res, err := s.List(b.Context(), resource.KindDataplane, store.ListOptions{Mesh: BenchMesh})
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Items) != BenchSize {
				b.Fatalf("listed %d items", len(res.Items))
			}
		}
	})

	b.Run("ListPage100", func(b *testing.B) {
		s := open(b, BenchSeed())
		const page = 100
		rng := rand.New(rand.NewPCG(3, 4))
		b.ReportAllocs()
		for b.Loop() {
			off := rng.IntN(BenchSize/page) * page
			res, err := s.List(b.Context(), resource.KindDataplane, store.ListOptions{Mesh: BenchMesh, Limit: page, Offset: off})
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Items) != page || res.Total != BenchSize {
				b.Fatalf("listed %d items of %d", len(res.Items), res.Total)
			}
		}
	})
}
