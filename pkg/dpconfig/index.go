package dpconfig

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Index is what Generate needs to know about a mesh besides the proxy's own
// dataplane: the endpoints of every service, its permissions and its mTLS
// material. Build it once per store view: NewIndex from scratch, or Next
// from the previous view's index, in proportion to what changed.
type Index struct {
	meshes map[string]*resource.MeshSpec
	// mtls by mesh (nil: the mesh never had mTLS).
	mtls map[string]*meshv1.MTLS
	// permissions by mesh.
	permissions map[string][]*resource.Object
	// meshVersions by mesh: a hash of everything above of the mesh.
	meshVersions map[string]string
	// services by mesh, then name: those with at least one endpoint.
	services map[string]map[string]*service
	// vips by mesh: the virtual addresses of its services (inbound vips).
	vips map[string]vipTable
	// inputs is what Next compares the next inputs with.
	inputs inputsMemo
}

// service is one service of a mesh. An index never modifies a service it
// shares with another index: Next replaces a changed one.
type service struct {
	// endpoints sorted by address, port, then dataplane.
	endpoints []*meshv1.Endpoint
	// inbounds counts the inbounds behind the endpoints per protocol.
	inbounds [numProtocols]int
	// protocol all its inbounds agree on (tcp when they disagree).
	protocol string
	// version is a hash of its endpoints and protocol.
	version uint64
}

// protocols indexes service.inbounds.
var protocols = [...]string{ProtocolTCP, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC}

const numProtocols = len(protocols)

func protocolIndex(p string) int { return slices.Index(protocols[:], p) }

// inputsMemo is what an index was built from, for Next to tell what changed.
type inputsMemo struct {
	// dataplanes as given; sorted tells whether they were by mesh, then
	// name, with distinct keys (the order of a store view), which Next
	// needs to compare them with the next ones.
	dataplanes []*resource.Object
	sorted     bool
	// meshes by name: what its mTLS block and version were computed from.
	meshes map[string]meshInputs
}

// meshInputs is what a mesh's mTLS block and version are computed from.
type meshInputs struct {
	mesh        *resource.Object
	secrets     []*resource.Object
	permissions []*resource.Object
	switched    time.Time
	hasSwitch   bool
}

func (a meshInputs) same(b meshInputs) bool {
	return a.mesh == b.mesh && slices.Equal(a.secrets, b.secrets) && slices.Equal(a.permissions, b.permissions) &&
		a.hasSwitch == b.hasSwitch && a.switched.Equal(b.switched)
}

// service returns the service svc of mesh, nil when it has no endpoint.
func (ix *Index) service(mesh, svc string) *service { return ix.services[mesh][svc] }

// versionOrZero is s's version, 0 for a service without endpoints.
func (s *service) versionOrZero() uint64 {
	if s == nil {
		return 0
	}
	return s.version
}

// NewIndex indexes the inputs from scratch.
func NewIndex(in Inputs) *Index { return build(nil, in) }

// Next indexes the inputs of the view that follows the one ix was built
// from. Inputs share the objects that did not change (as store views do):
// Next rebuilds the services whose dataplanes changed and the meshes whose
// Mesh, Secrets, TrafficPermissions or mTLS switch changed, and shares the
// rest with ix, which stays valid. The result is what NewIndex computes.
// When the dataplanes are not in a view's order (by mesh, then name), Next
// indexes from scratch. A nil ix is an empty one.
func (ix *Index) Next(in Inputs) *Index { return build(ix, in) }

