// Package netnstest gives tests network namespaces that play Kubernetes
// pods on this machine: a Network is a Linux bridge on the host with an
// address of a test range, and each Pod is a network namespace joined to it
// by a veth pair, with an address of its own and a loopback interface.
// Tests run processes inside a pod (as a chosen UID, as kuma-dp runs), open
// sockets inside it from the test process (Do, DialContext, Listen), and
// reach pods from the host.
//
// Addresses come from ranges that no real network uses (RFC 2544's
// benchmarking block): pods from 198.18.0.0/16, one /24 per Network (its .1
// is the host's address on the bridge); fake Service ClusterIPs from
// 198.19.0.0/16, one /24 per Network (ServiceIP). A pod has no default
// route: it reaches the other pods and the host on its /24 and the
// ClusterIP range through the host, where a blackhole route drops it, so a
// connection that no transparent proxy captured never leaves the machine.
// (A blackhole route inside the pod would make connect() fail with EINVAL
// before any iptables rule saw a packet, so the pod cannot have one.)
//
// Everything a Network creates (namespaces, bridge, veths, routes, the
// processes started in its pods) is removed at the test's cleanup, also
// after a failure; what a killed earlier run left behind is swept by name
// (every name carries the creating process's id) when a Network is made.
// Needs root and iproute2, nsenter and setpriv; Require skips a test
// without them, or fails it with CI=true.
package netnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/internal/testproc"
)

// The address ranges of the test networks.
var (
	PodRange     = netip.MustParsePrefix("198.18.0.0/16")
	ServiceRange = netip.MustParsePrefix("198.19.0.0/16")
)

// Names of what a Network creates: netns kmt-<pid>-<n>, bridge kb<pid>-<n>,
// host veth kv<pid>-<n> (interface names have at most 15 characters).
const (
	nsPrefix     = "kmt-"
	bridgePrefix = "kb"
	vethPrefix   = "kv"
	// lockDir holds one file per /24 in use, naming its process.
	lockDir  = "/run/kmt-netnstest"
	netnsDir = "/run/netns"
)

// seq numbers the namespaces and interfaces of this process.
var seq atomic.Int64

// tools are the programs a Network runs.
var tools = []string{"ip", "nsenter", "setpriv"}

// Available tells why network namespaces cannot be made here (nil: they can).
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing programs: %s (Debian: iproute2, util-linux)", strings.Join(missing, ", "))
	}
	return nil
}

// Require skips the test when network namespaces cannot be made here, or
// fails it when CI=true.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		testproc.SkipOrFail(t, "netnstest: %v", err)
	}
}

// RequireIPTables is Require, and also skips (fails with CI=true) the test
// when iptables, iptables-save or iptables-restore is missing.
func RequireIPTables(t testing.TB) {
	t.Helper()
	Require(t)
	for _, p := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(p); err != nil {
			testproc.SkipOrFail(t, "netnstest: %s is missing (Debian: apt-get install iptables; scripts/test-deps.sh does)", p)
		}
	}
}

// ServeEcho echoes back what every connection of ln sends, until ln closes.
func ServeEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// Network is a bridge on the host and the pods joined to it.
type Network struct {
	t testing.TB
	// Subnet is the pods' /24; Gateway (its .1) is the host's address on
	// the bridge, which the pods reach.
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Services is the /24 of fake ClusterIPs, blackholed on the host.
	Services netip.Prefix
	bridge   string
	lockFile string

	mu   sync.Mutex
	pods []*Pod
}

var sweepOnce sync.Once

