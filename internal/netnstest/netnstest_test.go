package netnstest

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPodsReachEachOtherAndTheHost: a pod's sockets are the pod's, pods
// reach each other and the host on their /24, and the host reaches them.
func TestPodsReachEachOtherAndTheHost(t *testing.T) {
	n := New(t)
	a, b := n.AddPod("a"), n.AddPod("b")
	require.True(t, n.Subnet.Contains(a.IP) && n.Subnet.Contains(b.IP))
	require.NotEqual(t, a.IP, b.IP)

	ln, err := b.Listen("tcp", net.JoinHostPort(b.IP.String(), "8080"))
	require.NoError(t, err)
	defer ln.Close()
	go ServeEcho(ln)
	require.Equal(t, "from a", echo(t, a.DialContext, net.JoinHostPort(b.IP.String(), "8080"), "from a"))
	var d net.Dialer
	require.Equal(t, "from the host", echo(t, d.DialContext, net.JoinHostPort(b.IP.String(), "8080"), "from the host"))

	// Loopback is the pod's own: the host's 127.0.0.1:<port> is not there.
	lo, err := b.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer lo.Close()
	go ServeEcho(lo)
	require.Equal(t, "lo", echo(t, b.DialContext, lo.Addr().String(), "lo"))
	_, err = d.DialContext(context.Background(), "tcp", lo.Addr().String())
	require.Error(t, err, "the pod's loopback listener is not on the host")

	// The host's address on the bridge is reachable from a pod.
	hostLn, err := net.Listen("tcp", net.JoinHostPort(n.Gateway.String(), "0"))
	require.NoError(t, err)
	defer hostLn.Close()
	go ServeEcho(hostLn)
	require.Equal(t, "to the host", echo(t, a.DialContext, hostLn.Addr().String(), "to the host"))
}

// TestServiceRangeNeverLeaves: a connection to a ClusterIP that nothing
// captures goes to the host, which drops it; other destinations are
// unreachable from a pod.
func TestServiceRangeNeverLeaves(t *testing.T) {
	n := New(t)
	a := n.AddPod("a")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := a.DialContext(ctx, "tcp", net.JoinHostPort(n.ServiceIP(10).String(), "80"))
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "dropped on the host: the connect never completes: %v", err)
	_, err = a.DialContext(context.Background(), "tcp", "192.0.2.1:80")
	require.ErrorIs(t, err, syscall.ENETUNREACH, "a pod has no default route")
	out, err := exec.Command("ip", "route", "show", n.Services.String()).CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(out), "blackhole "+n.Services.String())
}

// TestStartRunsAsTheUIDInThePod: a process started in a pod runs there as
// the UID asked for, and stops at cleanup.
func TestStartRunsAsTheUIDInThePod(t *testing.T) {
	n := New(t)
	a := n.AddPod("a")
	dir, err := os.MkdirTemp("", "netnstest-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777)) // the process's UID writes there
	out := filepath.Join(dir, "out")
	p := a.Start(t, "id", Proc{UID: 4321, GID: 4321}, "sh", "-c", "id -u > "+out+"; ip -o -4 addr show eth0 >> "+out+"; exec sleep 600")
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(out)
		return err == nil && strings.Count(string(b), "\n") >= 2
	}, 20*time.Second, 20*time.Millisecond)
	b, _ := os.ReadFile(out)
	lines := strings.Split(string(b), "\n")
	require.Equal(t, "4321", lines[0])
	require.Contains(t, lines[1], a.IP.String()+"/24")
	pid := p.Pid()
	p.Stop(5 * time.Second)
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestCleanupRemovesEverything: after a test, its namespaces, interfaces
// and routes are gone, also when it failed.
func TestCleanupRemovesEverything(t *testing.T) {
	var n *Network
	var pod *Pod
	var proc int
	t.Run("failing", func(t *testing.T) {
		inner := &recorder{TB: t}
		n = New(inner)
		pod = n.AddPod("a")
		p := pod.Start(inner, "sleep", Proc{}, "sleep", "600")
		proc = p.Pid()
		inner.Fail()
		inner.runCleanups()
	})
	requireGone(t, n, pod, proc)
}

