// Package dpconfig computes the configuration of one data plane proxy from
// the store's content: its inbounds, its outbounds with the current endpoints
// of each destination service, its effective metrics endpoint and, for a
// transparently proxied dataplane, its redirect listeners and the mesh's
// virtual addresses (the vips of inbounds) as outbounds. It is a
// pure function of a store view.
package dpconfig

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/resource"
)

var marshal = proto.MarshalOptions{Deterministic: true}

// TypeURL of a ProxyConfig.
const TypeURL = "type.googleapis.com/kuma.mesh.v1.ProxyConfig"

// What both ends of the dataplane server's connection agree on, besides
// TypeURL: defined here, not in pkg/dpserver, so that kuma-dp does not link
// the control plane's server.
const (
	// MetadataDataplane is the node metadata field carrying the proxy's
	// Dataplane resource, as JSON in the REST API's shape.
	MetadataDataplane = "dataplane.resource"
	// ServerCAFile is the dataplane server's CA certificate in the control
	// plane's work directory, for proxies to trust (kuma-dp --ca-cert-file).
	ServerCAFile = "dp-server-ca.pem"
)

// Protocols of inbounds and outbounds.
const (
	ProtocolTCP   = "tcp"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolGRPC  = "grpc"
)

// DefaultOutboundAddress is where an outbound listens unless it says otherwise.
const DefaultOutboundAddress = "127.0.0.1"

// Inputs are the store content a generation reads.
type Inputs struct {
	Meshes, Dataplanes, TrafficPermissions, Secrets []*resource.Object
	// Transitions holds, per mesh, when the control plane saw its mTLS
	// switch on or off; absent when no switch was seen.
	Transitions map[string]time.Time
}

// Windows of an mTLS switch: outbounds change mode SwitchDelay after it,
// inbounds accept both TLS and plain text until PermissiveWindow after it.
const (
	SwitchDelay      = 5 * time.Second
	PermissiveWindow = 15 * time.Second
)

// MeshVersion fingerprints what configs take from their mesh besides the
// Mesh resource itself: mTLS material and switches, and permissions.
func (ix *Index) MeshVersion(mesh string) string { return ix.meshVersions[mesh] }

// mtlsOf is a mesh's MTLS block: nil when the mesh has no mTLS and no
// switch was seen.
func mtlsOf(mesh string, spec *resource.MeshSpec, secrets ca.Secrets, transitions map[string]time.Time) *meshv1.MTLS {
	enabled := ca.Enabled(spec)
	switched, hasSwitch := transitions[mesh]
	if enabled == nil && !hasSwitch {
		return nil
	}
	bundle, version := ca.TrustBundle(secrets, mesh, spec)
	out := &meshv1.MTLS{
		Enabled:     enabled != nil && version != "",
		TrustBundle: bundle,
		CaVersion:   version,
	}
	if enabled != nil {
		out.CertLifetimeSeconds = int64(ca.WorkloadLifetime(enabled) / time.Second)
	}
	if hasSwitch {
		out.SwitchAt = switched.Add(SwitchDelay).UnixMilli()
		out.PermissiveUntil = switched.Add(PermissiveWindow).UnixMilli()
	}
	return out
}

// ServiceVersions fingerprints what dp's config takes from other dataplanes:
// the endpoints and protocol of each service it calls, and for a
// transparently proxied dataplane the mesh's virtual addresses. Equal
// fingerprints (and the same dataplane and mesh) mean an equal config.
func (ix *Index) ServiceVersions(dp *resource.Object) string {
	spec := dp.Dataplane()
	if spec == nil || spec.Networking == nil {
		return ""
	}
	var b []byte
	for _, out := range spec.Networking.Outbound {
		b = strconv.AppendUint(b, ix.service(dp.Meta.Mesh, out.Tags[resource.ServiceTag]).versionOrZero(), 16)
		b = append(b, ',')
	}
	if spec.Networking.TransparentProxying != nil {
		b = append(b, "vips:"...)
		b = append(b, ix.vips[dp.Meta.Mesh].version...)
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

// outbound is the outbound of a dataplane of mesh to svc at addr:port.
func (ix *Index) outbound(mesh, svc, addr string, port uint32, transparent bool) *meshv1.Outbound {
	protocol, endpoints := ProtocolTCP, []*meshv1.Endpoint(nil)
	if s := ix.service(mesh, svc); s != nil {
		protocol, endpoints = s.protocol, s.endpoints
	}
	return &meshv1.Outbound{
		Address:     addr,
		Port:        port,
		Service:     svc,
		Protocol:    protocol,
		ClusterName: ClusterName(svc),
		Endpoints:   endpoints,
		Name:        listenerName("outbound", addr, port),
		Transparent: transparent,
	}
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
			AllowedSources: AllowedSources(ix.permissions[dp.Meta.Mesh], in.Tags),
		})
	}
	transparent := nw.TransparentProxying != nil
	for _, out := range nw.Outbound {
		addr := out.Address
		if addr == "" {
			addr = DefaultOutboundAddress
		}
		cfg.Outbounds = append(cfg.Outbounds, ix.outbound(dp.Meta.Mesh, out.Tags[resource.ServiceTag], addr, out.Port, transparent && !isLoopback(addr)))
	}
	if transparent {
		cfg.TransparentProxy = transparentProxy(mesh, nw)
		for _, in := range cfg.Inbounds {
			in.Transparent = true
		}
		cfg.Outbounds = append(cfg.Outbounds, ix.vipOutbounds(dp.Meta.Mesh, dp.Meta.Key().String(), cfg.Outbounds)...)
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
		m.AllowedSources = AllowedSources(ix.permissions[dp.Meta.Mesh], eff.Tags)
		m.Addresses = []string{nw.Address}
		if nw.AdvertisedAddress != "" && nw.AdvertisedAddress != nw.Address {
			m.Addresses = append(m.Addresses, nw.AdvertisedAddress)
		}
		cfg.Metrics = m
	}
	cfg.Mtls = ix.mtls[dp.Meta.Mesh]
	return cfg, nil
}
