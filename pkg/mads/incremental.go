package mads

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/xds"
)

// generator memoizes Assignments: a dataplane whose object and mesh object
// are the very ones of the previous generation (store views share unchanged
// objects) reuses its assignment, its marshaled resource and its rendered
// JSON. A change therefore costs in proportion to what changed, plus a walk
// over the dataplanes comparing pointers. The result is exactly what
// Assignments and Snapshot compute.
type generator struct {
	// prev is the previous generation's dataplanes and their entries, in
	// the order they came (by mesh, then name).
	prev []generated
	// spare is the generation before prev's slice, reused for the next.
	spare []generated
	// last is the previous generation: its bodies' blocks are reused.
	last *published
	// blockEvery sets the size of the bodies' blocks (0: blockEvery).
	blockEvery uint64
}

// blockEvery: a block of the HTTP bodies ends after an entry whose name
// hashes to 0 modulo blockEvery, so blocks hold blockEvery entries on
// average (~150 KB of JSON), and, their bounds following the content, a
// dataplane added or removed changes its block only.
const blockEvery = 512

// generated is a dataplane and its entry; mesh and res repeat the
// entry's, so that taking an unchanged dataplane's resource reads this
// slice only, in order, not the entries spread over the heap.
type generated struct {
	dp, mesh *resource.Object
	e        *entry
	res      xds.Resource // Body nil: no assignment
}

// entry is one dataplane's generated output.
type entry struct {
	mesh *resource.Object
	// a is nil when the dataplane has no assignment.
	a   *Assignment
	res xds.Resource

	// The HTTP forms, each rendered on first use: fetchJSON is the
	// resource as JSON (an Any with @type), sdJSON its http_sd target
	// groups, comma-separated.
	fetchOnce, sdOnce sync.Once
	fetchJSON, sdJSON []byte
	// cut ends a block of the bodies after this entry.
	cut bool
}

func fetchFragment(e *entry) []byte {
	e.fetchOnce.Do(func() { e.fetchJSON = appendAssignmentJSON(nil, e.a.MonitoringAssignment) })
	return e.fetchJSON
}

func sdFragment(e *entry) []byte {
	e.sdOnce.Do(func() {
		var sd []byte
		for i, g := range HTTPSDGroups([]Assignment{*e.a}) {
			if i > 0 {
				sd = append(sd, ',')
			}
			sd = appendGroupJSON(sd, g)
		}
		e.sdJSON = sd
	})
	return e.sdJSON
}

func newEntry(mesh, dp *resource.Object, every uint64) (*entry, error) {
	e := &entry{mesh: mesh}
	ma := assignment(dp.Meta, mesh.Mesh(), dp.Dataplane())
	if ma == nil {
		return e, nil
	}
	e.a = &Assignment{Name: ResourceName(dp.Meta.Mesh, dp.Meta.Name), MonitoringAssignment: ma}
	e.cut = xxhash.Sum64String(e.a.Name)%every == 0
	var err error
	if e.res, err = xds.NewResource(e.a.Name, ma); err != nil {
		return nil, err
	}
	return e, nil
}

// generate returns the generation for meshes and dataplanes (dataplanes
// sorted by mesh, then name, as store views list them; in another order
// the result is the same, only fewer entries are reused).
func (g *generator) generate(meshes, dataplanes []*resource.Object) (*published, error) {
	byName := make(map[string]*resource.Object, len(meshes))
	for _, m := range meshes {
		byName[m.Meta.Name] = m
	}
	every := g.blockEvery
	if every == 0 {
		every = blockEvery
	}
	next := g.spare[:0]
	if cap(next) < len(dataplanes) {
		next = make([]generated, 0, len(dataplanes)+len(dataplanes)/8)
	}
	entries := make([]*entry, 0, len(dataplanes))
	resources := make([]xds.Resource, 0, len(dataplanes))
	j := 0                      // where dp's previous entry may be: both lists are in the same order
	var meshOK *resource.Object // a mesh object known to be current
	for _, dp := range dataplanes {
		var was *generated
		if j < len(g.prev) && g.prev[j].dp == dp {
			was = &g.prev[j] // the usual case: the same object in the same place
			j++
		} else {
			for j < len(g.prev) && mirror.Compare(g.prev[j].dp, dp) < 0 {
				j++ // a dataplane gone since
			}
			if j < len(g.prev) && g.prev[j].dp == dp {
				was = &g.prev[j]
				j++
			}
		}
		if was != nil && (was.mesh == meshOK || byName[was.mesh.Meta.Name] == was.mesh) {
			// The same dataplane object in the same mesh object: reused.
			meshOK = was.mesh
			next = append(next, *was)
			if was.res.Body != nil {
				entries = append(entries, was.e)
				resources = append(resources, was.res)
			}
			continue
		}
		mesh := byName[dp.Meta.Mesh]
		if mesh == nil {
			continue
		}
		e, err := newEntry(mesh, dp, every)
		if err != nil {
			return nil, err
		}
		next = append(next, generated{dp: dp, mesh: mesh, e: e, res: e.res})
		if e.a != nil {
			entries = append(entries, e)
			resources = append(resources, e.res)
		}
	}
	snap, err := xds.NewSnapshot(TypeURL, resources)
	if err != nil {
		return nil, err
	}
	p := &published{snap: snap, entries: entries}
	if last := g.last; last != nil {
		p.reuseFetch, p.reuseSD = last.fetchBlocks.Load(), last.sdBlocks.Load()
		if p.reuseFetch == nil {
			p.reuseFetch = last.reuseFetch
		}
		if p.reuseSD == nil {
			p.reuseSD = last.reuseSD
		}
	}
	clear(g.prev) // no longer keeps the old objects
	g.prev, g.spare, g.last = next, g.prev, p
	return p, nil
}

