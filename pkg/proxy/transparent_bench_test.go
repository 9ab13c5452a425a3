package proxy

import (
	"context"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/internal/netnstest"
)

// BenchmarkTransparentHop compares, side by side in one run, a workload's
// call through an explicit outbound (127.0.0.1:10001) with the same call to
// the service's virtual address captured by the iptables rules (REDIRECT to
// 15001, SO_ORIGINAL_DST, the outbound of that address): the same proxy,
// cluster and echo application, inside one network namespace. Every
// iteration makes one call each way, alternating which goes first, so that
// the machine's load falls on both alike.
//
//   - request: a 1 KiB echo on an open connection (the steady state);
//   - connection: connect, one 1 KiB echo, close (where the capture costs).
//
// Reported per call and way: the median latency (p50-µs) and the CPU the
// whole test process (client, proxy, echo application) and the kernel
// work of its system calls (iptables, conntrack) spent (cpu-µs, from
// getrusage around each call); ns/op covers both calls of an iteration.
//
//	go test -run '^$' -bench TransparentHop -benchtime 5000x ./pkg/proxy/
func BenchmarkTransparentHop(b *testing.B) {
	tp := newTransparentPod(b)
	echoLn, err := tp.Listen("tcp", "127.0.0.1:9000")
	require.NoError(b, err)
	go netnstest.ServeEcho(echoLn)
	b.Cleanup(func() { _ = echoLn.Close() })
	vip := tp.n.ServiceIP(40)
	cfg := tp.transparentConfig(vip, "127.0.0.1:9000", false)
	cfg.Outbounds = append(cfg.Outbounds, &meshv1.Outbound{
		Address: "127.0.0.1", Port: 10001, Service: "echo", Protocol: "tcp", ClusterName: "echo", Name: "outbound:127.0.0.1:10001",
		Endpoints: cfg.Outbounds[0].Endpoints,
	})
	require.NoError(b, tp.proxy.Apply(cfg))
	dial := tp.Dialer(b, 0) // the workload, on threads in the pod
	addrs := [2]string{"127.0.0.1:10001", join(vip, 80)}
	names := []string{"explicit", "transparent"}

	b.Run("request", func(b *testing.B) {
		var conns [2]net.Conn
		for i, a := range addrs {
			c, err := dial(context.Background(), "tcp", a)
			require.NoError(b, err)
			defer c.Close()
			conns[i] = c
		}
		msg, buf := make([]byte, 1024), make([]byte, 1024)
		for _, c := range conns {
			roundTrip(b, c, msg, buf) // warm
		}
		var m sideBySide
		m.rotate(b, 2, func(w int) { roundTrip(b, conns[w], msg, buf) })
		m.report(b, names)
	})
	b.Run("connection", func(b *testing.B) {
		msg, buf := make([]byte, 1024), make([]byte, 1024)
		var m sideBySide
		m.rotate(b, 2, func(w int) {
			c, err := dial(context.Background(), "tcp", addrs[w])
			if err != nil {
				b.Fatal(err)
			}
			roundTrip(b, c, msg, buf)
			_ = c.Close()
		})
		m.report(b, names)
	})
}

// sideBySide collects the latency and CPU of calls made two (or up to
// four) ways.
type sideBySide struct {
	lat [4][]time.Duration
	cpu [4]time.Duration
}

// rotate runs the benchmark's iterations, each calling call once for
// every way, rotating which goes first so that the machine's load falls on
// all alike; only these calls are timed.
func (m *sideBySide) rotate(b *testing.B, ways int, call func(way int)) {
	b.ResetTimer()
	for i := range b.N {
		for k := range ways {
			w := (i + k) % ways
			m.measure(w, func() { call(w) })
		}
	}
	b.StopTimer()
}

func (m *sideBySide) measure(way int, call func()) {
	cpu, began := cpuClock(), time.Now()
	call()
	m.lat[way] = append(m.lat[way], time.Since(began))
	m.cpu[way] += cpuClock() - cpu
}

// report reports each way's median latency and CPU per call; with two
// ways also what the second adds to the first's median.
func (m *sideBySide) report(b *testing.B, names []string) {
	var p50 [4]float64
	for w := range names {
		l := slices.Clone(m.lat[w])
		slices.Sort(l)
		p50[w] = float64(l[len(l)/2]) / float64(time.Microsecond)
		b.ReportMetric(p50[w], names[w]+"-p50-µs")
		b.ReportMetric(float64(m.cpu[w])/float64(time.Microsecond)/float64(len(l)), names[w]+"-cpu-µs")
	}
	if len(names) == 2 {
		b.ReportMetric(p50[1]-p50[0], "added-p50-µs")
	}
}

func roundTrip(b *testing.B, c net.Conn, msg, buf []byte) {
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write(msg); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatal(err)
	}
}

// cpuClock is the CPU time the process used so far (user and system).
func cpuClock() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