// New makes a Network and removes it at the test's cleanup.
func New(t testing.TB) *Network {
	t.Helper()
	Require(t)
	sweepOnce.Do(func() { Sweep() })
	n := &Network{t: t}
	t.Cleanup(n.remove)
	third, lock, err := claimSubnet()
	if err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	n.lockFile = lock
	n.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, third, 0}), 24)
	n.Gateway = netip.AddrFrom4([4]byte{198, 18, third, 1})
	n.Services = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, third, 0}), 24)
	n.bridge = fmt.Sprintf("%s%d-%d", bridgePrefix, os.Getpid(), seq.Add(1))
	n.must("ip", "link", "add", n.bridge, "type", "bridge")
	n.must("ip", "addr", "add", n.Gateway.String()+"/24", "dev", n.bridge)
	n.must("ip", "link", "set", n.bridge, "up")
	// The metric names the owner, so that Sweep knows whose it is.
	n.must("ip", "route", "add", "blackhole", n.Services.String(), "metric", strconv.Itoa(os.Getpid()))
	return n
}

// claimSubnet picks a free /24 (its third octet) and locks it for this
// process: one file per /24 in lockDir, created exclusively.
func claimSubnet() (byte, string, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return 0, "", err
	}
	for range 500 {
		third := byte(1 + rand.IntN(254))
		path := filepath.Join(lockDir, strconv.Itoa(int(third)))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			if testproc.OwnerGone(path) {
				_ = os.Remove(path) // a dead run's: free again after the sweep
			}
			continue
		}
		if err != nil {
			return 0, "", err
		}
		_, err = f.WriteString(strconv.Itoa(os.Getpid()))
		_ = f.Close()
		if err != nil {
			return 0, "", err
		}
		return third, path, nil
	}
	return 0, "", errors.New("no free /24 in " + PodRange.String())
}

// ServiceIP is the i-th address of the network's ClusterIP range (1–254).
func (n *Network) ServiceIP(i int) netip.Addr {
	b := n.Services.Addr().As4()
	b[3] = byte(i)
	return netip.AddrFrom4(b)
}

// Pod is a network namespace on the Network.
type Pod struct {
	// Name is the test's name for it; NS the namespace's (/run/netns/NS).
	Name string
	NS   string
	// IP is its address on the Network.
	IP   netip.Addr
	veth string
	n    *Network
}

// AddPod makes a namespace with a veth on the bridge, the next address of
// the subnet, loopback up and a route to the ClusterIP range via the host.
func (n *Network) AddPod(name string) *Pod {
	n.t.Helper()
	p, err := n.NewPod(name)
	if err != nil {
		n.t.Fatalf("%v", err)
	}
	return p
}

