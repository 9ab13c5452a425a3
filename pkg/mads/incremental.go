package mads

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/xds"
)

// generator memoizes Assignments: a dataplane whose object and mesh object
// are the very ones of the previous generation (store views share unchanged
// objects) reuses its assignment, its marshaled resource and its rendered
// JSON. A change therefore costs in proportion to what changed. The result
// is exactly what Assignments and Snapshot compute.
type generator struct {
	prev map[*resource.Object]*entry
}

// entry is one dataplane's generated output.
type entry struct {
	mesh *resource.Object
	// a is nil when the dataplane has no assignment.
	a   *Assignment
	res xds.Resource

	// The HTTP forms, rendered on first use: fetchJSON is the resource as
	// JSON (an Any with @type), sdJSON its http_sd target groups,
	// comma-separated.
	jsonOnce          sync.Once
	fetchJSON, sdJSON []byte
}

// renderJSON renders the entry's HTTP forms once.
func (e *entry) renderJSON() {
	e.jsonOnce.Do(func() {
		e.fetchJSON = appendAssignmentJSON(nil, e.a.MonitoringAssignment)
		var sd []byte
		for i, g := range HTTPSDGroups([]Assignment{*e.a}) {
			if i > 0 {
				sd = append(sd, ',')
			}
			sd = appendGroupJSON(sd, g)
		}
		e.sdJSON = sd
	})
}

func newEntry(mesh, dp *resource.Object) (*entry, error) {
	e := &entry{mesh: mesh}
	ma := assignment(dp.Meta, mesh.Mesh(), dp.Dataplane())
	if ma == nil {
		return e, nil
	}
	e.a = &Assignment{Name: ResourceName(dp.Meta.Mesh, dp.Meta.Name), MonitoringAssignment: ma}
	var err error
	if e.res, err = xds.NewResource(e.a.Name, ma); err != nil {
		return nil, err
	}
	return e, nil
}

// generate returns the generation for meshes and dataplanes (dataplanes
// sorted by mesh, then name, as store views list them).
func (g *generator) generate(meshes, dataplanes []*resource.Object) (*published, error) {
	byName := make(map[string]*resource.Object, len(meshes))
	for _, m := range meshes {
		byName[m.Meta.Name] = m
	}
	next := make(map[*resource.Object]*entry, len(dataplanes))
	entries := make([]*entry, 0, len(dataplanes))
	resources := make([]xds.Resource, 0, len(dataplanes))
	for _, dp := range dataplanes {
		mesh := byName[dp.Meta.Mesh]
		if mesh == nil {
			continue
		}
		e := g.prev[dp]
		if e == nil || e.mesh != mesh {
			var err error
			if e, err = newEntry(mesh, dp); err != nil {
				return nil, err
			}
		}
		next[dp] = e
		if e.a != nil {
			entries = append(entries, e)
			resources = append(resources, e.res)
		}
	}
	snap, err := xds.NewSnapshot(TypeURL, resources)
	if err != nil {
		return nil, err
	}
	g.prev = next
	return &published{snap: snap, entries: entries}, nil
}

// published is one generation: its snapshot, and the HTTP bodies assembled
// from the entries' fragments on first use and shared by every client.
type published struct {
	snap    *xds.Snapshot
	entries []*entry

	fetchOnce sync.Once
	fetchBody []byte

	sdOnce sync.Once
	sdBody []byte
}

// fetchResponse is the DiscoveryResponse in proto-name JSON.
func (p *published) fetchResponse() []byte {
	p.fetchOnce.Do(func() {
		size := 256
		for _, e := range p.entries {
			e.renderJSON()
			size += len(e.fetchJSON) + 1
		}
		b := bytes.NewBuffer(make([]byte, 0, size))
		fmt.Fprintf(b, `{"version_info":%q,"resources":[`, p.snap.Version())
		for i, e := range p.entries {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(e.fetchJSON)
		}
		fmt.Fprintf(b, `],"type_url":%q,"nonce":%q}`, TypeURL, p.snap.Version())
		p.fetchBody = b.Bytes()
	})
	return p.fetchBody
}

// httpSD is the http_sd document.
func (p *published) httpSD() []byte {
	p.sdOnce.Do(func() {
		size := 2
		for _, e := range p.entries {
			e.renderJSON()
			size += len(e.sdJSON) + 1
		}
		b := bytes.NewBuffer(make([]byte, 0, size))
		b.WriteByte('[')
		first := true
		for _, e := range p.entries {
			if len(e.sdJSON) == 0 {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			b.Write(e.sdJSON)
		}
		b.WriteByte(']')
		p.sdBody = b.Bytes()
	})
	return p.sdBody
}
