package dpconfig

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/kumametrics/mesh/pkg/resource"
)

// world is a random store content that changes by random steps; an
// object that does not change keeps its pointer, as in store views.
type world struct {
	r           *rand.Rand
	objects     map[resource.Kind]map[resource.Key]*resource.Object
	transitions map[string]time.Time
	version     int64
}

func (w *world) pick(list ...string) string { return list[w.r.IntN(len(list))] }

func (w *world) put(o *resource.Object) {
	w.version++
	o.Meta.Version = w.version
	o.Meta.CreationTime = time.Unix(w.r.Int64N(3), 0)
	w.objects[o.Meta.Kind][o.Meta.Key()] = o
}

func (w *world) randomMesh(name string) *resource.Object {
	spec := &resource.MeshSpec{}
	if w.r.IntN(3) > 0 {
		conf := &resource.PrometheusConf{}
		if w.r.IntN(2) == 0 {
			conf.TLS = &resource.PrometheusTLS{Mode: w.pick(resource.TLSModeActiveMTLSBackend, resource.TLSModeDisabled)}
		}
		spec.Metrics = &resource.Metrics{EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus", Conf: conf}}}
	}
	if w.r.IntN(2) == 0 {
		spec.MTLS = &resource.MTLS{EnabledBackend: w.pick("ca-1", "ca-2", ""), Backends: []resource.CertificateAuthorityBackend{
			{Name: "ca-1", Type: "builtin"}, {Name: "ca-2", Type: "builtin"},
		}}
	}
	m := resource.New("", name, spec)
	resource.ApplyDefaults(m)
	return m
}

func (w *world) randomDataplane(mesh, name string) *resource.Object {
	nw := resource.Networking{Address: w.pick("10.0.0.1", "10.0.0.2", "10.0.0.3", "127.0.0.5", "fd00::1")}
	for range w.r.IntN(3) {
		in := resource.Inbound{Port: uint32(8080 + w.r.IntN(2)), Tags: tags(resource.ServiceTag, w.pick("a", "b", "c", "d.svc:80", ""))}
		if p := w.pick("", "http", "HTTP2", "grpc", "tcp", "kafka"); p != "" {
			in.Tags[resource.ProtocolTag] = p
		}
		if w.r.IntN(4) == 0 {
			in.Address = w.pick("10.0.0.9", "10.0.0.1")
		}
		if w.r.IntN(3) == 0 {
			in.VIPs = []string{w.pick("240.0.0.1:80", "240.0.0.2:80", "240.0.0.1:81")}
		}
		nw.Inbound = append(nw.Inbound, in)
	}
	for i := range w.r.IntN(3) {
		nw.Outbound = append(nw.Outbound, resource.Outbound{Port: uint32(10001 + i), Tags: tags(resource.ServiceTag, w.pick("a", "b", "c", "d.svc:80", "none"))})
	}
	if w.r.IntN(3) == 0 {
		nw.TransparentProxying = &resource.TransparentProxying{}
	}
	o := dp(mesh, name, nw)
	if w.r.IntN(4) == 0 {
		port := uint32(9000 + w.r.IntN(2))
		o.Dataplane().Metrics = &resource.MetricsBackend{Type: "prometheus", Conf: &resource.PrometheusConf{Port: &port}}
	}
	if w.r.IntN(20) == 0 {
		o.Dataplane().Networking = nil
	}
	return o
}

// step makes one random change.
func (w *world) step() {
	meshes := []string{"m0", "m1", "m2"}
	mesh := w.pick(meshes...)
	switch n := w.r.IntN(20); {
	case n < 10: // a dataplane created, updated or deleted
		name := fmt.Sprintf("dp-%d", w.r.IntN(12))
		if w.r.IntN(4) == 0 {
			delete(w.objects[resource.KindDataplane], resource.Key{Mesh: mesh, Name: name})
			return
		}
		w.put(w.randomDataplane(mesh, name))
	case n < 13: // a mesh
		if w.r.IntN(5) == 0 {
			delete(w.objects[resource.KindMesh], resource.Key{Name: mesh})
			return
		}
		w.put(w.randomMesh(mesh))
	case n < 15: // a permission
		name := w.pick("tp-1", "tp-2", "tp-3")
		if w.r.IntN(3) == 0 {
			delete(w.objects[resource.KindTrafficPermission], resource.Key{Mesh: mesh, Name: name})
			return
		}
		o := tp(name, time.Time{}, []map[string]string{svc(w.pick("a", "b", "*"))}, svc(w.pick("a", "b", "c", "*")))
		o.Meta.Mesh = mesh
		w.put(o)
	case n < 17: // a CA secret
		name := mesh + ".ca-builtin-cert-" + w.pick("ca-1", "ca-2")
		if w.r.IntN(3) == 0 {
			delete(w.objects[resource.KindSecret], resource.Key{Mesh: mesh, Name: name})
			return
		}
		w.put(resource.NewSecret(mesh, name, fmt.Appendf(nil, "-----CA %d-----\n", w.r.IntN(100))))
	case n < 18: // an mTLS switch seen (the server's map changes in place)
		if w.r.IntN(3) == 0 {
			delete(w.transitions, mesh)
			return
		}
		w.transitions[mesh] = time.Unix(1000+w.r.Int64N(3), 0)
	default: // several dataplanes at once
		for range 1 + w.r.IntN(5) {
			w.put(w.randomDataplane(mesh, fmt.Sprintf("dp-%d", w.r.IntN(12))))
		}
	}
}

func (w *world) inputs() Inputs {
	list := func(kind resource.Kind) []*resource.Object {
		return slices.SortedFunc(maps.Values(w.objects[kind]), compareObjects)
	}
	return Inputs{
		Meshes: list(resource.KindMesh), Dataplanes: list(resource.KindDataplane),
		TrafficPermissions: list(resource.KindTrafficPermission), Secrets: list(resource.KindSecret),
		Transitions: w.transitions,
	}
}

// requireSameIndex fails unless got is what want is: the same values (and
// the same objects of the inputs), protobuf messages compared as such.
func requireSameIndex(t *testing.T, want, got *Index) {
	t.Helper()
	require.Equal(t, want.meshes, got.meshes, "meshes")
	require.Equal(t, slices.Sorted(maps.Keys(want.mtls)), slices.Sorted(maps.Keys(got.mtls)), "mtls")
	for m, v := range want.mtls {
		require.True(t, proto.Equal(v, got.mtls[m]), "mtls of %s: %v, want %v", m, got.mtls[m], v)
	}
	require.Equal(t, want.permissions, got.permissions, "permissions")
	require.Equal(t, want.meshVersions, got.meshVersions, "mesh versions")
	require.Equal(t, slices.Sorted(maps.Keys(want.services)), slices.Sorted(maps.Keys(got.services)), "meshes with services")
	for m, bySvc := range want.services {
		require.Equal(t, slices.Sorted(maps.Keys(bySvc)), slices.Sorted(maps.Keys(got.services[m])), "services of %s", m)
		for name, s := range bySvc {
			g := got.services[m][name]
			require.Equal(t, len(s.endpoints), len(g.endpoints), "endpoints of %s/%s", m, name)
			for i := range s.endpoints {
				require.True(t, proto.Equal(s.endpoints[i], g.endpoints[i]), "endpoint %d of %s/%s: %v, want %v", i, m, name, g.endpoints[i], s.endpoints[i])
			}
			require.Equal(t, [4]any{s.inbounds, s.protocol, s.version}, [4]any{g.inbounds, g.protocol, g.version}, "service %s/%s", m, name)
		}
	}
	require.True(t, reflect.DeepEqual(want.vips, got.vips), "vips: %v, want %v", got.vips, want.vips)
	require.True(t, reflect.DeepEqual(want.inputs, got.inputs), "inputs")
}

// TestNextEqualsNewIndex changes a store content at random and checks,
// after each step, that the index kept up to date by Next is the one
// NewIndex builds from scratch, and that they generate the same configs.
func TestNextEqualsNewIndex(t *testing.T) {
	for seed := range uint64(40) {
		w := &world{
			r:           rand.New(rand.NewPCG(seed, 13)),
			objects:     map[resource.Kind]map[resource.Key]*resource.Object{},
			transitions: map[string]time.Time{},
		}
		for _, k := range []resource.Kind{resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission, resource.KindSecret} {
			w.objects[k] = map[resource.Key]*resource.Object{}
		}
		var ix *Index
		for step := range 150 {
			w.step()
			in := w.inputs()
			ix = ix.Next(in)
			want := NewIndex(in)
			where := fmt.Sprintf("seed %d, step %d", seed, step)
			t.Run("", func(t *testing.T) {
				requireSameIndex(t, want, ix)
				for _, d := range in.Dataplanes {
					if !strings.HasSuffix(d.Meta.Name, "-1") && !strings.HasSuffix(d.Meta.Name, "-2") {
						continue // a few proxies
					}
					a, errA := Generate(want, d)
					b, errB := Generate(ix, d)
					require.Equal(t, errA, errB, where)
					if errA == nil {
						require.Equal(t, want.ServiceVersions(d)+want.MeshVersion(d.Meta.Mesh), ix.ServiceVersions(d)+ix.MeshVersion(d.Meta.Mesh), where)
						ja, err := marshal.Marshal(a)
						require.NoError(t, err)
						jb, err := marshal.Marshal(b)
						require.NoError(t, err)
						require.Equal(t, ja, jb, "config of %s, %s", d.Meta.Key(), where)
					}
				}
			})
			if t.Failed() {
				t.Fatalf("%s: the incremental index differs", where)
			}
		}
	}
}

// TestNextFromUnsortedInputs: dataplanes not in a view's order are indexed
// from scratch.
func TestNextFromUnsortedInputs(t *testing.T) {
	a := dp("default", "a", resource.Networking{Address: "10.0.0.1", Inbound: []resource.Inbound{{Port: 1, Tags: svc("x")}}})
	b := dp("default", "b", resource.Networking{Address: "10.0.0.2", Inbound: []resource.Inbound{{Port: 1, Tags: svc("x")}}})
	c := dp("default", "c", resource.Networking{Address: "10.0.0.3", Inbound: []resource.Inbound{{Port: 1, Tags: svc("y")}}})
	meshes := []*resource.Object{mesh("default", false)}
	ix := NewIndex(Inputs{Meshes: meshes, Dataplanes: []*resource.Object{a, b}})
	for _, dps := range [][]*resource.Object{{b, a, c}, {a, c, b}, {a, b, c}, {c, a}, {a, a, c}} {
		in := Inputs{Meshes: meshes, Dataplanes: dps}
		ix = ix.Next(in)
		requireSameIndex(t, NewIndex(in), ix)
	}
}
