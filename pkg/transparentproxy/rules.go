// Package transparentproxy sets up a transparent proxy's traffic capture:
// iptables rules in the workload's network namespace (the nat table) that
// redirect its inbound TCP to the proxy's inbound port and its outbound TCP
// to the proxy's outbound port, except the proxy's own traffic (by UID),
// loopback traffic and what is excluded by port or address. The rules are
// a pure function of a Config (Rules); Install and Uninstall apply them
// with iptables-save and iptables-restore, replacing the nat table whole,
// so that a second run replaces its rules instead of adding them again
// and rules of others stay. The chain names and layout are the reference
// system's (KUMA_MESH_INBOUND, KUMA_MESH_OUTBOUND and their _REDIRECT
// chains).
package transparentproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kumametrics/mesh/pkg/resource"
)

// The chains the rules make in the nat table.
const (
	ChainInbound          = "KUMA_MESH_INBOUND"
	ChainInboundRedirect  = "KUMA_MESH_INBOUND_REDIRECT"
	ChainOutbound         = "KUMA_MESH_OUTBOUND"
	ChainOutboundRedirect = "KUMA_MESH_OUTBOUND_REDIRECT"
	// chainPrefix starts every chain of ours: what Merge removes.
	chainPrefix = "KUMA_MESH_"
)

// Defaults: the redirect ports a Dataplane's transparentProxying defaults
// to (the reference system's 15006 and 15001).
const (
	DefaultRedirectInboundPort  = uint16(resource.DefaultRedirectPortInbound)
	DefaultRedirectOutboundPort = uint16(resource.DefaultRedirectPortOutbound)
)

// InboundPassthroughSource is the address the proxy connects from when it
// passes an inbound connection through to the workload: the rules let it
// through on the loopback interface, so it is not redirected again.
const InboundPassthroughSource = "127.0.0.6"

// Config is what the rules are made from.
type Config struct {
	// KumaDPUID is the UID kuma-dp runs as: its own connections are never
	// redirected (except to the workload's own addresses, which go through
	// the inbound side as from any other client).
	KumaDPUID uint32
	// RedirectInbound turns the inbound capture on (off for a gateway).
	RedirectInbound      bool
	RedirectInboundPort  uint16
	RedirectOutboundPort uint16
	// ExcludeInboundPorts reach the workload directly (e.g. the proxy's
	// metrics port, ssh).
	ExcludeInboundPorts []uint16
	// ExcludeOutboundPorts and ExcludeOutboundIPs are reached directly
	// (e.g. the control plane).
	ExcludeOutboundPorts []uint16
	ExcludeOutboundIPs   []netip.Prefix
}

// DefaultConfig is the reference system's setup for the UID uid.
func DefaultConfig(uid uint32) Config {
	return Config{
		KumaDPUID:            uid,
		RedirectInbound:      true,
		RedirectInboundPort:  DefaultRedirectInboundPort,
		RedirectOutboundPort: DefaultRedirectOutboundPort,
	}
}

// Validate tells what is wrong with c, naming the setting.
func (c Config) Validate() error {
	var errs []error
	if c.RedirectInboundPort == 0 {
		errs = append(errs, errors.New("redirect inbound port: must be in the range 1-65535"))
	}
	if c.RedirectOutboundPort == 0 {
		errs = append(errs, errors.New("redirect outbound port: must be in the range 1-65535"))
	}
	if c.RedirectInboundPort != 0 && c.RedirectInboundPort == c.RedirectOutboundPort {
		errs = append(errs, fmt.Errorf("redirect outbound port: must differ from the redirect inbound port (%d)", c.RedirectInboundPort))
	}
	for _, p := range c.ExcludeInboundPorts {
		if p == 0 {
			errs = append(errs, errors.New("excluded inbound ports: 0 is not a port"))
		}
		if p == c.RedirectInboundPort && c.RedirectInbound {
			errs = append(errs, fmt.Errorf("excluded inbound ports: %d is the redirect inbound port", p))
		}
	}
	for _, p := range c.ExcludeOutboundPorts {
		if p == 0 {
			errs = append(errs, errors.New("excluded outbound ports: 0 is not a port"))
		}
	}
	for _, ip := range c.ExcludeOutboundIPs {
		if !ip.IsValid() || !ip.Addr().Is4() {
			errs = append(errs, fmt.Errorf("excluded outbound IPs: %s is not an IPv4 address or network (the rules are IPv4 only)", ip))
		}
	}
	return errors.Join(errs...)
}

