// Package loopback tells whether a host or an address stays on the local
// machine: localhost, 127.0.0.0/8 or ::1 (IPv4-mapped forms included). The
// control plane and its clients use it to decide where a credential may
// travel without TLS, and who a loopback caller is.
package loopback

import (
	"net"
	"net/netip"
	"strings"
)

// Host tells whether host (a name or an IP address, without port or
// brackets) is localhost or a loopback address.
func Host(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// Addr tells whether a host:port address (a RemoteAddr, a listener's
// address) has a loopback IP address. Names do not count: a listener or a
// peer has an address.
func Addr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
