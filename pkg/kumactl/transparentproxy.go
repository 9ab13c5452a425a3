package kumactl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/transparentproxy"
)

// DefaultKumaDPUID is the UID kuma-dp runs as when --kuma-dp-user and
// --kuma-dp-uid are unset (the reference system's kuma-dp image user).
const DefaultKumaDPUID = 5678

// DefaultMetricsPort is the proxy metrics port the rules never redirect.
const DefaultMetricsPort = uint16(resource.DefaultMetricsPort)

const installTransparentProxyLong = `Install the iptables rules of a transparent proxy in the current network
namespace (as root): the workload's inbound TCP goes to the proxy's inbound
port (--redirect-inbound-port, 15006), its outbound TCP to the proxy's
outbound port (--redirect-outbound-port, 15001). kuma-dp then routes each
connection by its original destination (SO_ORIGINAL_DST); its Dataplane needs
networking.transparentProxying.

Never redirected: the connections of kuma-dp itself (the user of
--kuma-dp-user, a name or a UID, default UID 5678), the control plane
(--kuma-cp-address, its IP or the addresses its name resolves to now), the
proxy's metrics port (--metrics-port, 5670; 0 redirects it too), loopback
traffic of the workload, and the ports and addresses excluded by flag.

The nat table is replaced in one iptables-restore: running it again replaces
the rules of the earlier run, and rules of others stay. --dry-run prints the
rules (iptables-restore input) and changes nothing. IPv4 only; DNS is not
redirected.`

func newInstallTransparentProxyCmd(rc *RootContext) *cobra.Command {
	var (
		f      tpFlags
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "transparent-proxy",
		Short: "Install the iptables rules of a transparent proxy",
		Long:  installTransparentProxyLong,
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := f.config(c)
			if err != nil {
				return err
			}
			if dryRun {
				_, err := fmt.Fprint(rc.Stdout, transparentproxy.Rules(cfg))
				return err
			}
			ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
			defer cancel()
			if err := transparentproxy.Install(ctx, rc.tables(), cfg); err != nil {
				return err
			}
			_, err = fmt.Fprintf(rc.Stderr, "transparent proxy set up: inbound TCP to port %d, outbound TCP to port %d, except UID %d's\n",
				cfg.RedirectInboundPort, cfg.RedirectOutboundPort, cfg.KumaDPUID)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.user, "kuma-dp-user", "", "name or UID of the user kuma-dp runs as: its connections are not redirected (default UID 5678)")
	fl.Uint32Var(&f.uid, "kuma-dp-uid", 0, "UID kuma-dp runs as (--kuma-dp-user takes a UID too)")
	fl.BoolVar(&f.redirectInbound, "redirect-inbound", true, "redirect the inbound traffic to the proxy (off for a gateway)")
	fl.Uint16Var(&f.inboundPort, "redirect-inbound-port", transparentproxy.DefaultRedirectInboundPort, "port of the proxy's inbound redirect listener")
	fl.Uint16Var(&f.outboundPort, "redirect-outbound-port", transparentproxy.DefaultRedirectOutboundPort, "port of the proxy's outbound redirect listener")
	fl.UintSliceVar(&f.excludeInbound, "exclude-inbound-ports", nil, "inbound ports that reach the workload directly (comma-separated)")
	fl.UintSliceVar(&f.excludeOutbound, "exclude-outbound-ports", nil, "outbound ports reached directly (comma-separated)")
	fl.StringSliceVar(&f.excludeOutboundIPs, "exclude-outbound-ips", nil, "outbound addresses or networks (CIDR) reached directly (comma-separated)")
	fl.StringVar(&f.cpAddress, "kuma-cp-address", "", "the control plane (URL, host or IP): reached directly")
	fl.Uint16Var(&f.metricsPort, "metrics-port", DefaultMetricsPort, "the proxy's metrics port: inbound connections to it are not redirected (0: they are)")
	fl.BoolVar(&dryRun, "dry-run", false, "print the rules (iptables-restore input) instead of installing them")
	return cmd
}