func build(prev *Index, in Inputs) *Index {
	ix := &Index{}
	ix.indexMeshes(prev, in)
	ix.inputs.dataplanes = in.Dataplanes
	var changes []change
	incremental := prev != nil && prev.inputs.sorted
	if incremental {
		changes, incremental = diff(prev.inputs.dataplanes, in.Dataplanes)
		// Past a quarter of the dataplanes changed, from scratch is as cheap.
		incremental = incremental && len(changes) <= len(in.Dataplanes)/4+8
	}
	if !incremental {
		ix.inputs.sorted = isSorted(in.Dataplanes)
		ix.indexServices(in.Dataplanes)
		ix.indexVIPTables(in.Dataplanes)
		return ix
	}
	ix.inputs.sorted = true
	dirty := ix.updateServices(prev, changes)
	ix.updateVIPTables(prev, in.Dataplanes, changes, dirty)
	return ix
}

// indexMeshes computes each mesh's spec, mTLS block, permissions and
// version, reusing prev's block and version of a mesh whose inputs are the
// same.
func (ix *Index) indexMeshes(prev *Index, in Inputs) {
	ix.meshes = make(map[string]*resource.MeshSpec, len(in.Meshes))
	ix.mtls = make(map[string]*meshv1.MTLS, len(in.Meshes))
	ix.meshVersions = make(map[string]string, len(in.Meshes))
	ix.permissions = map[string][]*resource.Object{}
	ix.inputs.meshes = make(map[string]meshInputs, len(in.Meshes))
	for _, tp := range in.TrafficPermissions {
		ix.permissions[tp.Meta.Mesh] = append(ix.permissions[tp.Meta.Mesh], tp)
	}
	secrets := map[string][]*resource.Object{}
	for _, s := range in.Secrets {
		secrets[s.Meta.Mesh] = append(secrets[s.Meta.Mesh], s)
	}
	for _, m := range in.Meshes {
		name := m.Meta.Name
		switched, hasSwitch := in.Transitions[name]
		mi := meshInputs{mesh: m, secrets: secrets[name], permissions: ix.permissions[name], switched: switched, hasSwitch: hasSwitch}
		ix.inputs.meshes[name] = mi
		spec := m.Mesh()
		if spec == nil {
			continue
		}
		ix.meshes[name] = spec
		if prev != nil && prev.inputs.meshes[name].same(mi) {
			ix.mtls[name], ix.meshVersions[name] = prev.mtls[name], prev.meshVersions[name]
			continue
		}
		lookup := func(mesh, name string) *resource.Object {
			for _, s := range mi.secrets {
				if s.Meta.Mesh == mesh && s.Meta.Name == name {
					return s
				}
			}
			return nil
		}
		ix.mtls[name] = mtlsOf(name, spec, lookup, in.Transitions)
		var h xxhash.Digest
		h.Reset()
		if t := ix.mtls[name]; t != nil {
			b, _ := marshal.Marshal(t)
			_, _ = h.Write(b)
		}
		var b []byte
		for _, tp := range mi.permissions {
			b = append(b[:0], '|')
			b = append(b, tp.Meta.Name...)
			b = append(b, '@')
			b = strconv.AppendInt(b, tp.Meta.Version, 10)
			_, _ = h.Write(b)
		}
		ix.meshVersions[name] = strconv.FormatUint(h.Sum64(), 16)
	}
}

// inbound is one endpoint a dataplane offers to a service.
type inbound struct {
	service  string
	endpoint *meshv1.Endpoint
	protocol int
}

// inboundsOf appends to out the endpoints dp offers (one per inbound
// naming a service).
func inboundsOf(out []inbound, dp *resource.Object) []inbound {
	spec := dp.Dataplane()
	if spec == nil || spec.Networking == nil {
		return out
	}
	key := ""
	for _, in := range spec.Networking.Inbound {
		svc := in.Tags[resource.ServiceTag]
		if svc == "" {
			continue
		}
		if key == "" {
			key = dp.Meta.Key().String()
		}
		addr := spec.Networking.Address
		if in.Address != "" {
			addr = in.Address
		}
		out = append(out, inbound{
			service:  svc,
			endpoint: &meshv1.Endpoint{Address: addr, Port: in.Port, Dataplane: key},
			protocol: protocolIndex(protocolOf(in.Tags)),
		})
	}
	return out
}

