// Package dpconfig computes the configuration of one data plane proxy from
// the store's content: its inbounds, its outbounds with the current endpoints
// of each destination service, and its effective metrics endpoint. It is a
// pure function of a store view.
package dpconfig

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

// TypeURL of a ProxyConfig.
const TypeURL = "type.googleapis.com/kuma.mesh.v1.ProxyConfig"

// Protocols of inbounds and outbounds.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// DefaultOutboundAddress is where an outbound listens unless it says otherwise.
const DefaultOutboundAddress = "127.0.0.1"

// Index is what Generate needs to know about a mesh besides the proxy's own
// dataplane: the endpoints of every service. Build it once per store view.
type Index struct {
	meshes map[string]*resource.MeshSpec
	// endpoints by mesh, then service, sorted by address and port.
	endpoints map[string]map[string][]*meshv1.Endpoint
	// protocols by mesh, then service: the protocol all its inbounds agree on.
	protocols map[string]map[string]string
	// versions by mesh, then service: a hash of its endpoints and protocol.
	versions map[string]map[string]uint64
}

// NewIndex indexes meshes and dataplanes.
func NewIndex(meshes, dataplanes []*resource.Object) *Index {
	ix := &Index{
		meshes:    make(map[string]*resource.MeshSpec, len(meshes)),
		endpoints: map[string]map[string][]*meshv1.Endpoint{},
		protocols: map[string]map[string]string{},
	}
	for _, m := range meshes {
		if spec := m.Mesh(); spec != nil {
			ix.meshes[m.Meta.Name] = spec
		}
	}
	for _, dp := range dataplanes {
		spec := dp.Dataplane()
		if spec == nil || spec.Networking == nil {
			continue
		}
		mesh := dp.Meta.Mesh
		if ix.endpoints[mesh] == nil {
			ix.endpoints[mesh] = map[string][]*meshv1.Endpoint{}
			ix.protocols[mesh] = map[string]string{}
		}
		for _, in := range spec.Networking.Inbound {
			svc := in.Tags[resource.ServiceTag]
			if svc == "" {
				continue
			}
			addr := spec.Networking.Address
			if in.Address != "" {
				addr = in.Address
			}
			ix.endpoints[mesh][svc] = append(ix.endpoints[mesh][svc], &meshv1.Endpoint{
				Address: addr, Port: in.Port, Dataplane: dp.Meta.Key().String(),
			})
			p := protocolOf(in.Tags)
			switch have, ok := ix.protocols[mesh][svc]; {
			case !ok:
				ix.protocols[mesh][svc] = p
			case have != p:
				// Inbounds disagree: only plain TCP is safe for all of them.
				ix.protocols[mesh][svc] = ProtocolTCP
			}
		}
	}
	ix.versions = make(map[string]map[string]uint64, len(ix.endpoints))
	for mesh, bySvc := range ix.endpoints {
		ix.versions[mesh] = make(map[string]uint64, len(bySvc))
		for svc, eps := range bySvc {
			slices.SortFunc(eps, func(a, b *meshv1.Endpoint) int {
				if c := strings.Compare(a.Address, b.Address); c != 0 {
					return c
				}
				return int(a.Port) - int(b.Port)
			})
			h := xxhash.New()
			_, _ = h.WriteString(ix.protocols[mesh][svc])
			for _, ep := range eps {
				_, _ = fmt.Fprintf(h, "|%s|%d|%s", ep.Address, ep.Port, ep.Dataplane)
			}
			ix.versions[mesh][svc] = h.Sum64()
		}
	}
	return ix
}

// ServiceVersions fingerprints what dp's config takes from other dataplanes:
// the endpoints and protocol of each service it calls. Equal fingerprints
// (and the same dataplane and mesh) mean an equal config.
func (ix *Index) ServiceVersions(dp *resource.Object) string {
	spec := dp.Dataplane()
	if spec == nil || spec.Networking == nil {
		return ""
	}
	var b []byte
	for _, out := range spec.Networking.Outbound {
		b = strconv.AppendUint(b, ix.versions[dp.Meta.Mesh][out.Tags[resource.ServiceTag]], 16)
		b = append(b, ',')
	}
	return string(b)
}

func protocolOf(tags map[string]string) string {
	switch p := strings.ToLower(tags[resource.ProtocolTag]); p {
	case ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC:
		return p
	default:
		return ProtocolTCP
	}
}

// ClusterName turns a service name into a cluster (statistics) name: every
// character outside [a-zA-Z0-9_-] becomes '_'.
func ClusterName(service string) string {
	var b strings.Builder
	b.Grow(len(service))
	for _, c := range service {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// LocalClusterName names an inbound's application cluster.
func LocalClusterName(servicePort uint32) string {
	return "localhost_" + strconv.FormatUint(uint64(servicePort), 10)
}

func listenerName(direction, address string, port uint32) string {
	return direction + ":" + net.JoinHostPort(address, strconv.FormatUint(uint64(port), 10))
}

// Generate computes the config of a dataplane (mesh and name from dp). It
// returns an error when the dataplane's mesh is unknown.
func Generate(ix *Index, dp *resource.Object) (*meshv1.ProxyConfig, error) {
	mesh := ix.meshes[dp.Meta.Mesh]
	if mesh == nil {
		return nil, fmt.Errorf("mesh %q does not exist", dp.Meta.Mesh)
	}
	spec := dp.Dataplane()
	if spec == nil || spec.Networking == nil {
		return nil, fmt.Errorf("dataplane %s has no networking", dp.Meta.Key())
	}
	nw := spec.Networking
	cfg := &meshv1.ProxyConfig{Mesh: dp.Meta.Mesh, Name: dp.Meta.Name}
	for _, in := range nw.Inbound {
		addr := nw.Address
		if in.Address != "" {
			addr = in.Address
		}
		cfg.Inbounds = append(cfg.Inbounds, &meshv1.Inbound{
			Address:        addr,
			Port:           in.Port,
			ServiceAddress: in.EffectiveServiceAddress(),
			ServicePort:    in.EffectiveServicePort(),
			Tags:           in.Tags,
			Protocol:       protocolOf(in.Tags),
			ClusterName:    LocalClusterName(in.EffectiveServicePort()),
			Name:           listenerName("inbound", addr, in.Port),
		})
	}
	for _, out := range nw.Outbound {
		svc := out.Tags[resource.ServiceTag]
		addr := out.Address
		if addr == "" {
			addr = DefaultOutboundAddress
		}
		protocol := ix.protocols[dp.Meta.Mesh][svc]
		if protocol == "" {
			protocol = ProtocolTCP
		}
		cfg.Outbounds = append(cfg.Outbounds, &meshv1.Outbound{
			Address:     addr,
			Port:        out.Port,
			Service:     svc,
			Protocol:    protocol,
			ClusterName: ClusterName(svc),
			Endpoints:   ix.endpoints[dp.Meta.Mesh][svc],
			Name:        listenerName("outbound", addr, out.Port),
		})
	}
	if eff := resource.EffectiveMetricsConfig(mesh, spec); eff != nil {
		m := &meshv1.Metrics{
			Address:     nw.Address,
			Port:        eff.Port,
			Path:        eff.Path,
			Tags:        eff.Tags,
			TlsMode:     eff.TLSMode,
			FilterRegex: eff.FilterRegex,
			UsedOnly:    eff.UsedOnly,
		}
		for _, a := range eff.Aggregate {
			m.Aggregate = append(m.Aggregate, &meshv1.Metrics_Aggregate{Name: a.Name, Address: a.Address, Port: a.Port, Path: a.Path})
		}
		cfg.Metrics = m
	}
	return cfg, nil
}