func newUninstallCmd(rc *RootContext) *cobra.Command {
	cmd := newGroupCmd("uninstall", "Remove what install set up", "Remove what an install command set up on this machine.")
	var dryRun bool
	tp := &cobra.Command{
		Use:   "transparent-proxy",
		Short: "Remove the iptables rules of a transparent proxy",
		Long: "Remove the transparent proxy's chains (KUMA_MESH_*) and every rule that jumps to them from the nat table of the " +
			"current network namespace; other rules stay. --dry-run prints the nat table it would restore.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(c.Context(), time.Minute)
			defer cancel()
			t := rc.tables()
			if dryRun {
				saved, err := t.Save(ctx)
				if err != nil {
					return fmt.Errorf("reading the nat table: %w", err)
				}
				out, err := transparentproxy.Merge(saved, nil)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(rc.Stdout, out)
				return err
			}
			if err := transparentproxy.Uninstall(ctx, t); err != nil {
				return err
			}
			_, err := fmt.Fprintln(rc.Stderr, "transparent proxy removed")
			return err
		},
	}
	tp.Flags().BoolVar(&dryRun, "dry-run", false, "print the nat table without the transparent proxy's rules instead of restoring it")
	cmd.AddCommand(tp)
	return cmd
}

// tables is how kumactl reads and writes the nat table: iptables-save and
// iptables-restore of the current network namespace.
func (rc *RootContext) tables() transparentproxy.Tables { return transparentproxy.Exec{} }

// tpFlags are the flags of install transparent-proxy.
type tpFlags struct {
	user                            string
	uid                             uint32
	redirectInbound                 bool
	inboundPort, outboundPort       uint16
	metricsPort                     uint16
	excludeInbound, excludeOutbound []uint
	excludeOutboundIPs              []string
	cpAddress                       string
}

// config turns the flags into the rules' settings, naming the flag of
// every error.
func (f *tpFlags) config(c *cobra.Command) (transparentproxy.Config, error) {
	var errs []error
	cfg := transparentproxy.DefaultConfig(DefaultKumaDPUID)
	cfg.RedirectInbound = f.redirectInbound
	cfg.RedirectInboundPort, cfg.RedirectOutboundPort = f.inboundPort, f.outboundPort
	uidSet := c.Flags().Changed("kuma-dp-uid")
	if uidSet {
		cfg.KumaDPUID = f.uid
	}
	if f.user != "" {
		uid, err := lookupUID(f.user)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--kuma-dp-user: %w", err))
		case uidSet && uid != f.uid:
			errs = append(errs, fmt.Errorf("--kuma-dp-user %s is UID %d, --kuma-dp-uid says %d: give one of them", f.user, uid, f.uid))
		default:
			cfg.KumaDPUID = uid
		}
	}
	ports := func(flag string, in []uint) []uint16 {
		out := make([]uint16, 0, len(in))
		for _, p := range in {
			if p == 0 || p > 65535 {
				errs = append(errs, fmt.Errorf("--%s: %d is not a port (1-65535)", flag, p))
				continue
			}
			out = append(out, uint16(p))
		}
		return out
	}
	cfg.ExcludeInboundPorts = ports("exclude-inbound-ports", f.excludeInbound)
	if f.metricsPort != 0 && f.redirectInbound {
		cfg.ExcludeInboundPorts = append(cfg.ExcludeInboundPorts, f.metricsPort)
	}
	cfg.ExcludeOutboundPorts = ports("exclude-outbound-ports", f.excludeOutbound)
	for _, s := range f.excludeOutboundIPs {
		p, err := parsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--exclude-outbound-ips: %w", err))
			continue
		}
		cfg.ExcludeOutboundIPs = append(cfg.ExcludeOutboundIPs, p)
	}
	if f.cpAddress != "" {
		ips, err := controlPlaneIPs(c.Context(), f.cpAddress)
		if err != nil {
			errs = append(errs, fmt.Errorf("--kuma-cp-address: %w", err))
		}
		for _, ip := range ips {
			if ip.Is4() {
				cfg.ExcludeOutboundIPs = append(cfg.ExcludeOutboundIPs, netip.PrefixFrom(ip, 32))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// lookupUID reads a user name or a UID.
func lookupUID(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Errorf("no user %q on this machine (give a UID instead)", s)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has UID %q, which is not a number", s, u.Uid)
	}
	return uint32(n), nil
}

// parsePrefix reads an address or a network.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network (CIDR)", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// controlPlaneIPs are the addresses of a control plane given as a URL, a
// host:port, a host or an IP.
func controlPlaneIPs(ctx context.Context, address string) ([]netip.Addr, error) {
	host := address
	if u, err := url.Parse(address); err == nil && u.Host != "" {
		host = u.Hostname()
	} else if h, _, err := net.SplitHostPort(address); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if host == "" {
		return nil, fmt.Errorf("%q names no host", address)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap())
	}
	return out, nil
}