// indexServices indexes the services of every dataplane.
func (ix *Index) indexServices(dataplanes []*resource.Object) {
	ix.services = map[string]map[string]*service{}
	var ins []inbound
	for _, dp := range dataplanes {
		ins = inboundsOf(ins[:0], dp)
		for _, in := range ins {
			bySvc := ix.services[dp.Meta.Mesh]
			if bySvc == nil {
				bySvc = map[string]*service{}
				ix.services[dp.Meta.Mesh] = bySvc
			}
			s := bySvc[in.service]
			if s == nil {
				s = &service{}
				bySvc[in.service] = s
			}
			s.endpoints = append(s.endpoints, in.endpoint)
			s.inbounds[in.protocol]++
		}
	}
	for _, bySvc := range ix.services {
		for _, s := range bySvc {
			s.seal()
		}
	}
}

// seal sorts the endpoints and computes the protocol and version.
func (s *service) seal() {
	slices.SortFunc(s.endpoints, compareEndpoints)
	s.protocol = ""
	for i, n := range s.inbounds {
		switch {
		case n == 0:
		case s.protocol == "":
			s.protocol = protocols[i]
		default:
			// Inbounds disagree: only plain TCP is safe for all of them.
			s.protocol = ProtocolTCP
		}
	}
	var h xxhash.Digest
	h.Reset()
	_, _ = h.WriteString(s.protocol)
	var b [16]byte
	for _, ep := range s.endpoints {
		_, _ = h.WriteString("|")
		_, _ = h.WriteString(ep.Address)
		_, _ = h.WriteString("|")
		_, _ = h.Write(strconv.AppendUint(b[:0], uint64(ep.Port), 10))
		_, _ = h.WriteString("|")
		_, _ = h.WriteString(ep.Dataplane)
	}
	s.version = h.Sum64()
}

