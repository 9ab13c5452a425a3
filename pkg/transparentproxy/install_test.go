package transparentproxy

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/netnstest"
)

const dpUID = 4242

// acceptor records which listener got a connection.
type acceptor struct {
	ln  net.Listener
	got chan string // the remote address of each accepted connection
}

func accepting(t *testing.T, ln net.Listener) *acceptor {
	t.Helper()
	a := &acceptor{ln: ln, got: make(chan string, 16)}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.got <- c.RemoteAddr().String()
			_ = c.Close()
		}
	}()
	return a
}

// lands dials with dial and reports which of the acceptors took the
// connection (nil: none did).
func lands(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr string, acceptors ...*acceptor) *acceptor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer c.Close()
	local := c.LocalAddr().String()
	deadline := time.After(10 * time.Second)
	for {
		for _, a := range acceptors {
			select {
			case remote := <-a.got:
				if remote == local {
					return a
				}
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatalf("connected to %s, but no listener saw the connection from %s", addr, local)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestInstallRedirectsInsideANamespace applies the rules with
// iptables-restore in a pod's namespace and checks what they capture:
// outbound TCP to the outbound port unless it is the proxy's own (by UID),
// to an excluded address or port, or loopback; inbound TCP to the inbound
// port unless its port is excluded. A second install replaces the first;
// uninstall removes them and keeps the rules of others.
func TestInstallRedirectsInsideANamespace(t *testing.T) {
	netnstest.RequireIPTables(t)
	n := netnstest.New(t)
	pod := n.AddPod("pod")
	ctx := context.Background()
	inPod := func(f func() error) { require.NoError(t, pod.Do(f)) }

	// A rule of someone else, before ours.
	_, err := pod.Run(ctx, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN")
	require.NoError(t, err)

	listen := func(addr string) *acceptor {
		ln, err := pod.Listen("tcp", addr)
		require.NoError(t, err)
		return accepting(t, ln)
	}
	outbound := listen("0.0.0.0:15001")
	inbound := listen("0.0.0.0:15006")
	app := listen("0.0.0.0:5670")
	hostLn, err := net.Listen("tcp", net.JoinHostPort(n.Gateway.String(), "0"))
	require.NoError(t, err)
	host := accepting(t, hostLn)
	hostPort := hostLn.Addr().(*net.TCPAddr).Port
	excludedLn, err := net.Listen("tcp", net.JoinHostPort(n.Gateway.String(), "0"))
	require.NoError(t, err)
	excludedPort := excludedLn.Addr().(*net.TCPAddr).Port
	hostExcluded := accepting(t, excludedLn)

	c := DefaultConfig(dpUID)
	c.ExcludeInboundPorts = []uint16{5670}
	c.ExcludeOutboundPorts = []uint16{uint16(excludedPort)}
	inPod(func() error { return Install(ctx, Exec{}, c) })
	inPod(func() error { return Install(ctx, Exec{}, c) })

	all := []*acceptor{outbound, inbound, app, host, hostExcluded}
	asRoot := pod.DialContext
	asProxy := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return pod.DialAs(ctx, dpUID, netip.Addr{}, network, addr)
	}
	hostAddr := net.JoinHostPort(n.Gateway.String(), strconv.Itoa(hostPort))
	var d net.Dialer

	require.Same(t, outbound, lands(t, asRoot, net.JoinHostPort(n.ServiceIP(10).String(), "80"), all...), "a ClusterIP: captured")
	require.Same(t, outbound, lands(t, asRoot, hostAddr, all...), "any address: captured")
	require.Same(t, host, lands(t, asProxy, hostAddr, all...), "the proxy's own connection: not captured")
	require.Same(t, hostExcluded, lands(t, asRoot, net.JoinHostPort(n.Gateway.String(), strconv.Itoa(excludedPort)), all...), "an excluded port: not captured")
	require.Same(t, app, lands(t, asRoot, "127.0.0.1:5670", all...), "loopback: not captured")
	require.Same(t, app, lands(t, asRoot, net.JoinHostPort(pod.IP.String(), "5670"), all...), "the workload's own address: not captured")
	require.Same(t, inbound, lands(t, asProxy, net.JoinHostPort(pod.IP.String(), "8080"), all...),
		"the proxy to the workload's own address: through the inbound side")
	require.Same(t, inbound, lands(t, d.DialContext, net.JoinHostPort(pod.IP.String(), "8080"), all...), "inbound: captured")
	require.Same(t, app, lands(t, d.DialContext, net.JoinHostPort(pod.IP.String(), "5670"), all...), "an excluded inbound port: not captured")

	// The proxy passing an inbound connection through, from 127.0.0.6.
	passthrough := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return pod.DialAs(ctx, dpUID, netip.MustParseAddr(InboundPassthroughSource), network, addr)
	}
	require.Same(t, app, lands(t, passthrough, net.JoinHostPort(pod.IP.String(), "5670"), all...))

	saved, err := pod.Run(ctx, "iptables-save", "-t", "nat")
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(saved), "-A PREROUTING -p tcp -j KUMA_MESH_INBOUND"), "installed twice, present once:\n%s", saved)
	require.Equal(t, 1, strings.Count(string(saved), "REDIRECT --to-ports 15001"), "%s", saved)

	// Another install replaces the rules: the outbound port moves.
	c.RedirectOutboundPort = 15002
	inPod(func() error { return Install(ctx, Exec{}, c) })
	require.Nil(t, lands(t, asRoot, net.JoinHostPort(n.ServiceIP(10).String(), "80"), all...), "nothing listens on the new port")
	saved, err = pod.Run(ctx, "iptables-save", "-t", "nat")
	require.NoError(t, err)
	require.NotContains(t, string(saved), "--to-ports 15001")
	require.Equal(t, 1, strings.Count(string(saved), "REDIRECT --to-ports 15002"))

	inPod(func() error { return Uninstall(ctx, Exec{}) })
	saved, err = pod.Run(ctx, "iptables-save", "-t", "nat")
	require.NoError(t, err)
	require.NotContains(t, string(saved), "KUMA_MESH")
	require.Contains(t, string(saved), "-A OUTPUT -p udp -m udp --dport 9 -j RETURN", "the rule of someone else stays")
	require.Same(t, host, lands(t, asRoot, hostAddr, all...), "uninstalled: nothing is captured")
}