// published is one generation: its snapshot, and the HTTP bodies assembled
// from the entries' fragments on first use and shared by every client.
type published struct {
	snap    *xds.Snapshot
	entries []*entry

	// reuseFetch and reuseSD are the blocks of the latest earlier
	// generation that rendered them: the bodies reuse their unchanged ones.
	reuseFetch, reuseSD *blocks

	fetchOnce   sync.Once
	fetchBody   *body
	fetchBlocks atomic.Pointer[blocks]

	sdOnce   sync.Once
	sdBody   *body
	sdBlocks atomic.Pointer[blocks]
}

// body is an HTTP body in parts, written one after the other.
type body struct {
	parts [][]byte
	size  int
}

func (b *body) add(p []byte) {
	b.parts = append(b.parts, p)
	b.size += len(p)
}

// bytes is the whole body in one slice.
func (b *body) bytes() []byte {
	out := make([]byte, 0, b.size)
	for _, p := range b.parts {
		out = append(out, p...)
	}
	return out
}

// blocks are a body's entries' fragments, joined with commas, by runs of
// entries. A block whose entries are the very ones of a block of the
// previous generation reuses its bytes, so a change copies one block, not
// the whole body.
type blocks struct {
	list    []block
	byFirst map[*entry]int
}

type block struct {
	entries []*entry
	json    []byte // empty when no entry has a fragment
}

var comma = []byte(",")

// join renders entries' fragments (frag) into blocks, reusing prev's, and
// adds them to b joined with commas; fragments that are empty are left out.
func join(b *body, entries []*entry, frag func(*entry) []byte, prev *blocks) *blocks {
	out := &blocks{byFirst: map[*entry]int{}}
	first := true
	for start := 0; start < len(entries); {
		end := start
		for end < len(entries)-1 && !entries[end].cut {
			end++
		}
		end++
		es := entries[start:end]
		start = end
		var js []byte
		reused := false
		if prev != nil {
			if i, ok := prev.byFirst[es[0]]; ok && slices.Equal(prev.list[i].entries, es) {
				js, reused = prev.list[i].json, true
			}
		}
		if !reused {
			size := 0
			for _, e := range es {
				size += len(frag(e)) + 1
			}
			js = make([]byte, 0, size)
			for _, e := range es {
				f := frag(e)
				if len(f) == 0 {
					continue
				}
				if len(js) > 0 {
					js = append(js, ',')
				}
				js = append(js, f...)
			}
		}
		out.byFirst[es[0]] = len(out.list)
		out.list = append(out.list, block{entries: es, json: js})
		if len(js) == 0 {
			continue
		}
		if !first {
			b.add(comma)
		}
		first = false
		b.add(js)
	}
	return out
}

// fetchResponse is the DiscoveryResponse in proto-name JSON.
func (p *published) fetchResponse() *body {
	p.fetchOnce.Do(func() {
		b := &body{}
		b.add(fmt.Appendf(nil, `{"version_info":%q,"resources":[`, p.snap.Version()))
		p.fetchBlocks.Store(join(b, p.entries, fetchFragment, p.reuseFetch))
		b.add(fmt.Appendf(nil, `],"type_url":%q,"nonce":%q}`, TypeURL, p.snap.Version()))
		p.fetchBody = b
	})
	return p.fetchBody
}

// httpSD is the http_sd document.
func (p *published) httpSD() *body {
	p.sdOnce.Do(func() {
		b := &body{}
		b.add([]byte("["))
		p.sdBlocks.Store(join(b, p.entries, sdFragment, p.reuseSD))
		b.add([]byte("]"))
		p.sdBody = b
	})
	return p.sdBody
}
