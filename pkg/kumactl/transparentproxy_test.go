package kumactl_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/netnstest"
	"github.com/kumametrics/mesh/pkg/transparentproxy"
)

// TestInstallTransparentProxyDryRun: --dry-run prints the rules of the
// flags' settings: kuma-dp's UID (5678 by default, a name or a UID), the
// control plane's address and the metrics port excluded.
func TestInstallTransparentProxyDryRun(t *testing.T) {
	want := func(mod func(*transparentproxy.Config)) string {
		c := transparentproxy.DefaultConfig(5678)
		c.ExcludeInboundPorts = []uint16{5670}
		mod(&c)
		return transparentproxy.Rules(c)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"defaults", nil, want(func(*transparentproxy.Config) {})},
		{"ports and user", []string{"--redirect-inbound-port", "16006", "--redirect-outbound-port", "16001", "--kuma-dp-user", "root"},
			want(func(c *transparentproxy.Config) {
				c.RedirectInboundPort, c.RedirectOutboundPort, c.KumaDPUID = 16006, 16001, 0
			})},
		{"uid", []string{"--kuma-dp-uid", "1234"}, want(func(c *transparentproxy.Config) { c.KumaDPUID = 1234 })},
		{"user as a uid", []string{"--kuma-dp-user", "1234"}, want(func(c *transparentproxy.Config) { c.KumaDPUID = 1234 })},
		{"exclusions", []string{"--exclude-inbound-ports", "22,8443", "--exclude-outbound-ports", "53", "--exclude-outbound-ips", "10.0.0.0/8,192.0.2.7",
			"--kuma-cp-address", "https://192.0.2.9:5678", "--metrics-port", "1234"},
			want(func(c *transparentproxy.Config) {
				c.ExcludeInboundPorts = []uint16{22, 8443, 1234}
				c.ExcludeOutboundPorts = []uint16{53}
				c.ExcludeOutboundIPs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("192.0.2.9/32")}
			})},
		{"metrics port redirected", []string{"--metrics-port", "0"}, want(func(c *transparentproxy.Config) { c.ExcludeInboundPorts = nil })},
		{"no inbound", []string{"--redirect-inbound=false"}, want(func(c *transparentproxy.Config) { c.RedirectInbound, c.ExcludeInboundPorts = false, nil })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runInstall(nil, append([]string{"install", "transparent-proxy", "--dry-run"}, tc.args...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Equal(t, tc.want, r.stdout)
		})
	}
	r := runInstall(nil, "install", "transparent-proxy", "--dry-run")
	require.Contains(t, r.stdout, "-A KUMA_MESH_INBOUND -p tcp -m tcp --dport 5670 -j RETURN")
	require.Contains(t, r.stdout, "-A KUMA_MESH_OUTBOUND -m owner --uid-owner 5678 -j RETURN")
}

// TestInstallTransparentProxyRefusesBadFlags names each bad flag.
func TestInstallTransparentProxyRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--exclude-inbound-ports", "0,70000"}, []string{"--exclude-inbound-ports: 0 is not a port", "--exclude-inbound-ports: 70000 is not a port"}},
		{[]string{"--exclude-outbound-ports", "65536"}, []string{"--exclude-outbound-ports: 65536 is not a port"}},
		{[]string{"--exclude-outbound-ips", "ten"}, []string{`--exclude-outbound-ips: "ten" is not an IP address`}},
		{[]string{"--kuma-dp-user", "no-such-user-here"}, []string{`--kuma-dp-user: no user "no-such-user-here"`}},
		{[]string{"--kuma-dp-user", "root", "--kuma-dp-uid", "7"}, []string{"--kuma-dp-user root is UID 0, --kuma-dp-uid says 7"}},
		{[]string{"--redirect-outbound-port", "15006"}, []string{"redirect outbound port: must differ from the redirect inbound port (15006)"}},
		{[]string{"--redirect-inbound-port", "0"}, []string{"redirect inbound port: must be in the range 1-65535"}},
		{[]string{"--redirect-inbound-port", "99999"}, []string{"--redirect-inbound-port"}},
		{[]string{"--kuma-cp-address", "https://:5678"}, []string{"--kuma-cp-address"}},
	} {
		r := runInstall(nil, append([]string{"install", "transparent-proxy", "--dry-run"}, tc.args...)...)
		require.Equal(t, 1, r.code, "%v: %s", tc.args, r.stdout)
		require.Empty(t, r.stdout, "%v", tc.args)
		for _, w := range tc.want {
			require.Contains(t, r.stderr, w, "%v", tc.args)
		}
	}
}

// TestInstallTransparentProxyInANamespace runs install and uninstall
// transparent-proxy inside a network namespace with the real iptables: the
// rules are there once (also after a second run), the metrics port is
// excluded, and uninstall removes every rule of ours but no other.
func TestInstallTransparentProxyInANamespace(t *testing.T) {
	netnstest.RequireIPTables(t)
	pod := netnstest.New(t).AddPod("pod")
	ctx := context.Background()
	_, err := pod.Run(ctx, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "9", "-j", "RETURN")
	require.NoError(t, err)
	kumactl := func(args ...string) result {
		var r result
		require.NoError(t, pod.Do(func() error { r = runInstall(nil, args...); return nil }))
		return r
	}
	save := func() string {
		out, err := pod.Run(ctx, "iptables-save", "-t", "nat")
		require.NoError(t, err)
		return string(out)
	}

	for range 2 {
		r := kumactl("install", "transparent-proxy", "--kuma-dp-uid", "4321", "--kuma-cp-address", "https://198.51.100.7:5678")
		require.Equal(t, 0, r.code, r.stderr)
	}
	saved := save()
	require.Equal(t, 1, strings.Count(saved, "-A PREROUTING -p tcp -j KUMA_MESH_INBOUND"), saved)
	require.Contains(t, saved, "-A KUMA_MESH_INBOUND -p tcp -m tcp --dport 5670 -j RETURN")
	require.Contains(t, saved, "-A KUMA_MESH_OUTBOUND -m owner --uid-owner 4321 -j RETURN")
	require.Contains(t, saved, "-A KUMA_MESH_OUTBOUND -d 198.51.100.7/32 -j RETURN")
	require.Contains(t, saved, "-A KUMA_MESH_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15001")

	r := kumactl("uninstall", "transparent-proxy", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stdout, "KUMA_MESH")
	require.Contains(t, r.stdout, "-A OUTPUT -p udp -m udp --dport 9 -j RETURN")
	require.Contains(t, save(), "KUMA_MESH", "a dry run changes nothing")

	r = kumactl("uninstall", "transparent-proxy")
	require.Equal(t, 0, r.code, r.stderr)
	saved = save()
	require.NotContains(t, saved, "KUMA_MESH")
	require.Contains(t, saved, "-A OUTPUT -p udp -m udp --dport 9 -j RETURN", "the rule of someone else stays")
}
