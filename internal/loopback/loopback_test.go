package loopback

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHostsAndNetsAreDistinct(t *testing.T) {
	seenHosts := map[string]bool{}
	seenNets := map[string]bool{}
	for range 500 {
		h := Host()
		require.False(t, seenHosts[h], "%s handed out twice", h)
		seenHosts[h] = true
		a := netip.MustParseAddr(h)
		require.True(t, a.Is4() && a.IsLoopback(), h)
		require.NotEqual(t, byte(0), a.As4()[1], "127.0.x.x is left to the machine's own use")

		n := Net()
		require.False(t, seenNets[n], "%s handed out twice", n)
		seenNets[n] = true
		require.True(t, netip.MustParseAddr(n+".1").IsLoopback(), n)
	}
	for h := range seenHosts {
		require.False(t, seenNets[h[:strings.LastIndexByte(h, '.')]], "host %s lies in a network handed out whole", h)
	}
	// Well-known ports can be bound on two of them at once.
	a, err := net.Listen("tcp", net.JoinHostPort(Host(), "5670"))
	require.NoError(t, err)
	defer a.Close()
	b, err := net.Listen("tcp", net.JoinHostPort(Net()+".7", "5670"))
	require.NoError(t, err)
	defer b.Close()
}
