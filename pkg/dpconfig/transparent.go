package dpconfig

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
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
// dataplanes' inbounds), sorted by address, its metrics endpoints served
// over mTLS, and their fingerprint.
type vipTable struct {
	entries []vip
	scrapes []scrapeTarget
	version string
}

// scrapeTarget is an address of a dataplane of a mesh with mTLS on that a
// peer reaches directly, not through a service: its metrics endpoint
// served over mTLS (tls.mode activeMTLSBackend), or an inbound at the
// dataplane's own address. A transparently proxied client (the Prometheus
// that `kumactl install metrics` puts in the mesh, scraping proxies and
// prometheus.io/scrape workloads) connects to it in plain text, and its
// own proxy carries the connection over mTLS with the client's identity,
// which the target's TrafficPermissions judge.
type scrapeTarget struct {
	addr netip.AddrPort
	// dataplane is the target's key (mesh/name).
	dataplane string
	// service is the identity its certificate proves (its first
	// inbound's service; for an inbound, the inbound's).
	service string
	// cluster reaches this address alone.
	cluster string
}

// DirectClusterName names the cluster through which a transparently
// proxied dataplane of an mTLS mesh reaches another one's inbound at its
// own address (port), over mTLS.
func DirectClusterName(dataplane string, port uint32) string {
	return "direct_" + ClusterName(dataplane) + "_" + strconv.FormatUint(uint64(port), 10)
}

// ScrapeClusterName names the cluster through which a transparently
// proxied scraper reaches a dataplane's metrics endpoint over mTLS.
func ScrapeClusterName(dataplane string) string { return "metrics_" + ClusterName(dataplane) }

// indexScrapeTargets collects, per mesh with mTLS on, the metrics endpoints
// served over mTLS and the inbounds at their dataplanes' own addresses,
// sorted by address.
func indexScrapeTargets(meshes map[string]*resource.MeshSpec, dataplanes []*resource.Object) map[string][]scrapeTarget {
	out := map[string][]scrapeTarget{}
	for _, dp := range dataplanes {
		mesh := meshes[dp.Meta.Mesh]
		spec := dp.Dataplane()
		if mesh == nil || ca.Enabled(mesh) == nil || spec == nil || spec.Networking == nil || len(spec.Networking.Inbound) == 0 {
			continue
		}
		addr, err := netip.ParseAddr(spec.Networking.Address)
		if err != nil {
			continue
		}
		key := dp.Meta.Key().String()
		add := func(ap netip.AddrPort, svc, cluster string) {
			if svc != "" && ap.Port() != 0 {
				out[dp.Meta.Mesh] = append(out[dp.Meta.Mesh], scrapeTarget{addr: ap, dataplane: key, service: svc, cluster: cluster})
			}
		}
		// Its metrics endpoint, when served over mTLS, proving its first
		// inbound's service.
		if eff := resource.EffectiveMetricsConfig(mesh, spec); eff != nil && eff.TLSMode == resource.TLSModeActiveMTLSBackend {
			add(netip.AddrPortFrom(addr, uint16(eff.Port)), spec.Networking.Inbound[0].Tags[resource.ServiceTag], ScrapeClusterName(key))
		}
		// Its inbounds at their own address: a scrape of the workload
		// (prometheus.io/scrape) reaches the inbound over mTLS, judged by
		// the permissions of the inbound's service.
		for _, in := range spec.Networking.Inbound {
			inAddr := addr
			if a, err := netip.ParseAddr(in.Address); err == nil {
				inAddr = a
			}
			add(netip.AddrPortFrom(inAddr, uint16(in.Port)), in.Tags[resource.ServiceTag], DirectClusterName(key, in.Port))
		}
	}
	for _, list := range out {
		slices.SortFunc(list, compareScrapes)
	}
	return out
}

// compareScrapes orders scrape targets by address, then dataplane (then
// the rest, so that the order does not depend on the dataplanes').
func compareScrapes(a, b scrapeTarget) int {
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	if c := strings.Compare(a.dataplane, b.dataplane); c != 0 {
		return c
	}
	if c := strings.Compare(a.cluster, b.cluster); c != 0 {
		return c
	}
	return strings.Compare(a.service, b.service)
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
// protocol of the services behind them, and its scrape targets.
func (ix *Index) vipVersion(mesh string, table vipTable) string {
	h := xxhash.New()
	var b []byte
	for _, v := range table.entries {
		b = v.addr.AppendTo(b[:0])
		b = append(b, '=')
		b = append(b, v.service...)
		b = append(b, '@')
		b = strconv.AppendUint(b, ix.service(mesh, v.service).versionOrZero(), 16)
		b = append(b, ';')
		_, _ = h.Write(b)
	}
	for _, t := range table.scrapes {
		b = t.addr.AppendTo(b[:0])
		b = append(b, '>')
		b = append(b, t.dataplane...)
		b = append(b, '@')
		b = append(b, t.service...)
		b = append(b, '/')
		b = append(b, t.cluster...)
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

// vipOutbounds are the outbounds a transparently proxied dataplane (self,
// mesh/name) gets from its mesh's virtual addresses, except those its own
// outbounds have, and from the other dataplanes' metrics endpoints served
// over mTLS (one cluster each, to that endpoint alone).
func (ix *Index) vipOutbounds(mesh, self string, own []*meshv1.Outbound) []*meshv1.Outbound {
	table := ix.vips[mesh]
	if len(table.entries) == 0 && len(table.scrapes) == 0 {
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
	for _, o := range out {
		taken[o.GetName()] = true
	}
	for _, t := range table.scrapes {
		addr, port := t.addr.Addr().String(), uint32(t.addr.Port())
		name := listenerName("outbound", addr, port)
		// Loopback is never captured; an address two dataplanes claim
		// (hand-written ones) goes to the first by name.
		if t.dataplane == self || taken[name] || t.addr.Addr().IsLoopback() {
			continue
		}
		taken[name] = true
		out = append(out, &meshv1.Outbound{
			Address: addr, Port: port, Service: t.service, Protocol: ProtocolTCP,
			ClusterName: t.cluster,
			Endpoints:   []*meshv1.Endpoint{{Address: addr, Port: port, Dataplane: t.dataplane}},
			Name:        listenerName("outbound", addr, port),
			Transparent: true,
		})
	}
	return out
}