// NewPod is AddPod for callers outside the test's goroutine (such as a
// node agent): it returns an error instead of failing the test. The pod is
// removed with the Network, or earlier by Remove.
func (n *Network) NewPod(name string) (*Pod, error) {
	id := seq.Add(1)
	n.mu.Lock()
	b := n.Subnet.Addr().As4()
	b[3] = byte(2 + len(n.pods))
	p := &Pod{
		Name: name, NS: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), id),
		IP: netip.AddrFrom4(b), veth: fmt.Sprintf("%s%d-%d", vethPrefix, os.Getpid(), id), n: n,
	}
	n.pods = append(n.pods, p)
	n.mu.Unlock()
	for _, args := range [][]string{
		{"ip", "netns", "add", p.NS},
		{"ip", "link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.NS},
		{"ip", "link", "set", p.veth, "master", n.bridge, "up"},
		{"ip", "-n", p.NS, "addr", "add", p.IP.String() + "/24", "dev", "eth0"},
		{"ip", "-n", p.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", p.NS, "link", "set", "lo", "up"},
		{"ip", "-n", p.NS, "route", "add", n.Services.String(), "via", n.Gateway.String()},
	} {
		if out, err := run(args...); err != nil {
			return nil, fmt.Errorf("netnstest: pod %s: %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	return p, nil
}

// Remove kills what runs in the pod and deletes its namespace and veth
// before the Network goes (its address is not given out again).
func (p *Pod) Remove() {
	removeNamespace(p.NS)
	_, _ = run("ip", "link", "del", p.veth)
}

func (n *Network) must(args ...string) {
	n.t.Helper()
	if out, err := run(args...); err != nil {
		n.t.Fatalf("netnstest: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func run(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
}

// remove deletes the pods (killing what still runs in them), the bridge,
// the route and the lock.
func (n *Network) remove() {
	n.mu.Lock()
	pods := n.pods
	n.mu.Unlock()
	for _, p := range pods {
		removeNamespace(p.NS)
		_, _ = run("ip", "link", "del", p.veth)
	}
	if n.bridge != "" {
		_, _ = run("ip", "link", "del", n.bridge)
	}
	if n.Services.IsValid() {
		_, _ = run("ip", "route", "del", "blackhole", n.Services.String(), "metric", strconv.Itoa(os.Getpid()))
	}
	if n.lockFile != "" {
		_ = os.Remove(n.lockFile)
	}
}

// removeNamespace kills every process in a namespace, then deletes it
// (its veth ends go with it).
func removeNamespace(ns string) {
	if out, err := run("ip", "netns", "pids", ns); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_, _ = run("ip", "netns", "del", ns)
}

// Sweep removes what Networks of processes that no longer run left behind:
// their namespaces (and the processes in them), bridges, veths, routes and
// locks. New calls it once per process.
func Sweep() {
	owner := func(name, prefix string) (int, bool) {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return 0, false
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		return pid, ok && err == nil && pid != os.Getpid() && !testproc.Alive(pid)
	}
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if _, dead := owner(e.Name(), nsPrefix); dead {
				removeNamespace(e.Name())
			}
		}
	}
	if links, err := net.Interfaces(); err == nil {
		for _, l := range links {
			name, _, _ := strings.Cut(l.Name, "@")
			_, deadBridge := owner(name, bridgePrefix)
			_, deadVeth := owner(name, vethPrefix)
			if deadBridge || deadVeth {
				_, _ = run("ip", "link", "del", name)
			}
		}
	}
	if out, err := run("ip", "route", "show", "type", "blackhole"); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			// blackhole 198.19.7.0/24 metric 1234
			if len(f) < 4 || f[0] != "blackhole" || f[2] != "metric" {
				continue
			}
			dst, err := netip.ParsePrefix(f[1])
			pid, perr := strconv.Atoi(f[3])
			if err == nil && perr == nil && ServiceRange.Contains(dst.Addr()) && pid != os.Getpid() && !testproc.Alive(pid) {
				_, _ = run("ip", "route", "del", "blackhole", f[1], "metric", f[3])
			}
		}
	}
	if entries, err := os.ReadDir(lockDir); err == nil {
		for _, e := range entries {
			if path := filepath.Join(lockDir, e.Name()); testproc.OwnerGone(path) {
				_ = os.Remove(path)
			}
		}
	}
}

// Do runs f on an OS thread switched into the pod's namespace: sockets f
// opens belong to the pod (and stay so when used from any goroutine later).
func (p *Pod) Do(f func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, p.NS))
	if err != nil {
		return fmt.Errorf("netnstest: %w", err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnstest: %w", err)
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnstest: enter %s: %w", p.NS, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays in the pod: it ends with this goroutine
			// (locked), never serving another one.
			errc <- fmt.Errorf("netnstest: leave %s: %w", p.NS, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext connects from inside the pod.
func (p *Pod) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.DialAs(ctx, 0, netip.Addr{}, network, addr)
}

// DialAs connects from inside the pod with a socket owned by uid, as a
// process of that UID would (iptables' owner match sees uid), from the
// local address local (any when invalid). A proxy run in the test process
// dials through it as the UID the redirect rules exclude.
func (p *Pod) DialAs(ctx context.Context, uid int, local netip.Addr, network, addr string) (net.Conn, error) {
	d := net.Dialer{}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	}
	var c net.Conn
	err := p.Do(func() error {
		// The file system UID of this (locked) thread owns the sockets it
		// makes; it is the thread's own, restored before the thread is.
		if err := unix.Setfsuid(uid); err != nil {
			return fmt.Errorf("netnstest: setfsuid %d: %w", uid, err)
		}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		if rerr := unix.Setfsuid(0); rerr != nil && err == nil {
			_ = c.Close()
			return fmt.Errorf("netnstest: setfsuid 0: %w", rerr)
		}
		return err
	})
	return c, err
}

// Dialer returns a dial function that connects from inside the pod as uid,
// as DialAs does, but on threads that stay in the pod (four, each dialing
// one connection at a time), so that a dial costs a channel handoff rather
// than entering the namespace: for a proxy of the test process and for
// benchmarks. The threads leave the pod at the test's cleanup.
func (p *Pod) Dialer(t testing.TB, uid int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	type request struct {
		ctx           context.Context
		network, addr string
		res           chan<- result
	}
	reqs := make(chan request)
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := p.Do(func() error {
				unix.Setfsuid(uid)
				defer unix.Setfsuid(0)
				for {
					select {
					case r := <-reqs:
						var d net.Dialer
						c, err := d.DialContext(r.ctx, r.network, r.addr)
						r.res <- result{c, err}
					case <-done:
						return nil
					}
				}
			})
			if err != nil {
				t.Errorf("netnstest: dialer of pod %s: %v", p.Name, err)
			}
		}()
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		res := make(chan result, 1)
		select {
		case reqs <- request{ctx: ctx, network: network, addr: addr, res: res}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-done:
			return nil, fmt.Errorf("netnstest: pod %s: the test is over", p.Name)
		}
		r := <-res
		return r.c, r.err
	}
}

