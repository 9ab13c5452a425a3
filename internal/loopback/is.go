package loopback

import (
	"net"
	"net/netip"
	"strings"
)

// IsHost tells whether host (a name or an IP address, without port or
// brackets) is localhost or a loopback address.
func IsHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// IsAddr tells whether a host:port address (a RemoteAddr, a listener's
// address) has a loopback IP address. Names do not count: a listener or a
// peer has an address.
func IsAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