func compareEndpoints(a, b *meshv1.Endpoint) int {
	if c := strings.Compare(a.Address, b.Address); c != 0 {
		return c
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return strings.Compare(a.Dataplane, b.Dataplane)
}

// change is a dataplane created (old nil), deleted (new nil) or updated.
type change struct{ old, new *resource.Object }

// diff compares two lists of dataplanes, prev in a view's order, walking
// them in step: an object in both is the very same pointer. ok is false
// when next is not in a view's order.
func diff(prev, next []*resource.Object) (changes []change, ok bool) {
	i, j := 0, 0
	for i < len(prev) || j < len(next) {
		if i < len(prev) && j < len(next) && prev[i] == next[j] {
			i, j = i+1, j+1
			continue
		}
		var c int
		switch {
		case i == len(prev):
			c = 1
		case j == len(next):
			c = -1
		default:
			c = compareObjects(prev[i], next[j])
		}
		// Every object of next not matched by pointer is checked against
		// its neighbours; the matched ones keep prev's order. So next is
		// in order when every check passes.
		if c >= 0 && !(j == 0 || compareObjects(next[j-1], next[j]) < 0) ||
			c >= 0 && !(j+1 == len(next) || compareObjects(next[j], next[j+1]) < 0) {
			return nil, false
		}
		switch {
		case c < 0:
			changes = append(changes, change{old: prev[i]})
			i++
		case c > 0:
			changes = append(changes, change{new: next[j]})
			j++
		default:
			changes = append(changes, change{old: prev[i], new: next[j]})
			i, j = i+1, j+1
		}
	}
	return changes, true
}

func compareObjects(a, b *resource.Object) int {
	if c := strings.Compare(a.Meta.Mesh, b.Meta.Mesh); c != 0 {
		return c
	}
	return strings.Compare(a.Meta.Name, b.Meta.Name)
}

func isSorted(objs []*resource.Object) bool {
	for i := 1; i < len(objs); i++ {
		if compareObjects(objs[i-1], objs[i]) >= 0 {
			return false
		}
	}
	return true
}

// serviceKey names a service of a mesh.
type serviceKey struct{ mesh, service string }

// updateServices rebuilds, from prev's, the services the changed
// dataplanes offered or offer, and shares the others. It returns the
// services it rebuilt.
func (ix *Index) updateServices(prev *Index, changes []change) map[serviceKey]bool {
	// removed: the keys of the changed dataplanes whose endpoints go,
	// gone: their inbounds per service and protocol.
	removed := map[string]bool{}
	gone := map[serviceKey]*[numProtocols]int{}
	added := map[serviceKey][]inbound{}
	dirty := map[serviceKey]bool{}
	var ins []inbound
	for _, c := range changes {
		if c.old != nil {
			ins = inboundsOf(ins[:0], c.old)
			for _, in := range ins {
				k := serviceKey{c.old.Meta.Mesh, in.service}
				dirty[k] = true
				if gone[k] == nil {
					gone[k] = &[numProtocols]int{}
				}
				gone[k][in.protocol]++
			}
			if len(ins) > 0 {
				removed[ins[0].endpoint.Dataplane] = true
			}
		}
		if c.new != nil {
			for _, in := range inboundsOf(nil, c.new) {
				k := serviceKey{c.new.Meta.Mesh, in.service}
				dirty[k] = true
				added[k] = append(added[k], in)
			}
		}
	}
	ix.services = maps.Clone(prev.services)
	if ix.services == nil {
		ix.services = map[string]map[string]*service{}
	}
	cloned := map[string]bool{}
	for k := range dirty {
		old := prev.service(k.mesh, k.service)
		s := &service{}
		if old != nil {
			s.inbounds = old.inbounds
			s.endpoints = make([]*meshv1.Endpoint, 0, len(old.endpoints)+len(added[k]))
			for _, ep := range old.endpoints {
				if removed[ep.Dataplane] {
					continue
				}
				s.endpoints = append(s.endpoints, ep)
			}
		}
		// The changed dataplanes' old inbounds go; their new ones are
		// counted again below.
		if g := gone[k]; g != nil {
			for p, n := range g {
				s.inbounds[p] -= n
			}
		}
		for _, in := range added[k] {
			s.endpoints = append(s.endpoints, in.endpoint)
			s.inbounds[in.protocol]++
		}
		if !cloned[k.mesh] {
			cloned[k.mesh] = true
			ix.services[k.mesh] = maps.Clone(ix.services[k.mesh])
			if ix.services[k.mesh] == nil {
				ix.services[k.mesh] = map[string]*service{}
			}
		}
		if len(s.endpoints) == 0 {
			delete(ix.services[k.mesh], k.service)
			continue
		}
		s.seal()
		ix.services[k.mesh][k.service] = s
	}
	for mesh := range cloned {
		if len(ix.services[mesh]) == 0 {
			delete(ix.services, mesh)
		}
	}
	return dirty
}

// indexVIPTables indexes every mesh's virtual addresses and scrape targets.
func (ix *Index) indexVIPTables(dataplanes []*resource.Object) {
	ix.vips = map[string]vipTable{}
	for mesh, list := range indexVIPs(dataplanes) {
		ix.vips[mesh] = vipTable{entries: list}
	}
	for mesh, list := range indexScrapeTargets(ix.meshes, dataplanes) {
		table := ix.vips[mesh]
		table.scrapes = list
		ix.vips[mesh] = table
	}
	for mesh, table := range ix.vips {
		table.version = ix.vipVersion(mesh, table)
		ix.vips[mesh] = table
	}
}

// updateVIPTables updates, from prev's, the tables of the meshes whose
// Mesh or dataplanes changed: the virtual addresses again from the mesh's
// dataplanes when a changed one has some, the scrape targets from the
// changed dataplanes (all of the mesh's when the Mesh changed), and the
// version when anything it covers changed.
func (ix *Index) updateVIPTables(prev *Index, dataplanes []*resource.Object, changes []change, dirty map[serviceKey]bool) {
	ix.vips = maps.Clone(prev.vips)
	if ix.vips == nil {
		ix.vips = map[string]vipTable{}
	}
	touched := map[string][]change{}
	meshChanged := map[string]bool{}
	for name, mi := range ix.inputs.meshes {
		if prev.inputs.meshes[name].mesh != mi.mesh {
			meshChanged[name], touched[name] = true, nil
		}
	}
	for name := range prev.inputs.meshes {
		if _, ok := ix.inputs.meshes[name]; !ok {
			meshChanged[name], touched[name] = true, nil
		}
	}
	for _, c := range changes {
		o := c.new
		if o == nil {
			o = c.old
		}
		touched[o.Meta.Mesh] = append(touched[o.Meta.Mesh], c)
	}
	for k := range dirty {
		touched[k.mesh] = touched[k.mesh]
	}
	for mesh, cs := range touched {
		table := prev.vips[mesh]
		if slices.ContainsFunc(cs, func(c change) bool { return hasVIPs(c.old) || hasVIPs(c.new) }) {
			table.entries = indexVIPs(meshDataplanes(dataplanes, mesh))[mesh]
		}
		switch {
		case meshChanged[mesh]:
			table.scrapes = indexScrapeTargets(ix.meshes, meshDataplanes(dataplanes, mesh))[mesh]
		case len(cs) > 0 && (len(table.scrapes) > 0 || ca.Enabled(ix.meshes[mesh]) != nil):
			table.scrapes = ix.updateScrapes(mesh, table.scrapes, cs)
		}
		if len(table.entries) == 0 && len(table.scrapes) == 0 {
			delete(ix.vips, mesh)
			continue
		}
		table.version = ix.vipVersion(mesh, table)
		ix.vips[mesh] = table
	}
}

// updateScrapes returns the scrape targets of mesh (its Mesh unchanged):
// those of the dataplanes that did not change, and the changed ones' new.
func (ix *Index) updateScrapes(mesh string, scrapes []scrapeTarget, changes []change) []scrapeTarget {
	gone := map[string]bool{}
	var news []*resource.Object
	for _, c := range changes {
		if c.old != nil {
			gone[c.old.Meta.Key().String()] = true
		}
		if c.new != nil {
			news = append(news, c.new)
		}
	}
	add := indexScrapeTargets(ix.meshes, news)[mesh]
	var out []scrapeTarget
	for _, t := range scrapes {
		if gone[t.dataplane] {
			continue
		}
		for len(add) > 0 && compareScrapes(add[0], t) < 0 {
			out = append(out, add[0])
			add = add[1:]
		}
		out = append(out, t)
	}
	return append(out, add...)
}

func hasVIPs(dp *resource.Object) bool {
	if dp == nil {
		return false
	}
	spec := dp.Dataplane()
	if spec == nil || spec.Networking == nil {
		return false
	}
	for _, in := range spec.Networking.Inbound {
		if len(in.VIPs) > 0 {
			return true
		}
	}
	return false
}

// meshDataplanes is the part of dataplanes (in a view's order) of mesh.
func meshDataplanes(dataplanes []*resource.Object, mesh string) []*resource.Object {
	lo, _ := slices.BinarySearchFunc(dataplanes, mesh, func(o *resource.Object, m string) int {
		if c := strings.Compare(o.Meta.Mesh, m); c != 0 {
			return c
		}
		return 1 // the first of the mesh
	})
	hi, _ := slices.BinarySearchFunc(dataplanes, mesh, func(o *resource.Object, m string) int {
		if c := strings.Compare(o.Meta.Mesh, m); c != 0 {
			return c
		}
		return -1 // past the last of the mesh
	})
	return dataplanes[lo:hi]
}