// TestSweepRemovesADeadRunsLeftovers: a namespace (with a process in it),
// a bridge, a veth and a blackhole route named after a process that no
// longer runs are removed; a live process's are kept.
func TestSweepRemovesADeadRunsLeftovers(t *testing.T) {
	Require(t)
	dead := deadPID(t)
	ns := nsPrefix + strconv.Itoa(dead) + "-1"
	bridge := bridgePrefix + strconv.Itoa(dead) + "-2"
	services := "198.19.255.0/24"
	t.Cleanup(func() {
		_, _ = run("ip", "netns", "del", ns)
		_, _ = run("ip", "link", "del", bridge)
		_, _ = run("ip", "route", "del", "blackhole", services, "metric", strconv.Itoa(dead))
	})
	for _, args := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", bridge, "type", "bridge"},
		{"ip", "route", "add", "blackhole", services, "metric", strconv.Itoa(dead)},
	} {
		out, err := run(args...)
		require.NoError(t, err, string(out))
	}
	orphan := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "sleep", "600")
	require.NoError(t, orphan.Start())
	exited := make(chan struct{})
	go func() { _ = orphan.Wait(); close(exited) }()

	live := New(t) // a live process's network stays
	Sweep()

	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the process in the dead run's namespace still runs")
	}
	_, err := os.Stat("/run/netns/" + ns)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = net.InterfaceByName(bridge)
	require.Error(t, err)
	out, _ := run("ip", "route", "show", services)
	require.Empty(t, strings.TrimSpace(string(out)))
	_, err = net.InterfaceByName(live.bridge)
	require.NoError(t, err, "a live process's bridge stays")
}

func requireGone(t *testing.T, n *Network, pod *Pod, pid int) {
	t.Helper()
	_, err := os.Stat("/run/netns/" + pod.NS)
	require.ErrorIs(t, err, os.ErrNotExist)
	for _, name := range []string{n.bridge, pod.veth} {
		_, err := net.InterfaceByName(name)
		require.Error(t, err, name)
	}
	out, _ := run("ip", "route", "show", n.Services.String())
	require.Empty(t, strings.TrimSpace(string(out)))
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
	_, err = os.Stat(n.lockFile)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// deadPID returns the id of a process that ran and ended.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	pid := cmd.Process.Pid
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
	return pid
}

// recorder is a testing.TB whose cleanups run when the caller says.
type recorder struct {
	testing.TB
	cleanups []func()
	failed   bool
}

func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Fail()            { r.failed = true }
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func echo(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error), addr, msg string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx, "tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Write([]byte(msg))
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	b, err := io.ReadAll(c)
	require.NoError(t, err)
	return string(b)
}

// TestNewPodAndRemove: a pod made outside the test's goroutine (as a node
// agent does) is found by its address, runs a process started with
// Command, and Remove ends that process and deletes its namespace before
// the Network goes.
func TestNewPodAndRemove(t *testing.T) {
	n := New(t)
	type made struct {
		p   *Pod
		err error
	}
	ch := make(chan made, 1)
	go func() { p, err := n.NewPod("agent's"); ch <- made{p, err} }()
	m := <-ch
	require.NoError(t, m.err)
	require.Same(t, m.p, n.PodByIP(m.p.IP))
	require.Nil(t, n.PodByIP(n.Gateway))

	cmd := m.p.Command(Proc{UID: 65534, GID: 65534}, "sleep", "600")
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Remove kills what runs in the namespace: wait until nsenter has
	// entered it (before, the process is still the test's own namespace's).
	pid := strconv.Itoa(cmd.Process.Pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "pids", m.p.NS).Output()
		if slices.Contains(strings.Fields(string(out)), pid) {
			break
		}
		require.False(t, time.Now().After(deadline), "the process never entered the pod's namespace")
		time.Sleep(10 * time.Millisecond)
	}
	m.p.Remove()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the pod's process outlived Remove")
	}
	_, err := os.Stat(filepath.Join(netnsDir, m.p.NS))
	require.ErrorIs(t, err, os.ErrNotExist, "the namespace is gone")
}
