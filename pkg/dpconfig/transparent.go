package dpconfig

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// TransparentListenAddress is where a transparent proxy's redirect
// listeners bind: every address of the workload, as the reference system's.
const TransparentListenAddress = "0.0.0.0"

// vip is one virtual address of a mesh and the service reached at it.
type vip struct {
	addr    netip.AddrPort
	service string
}

// vipTable is every virtual address of a mesh (the vips of its
// dataplanes' inbounds), sorted by address, and its fingerprint.
type vipTable struct {
	entries []vip
	version string
}

// indexVIPs collects the virtual addresses of each mesh's inbounds. An
// address claimed by two services goes to the first by name (Kubernetes
// never gives two Services one ClusterIP; a hand-written Dataplane might).
func indexVIPs(dataplanes []*resource.Object) map[string][]vip {
	claims := map[string]map[netip.AddrPort]string{}
	for _, dp := range dataplanes {
		spec := dp.Dataplane()
		if spec == nil || spec.Networking == nil {
			continue
		}
		for _, in := range spec.Networking.Inbound {
			svc := in.Tags[resource.ServiceTag]
			for _, s := range in.VIPs {
				ap, err := resource.ParseVIP(s)
				if err != nil || svc == "" {
					continue // refused by validation; never stored
				}
				m := claims[dp.Meta.Mesh]
				if m == nil {
					m = map[netip.AddrPort]string{}
					claims[dp.Meta.Mesh] = m
				}
				if have, ok := m[ap]; !ok || svc < have {
					m[ap] = svc
				}
			}
		}
	}
	out := make(map[string][]vip, len(claims))
	for mesh, m := range claims {
		list := make([]vip, 0, len(m))
		for a, s := range m {
			list = append(list, vip{addr: a, service: s})
		}
		slices.SortFunc(list, func(a, b vip) int { return a.addr.Compare(b.addr) })
		out[mesh] = list
	}
	return out
}

// vipVersion fingerprints a mesh's virtual addresses with the endpoints and
// protocol of the services behind them.
func (ix *Index) vipVersion(mesh string, list []vip) string {
	h := xxhash.New()
	var b []byte
	for _, v := range list {
		b = v.addr.AppendTo(b[:0])
		b = append(b, '=')
		b = append(b, v.service...)
		b = append(b, '@')
		b = strconv.AppendUint(b, ix.versions[mesh][v.service], 16)
		b = append(b, ';')
		_, _ = h.Write(b)
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// transparentProxy is the redirect listeners' config of a dataplane, nil
// when it is not transparently proxied.
func transparentProxy(mesh *resource.MeshSpec, nw *resource.Networking) *meshv1.TransparentProxy {
	tp := nw.TransparentProxying
	if tp == nil {
		return nil
	}
	return &meshv1.TransparentProxy{
		Address:              TransparentListenAddress,
		RedirectPortInbound:  tp.InboundPort(),
		RedirectPortOutbound: tp.OutboundPort(),
		OutboundPassthrough:  mesh.OutboundPassthrough(),
	}
}

// isLoopback tells whether an outbound's address is a loopback one: such
// an outbound is a listener of its own even on a transparently proxied
// dataplane (the redirect rules never capture loopback traffic).
func isLoopback(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.IsLoopback()
}

// vipOutbounds are the outbounds a transparently proxied dataplane gets
// from its mesh's virtual addresses, except those its own outbounds have.
func (ix *Index) vipOutbounds(mesh string, own []*meshv1.Outbound) []*meshv1.Outbound {
	table := ix.vips[mesh]
	if len(table.entries) == 0 {
		return nil
	}
	taken := make(map[string]bool, len(own))
	for _, o := range own {
		taken[o.GetName()] = true
	}
	out := make([]*meshv1.Outbound, 0, len(table.entries))
	for _, v := range table.entries {
		addr, port := v.addr.Addr().String(), uint32(v.addr.Port())
		if taken[listenerName("outbound", addr, port)] {
			continue
		}
		out = append(out, ix.outbound(mesh, v.service, addr, port, true))
	}
	return out
}