// Listen binds a listener inside the pod.
func (p *Pod) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := p.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// Run runs a program inside the pod (as root) to its end, returning its
// combined output.
func (p *Pod) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + filepath.Join(netnsDir, p.NS), "--", path}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s in pod %s: %w\n%s", path, strings.Join(args, " "), p.Name, err, out.String())
	}
	return out.Bytes(), nil
}

// Command is the command that runs a program inside the pod as opts say,
// for testproc.Start (Start does both).
func (p *Pod) Command(opts Proc, path string, args ...string) *exec.Cmd {
	argv := []string{"--net=" + filepath.Join(netnsDir, p.NS), "--"}
	if opts.UID != 0 || opts.GID != 0 {
		argv = append(argv, "setpriv", "--reuid", strconv.Itoa(opts.UID), "--regid", strconv.Itoa(opts.GID),
			"--clear-groups", "--pdeathsig", "KILL", "--")
	}
	cmd := exec.Command("nsenter", append(append(argv, path), args...)...)
	cmd.Env = opts.Env
	cmd.Dir = opts.Dir
	return cmd
}

// Proc configures a process started in a pod.
type Proc struct {
	// UID and GID the process runs as (0: root).
	UID, GID int
	// Env is its environment (nil: the test's).
	Env []string
	// Dir is its working directory (empty: the test's).
	Dir string
}

// Start runs a program inside the pod, as opts.UID, with its output in a
// log file of the test's temporary directory; it is stopped (SIGTERM, then
// SIGKILL) at the test's cleanup and never outlives the test binary.
func (p *Pod) Start(t testing.TB, name string, opts Proc, path string, args ...string) *testproc.Process {
	t.Helper()
	proc, err := testproc.Start(name, filepath.Join(t.TempDir(), name+".log"), p.Command(opts, path, args...))
	if err != nil {
		t.Fatalf("netnstest: pod %s: %v", p.Name, err)
	}
	t.Cleanup(func() {
		proc.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("%s (pod %s) output:\n%s", name, p.Name, proc.LogTail())
		}
	})
	return proc
}

// PodByIP is the Network's pod with address ip (nil: none).
func (n *Network) PodByIP(ip netip.Addr) *Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pods {
		if p.IP == ip {
			return p
		}
	}
	return nil
}