// Rules renders c as iptables-restore input for the nat table: the four
// chains and every rule of ours, nothing else (Merge puts them into a
// saved table). It expects a valid c.
func Rules(c Config) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, chain := range []string{ChainInbound, ChainInboundRedirect, ChainOutbound, ChainOutboundRedirect} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", chain)
	}
	b.WriteString(strings.Join(rules(c), "\n"))
	b.WriteString("\nCOMMIT\n")
	return b.String()
}

// rules are the -A lines of c.
func rules(c Config) []string {
	uid := strconv.FormatUint(uint64(c.KumaDPUID), 10)
	var r []string
	add := func(format string, args ...any) { r = append(r, fmt.Sprintf(format, args...)) }
	// Connections from other hosts to the workload.
	if c.RedirectInbound {
		add("-A PREROUTING -p tcp -j %s", ChainInbound)
	}
	// Connections the workload (or the proxy) opens.
	add("-A OUTPUT -p tcp -j %s", ChainOutbound)

	for _, p := range sortedPorts(c.ExcludeInboundPorts) {
		add("-A %s -p tcp -m tcp --dport %d -j RETURN", ChainInbound, p)
	}
	add("-A %s -p tcp -j %s", ChainInbound, ChainInboundRedirect)
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInboundRedirect, c.RedirectInboundPort)

	// The proxy passing an inbound connection through to the workload.
	add("-A %s -s %s/32 -o lo -j RETURN", ChainOutbound, InboundPassthroughSource)
	// The proxy connecting to the workload's own address (it calls a
	// service one of whose endpoints is this workload): through the
	// inbound side, as any other client.
	add("-A %s ! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner %s -j %s", ChainOutbound, uid, ChainInboundRedirect)
	// The workload talking to itself.
	add("-A %s -o lo -m owner ! --uid-owner %s -j RETURN", ChainOutbound, uid)
	// Everything else the proxy opens: already proxied.
	add("-A %s -m owner --uid-owner %s -j RETURN", ChainOutbound, uid)
	for _, p := range sortedPorts(c.ExcludeOutboundPorts) {
		add("-A %s -p tcp -m tcp --dport %d -j RETURN", ChainOutbound, p)
	}
	for _, ip := range sortedPrefixes(c.ExcludeOutboundIPs) {
		add("-A %s -d %s -j RETURN", ChainOutbound, ip.Masked())
	}
	add("-A %s -d 127.0.0.1/32 -j RETURN", ChainOutbound)
	add("-A %s -j %s", ChainOutbound, ChainOutboundRedirect)
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainOutboundRedirect, c.RedirectOutboundPort)
	return r
}

func sortedPorts(ports []uint16) []uint16 {
	out := slices.Clone(ports)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// Merge returns the nat table of saved (iptables-save -t nat output; empty
// when the table does not exist yet) as iptables-restore input without any
// chain of ours or rule that jumps to one, followed by the rules of c (none
// when c is nil: the rules are removed). Everything else stays as saved, in
// order.
func Merge(saved string, c *Config) (string, error) {
	var decls, body []string
	inNat, seenNat := false, false
	for i, line := range strings.Split(saved, "\n") {
		switch {
		case line == "*nat":
			if seenNat {
				return "", fmt.Errorf("iptables-save output, line %d: a second nat table", i+1)
			}
			inNat, seenNat = true, true
		case !inNat:
		case line == "COMMIT":
			inNat = false
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if !strings.HasPrefix(name, chainPrefix) {
				decls = append(decls, line)
			}
		case strings.HasPrefix(line, "-A "):
			if !ours(line) {
				body = append(body, line)
			}
		case line == "" || strings.HasPrefix(line, "#"):
		default:
			return "", fmt.Errorf("iptables-save output, line %d: unexpected %q in the nat table", i+1, line)
		}
	}
	if inNat {
		return "", errors.New("iptables-save output: the nat table has no COMMIT")
	}
	if !seenNat {
		decls = []string{":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"}
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, d := range decls {
		b.WriteString(d + "\n")
	}
	if c != nil {
		for _, chain := range []string{ChainInbound, ChainInboundRedirect, ChainOutbound, ChainOutboundRedirect} {
			fmt.Fprintf(&b, ":%s - [0:0]\n", chain)
		}
	}
	for _, l := range body {
		b.WriteString(l + "\n")
	}
	if c != nil {
		for _, l := range rules(*c) {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String(), nil
}

// ours tells whether a rule belongs to our chains or jumps to one.
func ours(rule string) bool {
	f := strings.Fields(rule)
	if len(f) > 1 && strings.HasPrefix(f[1], chainPrefix) {
		return true
	}
	for i := 2; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g" || f[i] == "--jump" || f[i] == "--goto") && strings.HasPrefix(f[i+1], chainPrefix) {
			return true
		}
	}
	return false
}
