// Command cpfaults measures what faults and floods do to a real kuma-cp
// process (SQLite store, everything on 127.0.0.1), and whether it serves
// again afterwards:
//
//   - nofile: the process runs with a limit of open files (ulimit -n, 64 by
//     default) and more MADS long polls than that arrive; then they leave.
//   - flood: twice as many MADS long polls as the server holds at most
//     (monitoringAssignmentServer.maxHeldLongPolls) arrive at once.
//
// It prints what the clients saw, the process's memory and whether it
// stayed up and served new connections afterwards.
//
//	go run ./bench/cpfaults -kuma-cp bin/kuma-cp -nofile 64 -polls 200
//	go run ./bench/cpfaults -kuma-cp bin/kuma-cp -mode flood -cap 9000
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
)

func main() {
	kumaCP := flag.String("kuma-cp", "bin/kuma-cp", "kuma-cp binary")
	mode := flag.String("mode", "nofile", "nofile or flood")
	nofile := flag.Uint64("nofile", 64, "nofile: kuma-cp's limit of open files")
	polls := flag.Int("polls", 0, "long polls to send (default: nofile 200, flood 2×cap)")
	limit := flag.Int("cap", 9000, "flood: monitoringAssignmentServer.maxHeldLongPolls")
	flag.Parse()
	var err error
	switch *mode {
	case "nofile":
		err = runNofile(*kumaCP, *nofile, or(*polls, 200))
	case "flood":
		err = runFlood(*kumaCP, *limit, or(*polls, 2**limit))
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/cpfaults:", err)
		os.Exit(1)
	}
}

func or(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// raiseOwnLimit lets this process hold many connections.
func raiseOwnLimit() {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}

// version is the current MADS version, once there is one.
func version(mads string) (string, error) {
	var (
		v   string
		err error
	)
	if werr := cpproc.WaitFor(30*time.Second, func() bool { v, err = currentVersion(mads); return err == nil }); werr != nil {
		return "", fmt.Errorf("no MADS version: %w", err)
	}
	return v, nil
}

func currentVersion(mads string) (string, error) {
	res, err := cpproc.Client.Post(mads+"/v3/discovery:monitoringassignments?fetch-timeout=0s", "application/json", strings.NewReader("{}"))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	_, rest, ok := strings.Cut(string(b), `"version_info":"`)
	if !ok {
		return "", fmt.Errorf("no version in %d %s", res.StatusCode, b)
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v, nil
}

// poll is one raw long poll and what became of it.
type poll struct {
	c      net.Conn
	status int
	retry  string
	err    error
}

// send opens a connection and sends a long poll held on v.
func send(addr, v string) *poll {
	p := &poll{}
	p.c, p.err = net.DialTimeout("tcp", addr, 10*time.Second)
	if p.err != nil {
		return p
	}
	body := `{"version_info":"` + v + `","node":{"id":"flood"}}`
	_, p.err = fmt.Fprintf(p.c, "POST /v3/discovery:monitoringassignments?fetch-timeout=5m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return p
}

// answer reads the response head within d (no answer: status 0).
func (p *poll) answer(d time.Duration) {
	if p.err != nil {
		return
	}
	_ = p.c.SetReadDeadline(time.Now().Add(d))
	res, err := http.ReadResponse(bufio.NewReader(p.c), nil)
	_ = p.c.SetReadDeadline(time.Time{})
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			p.err = err
		}
		return
	}
	p.status, p.retry = res.StatusCode, res.Header.Get("Retry-After")
	_ = res.Body.Close()
}

// serves tells whether url answers 200 on a new connection within 5s.
func serves(url string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	began := time.Now()
	res, err := c.Get(url)
	if err != nil {
		return "no (" + err.Error() + ")"
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return fmt.Sprintf("%d in %s", res.StatusCode, time.Since(began).Round(time.Millisecond))
}

// alive tells whether the process runs (not exited, not a zombie).
func alive(cp *cpproc.ControlPlane) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(cp.Cmd.Process.Pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), ") ")
	return ok && !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func openFiles(pid int) int {
	e, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(e)
}

func runNofile(kumaCP string, nofile uint64, n int) error {
	raiseOwnLimit()
	cp, err := cpproc.StartTemp(kumaCP)
	if err != nil {
		return err
	}
	defer cp.Stop()
	pid := cp.Cmd.Process.Pid
	lim := unix.Rlimit{Cur: nofile, Max: nofile}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return fmt.Errorf("prlimit: %w", err)
	}
	v, err := version(cp.MADS)
	if err != nil {
		return err
	}
	fmt.Printf("kuma-cp pid %d, limit of open files %d, %d open, RSS %s\n", pid, nofile, openFiles(pid), cpproc.RSS(pid))
	addr := strings.TrimPrefix(cp.MADS, "http://")
	ps := make([]*poll, n)
	for i := range ps {
		ps[i] = send(addr, v)
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); p.answer(2 * time.Second) }()
	}
	wg.Wait()
	var failed, answered int
	for _, p := range ps {
		switch {
		case p.err != nil:
			failed++
		case p.status != 0:
			answered++
		}
	}
	fmt.Printf("%d long polls sent: %d failed to connect or send, %d answered within 2s, the rest held or never accepted; kuma-cp has %d files open\n",
		n, failed, answered, openFiles(pid))
	fmt.Printf("while exhausted: alive %v, API %s, diagnostics %s\n", alive(cp), serves(cp.API+"/meshes/default"), serves(cp.Diag+"/ready"))
	fmt.Printf("RSS during: %s\n", cpproc.RSS(pid))
	began := time.Now()
	for _, p := range ps {
		if p.c != nil {
			_ = p.c.Close()
		}
	}
	err = cpproc.WaitFor(60*time.Second, func() bool {
		return strings.HasPrefix(serves(cp.API+"/meshes/default"), "200") && strings.HasPrefix(serves(cp.MADS+"/v3/discovery:monitoringassignments/http_sd"), "200")
	})
	fmt.Printf("flood gone: serving again after %s (%v); alive %v; API %s, MADS %s, diagnostics %s; RSS %s; %d files open\n",
		time.Since(began).Round(time.Millisecond), errOr(err), alive(cp), serves(cp.API+"/meshes/default"),
		serves(cp.MADS+"/v3/discovery:monitoringassignments/http_sd"), serves(cp.Diag+"/ready"), cpproc.RSS(pid), openFiles(pid))
	fmt.Printf("server_accept_errors_total: %s\n", metric(cp.Diag, "server_accept_errors_total"))
	return nil
}

func errOr(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}

// metric returns the lines of family name from kuma-cp's /metrics.
func metric(diag, name string) string {
	res, err := cpproc.Client.Get(diag + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

func runFlood(kumaCP string, limit, n int) error {
	raiseOwnLimit()
	cp, err := cpproc.StartTemp(kumaCP, "KUMA_MONITORING_ASSIGNMENT_SERVER_MAX_HELD_LONG_POLLS="+strconv.Itoa(limit))
	if err != nil {
		return err
	}
	defer cp.Stop()
	pid := cp.Cmd.Process.Pid
	v, err := version(cp.MADS)
	if err != nil {
		return err
	}
	fmt.Printf("kuma-cp pid %d, maxHeldLongPolls %d, RSS %s\n", pid, limit, cpproc.RSS(pid))
	addr := strings.TrimPrefix(cp.MADS, "http://")
	var (
		mu       sync.Mutex
		held     []*poll
		statuses = map[int]int{}
		retry    = map[string]int{}
		failed   atomic.Int64
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	began := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				p := send(addr, v)
				p.answer(time.Second)
				mu.Lock()
				switch {
				case p.err != nil:
					failed.Add(1)
				case p.status == 0:
					held = append(held, p)
				default:
					statuses[p.status]++
					retry[p.retry]++
				}
				mu.Unlock()
				if p.status != 0 && p.c != nil {
					_ = p.c.Close()
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d long polls in %s: %d held, answered %v (Retry-After %v), %d failed\n",
		n, time.Since(began).Round(time.Millisecond), len(held), statuses, retry, failed.Load())
	fmt.Printf("during: alive %v, API %s, %s, %s, RSS %s, %d files open\n", alive(cp), serves(cp.API+"/meshes/default"),
		metric(cp.Diag, "mads_server_long_polls_held"), metric(cp.Diag, "mads_server_long_polls_rejected_total"), cpproc.RSS(pid), openFiles(pid))

	// A change answers every held poll.
	began = time.Now()
	if err := cpproc.Put(cp.API+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus"}]}}`); err != nil {
		return err
	}
	if err := cpproc.Put(cp.API+"/meshes/default/dataplanes/dp-1", `{"type":"Dataplane","mesh":"default","name":"dp-1","networking":{"address":"10.0.0.1","inbound":[{"port":8080,"tags":{"kuma.io/service":"web"}}]}}`); err != nil {
		return err
	}
	var answered atomic.Int64
	for _, p := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.answer(60 * time.Second)
			if p.status == http.StatusOK {
				answered.Add(1)
			}
			_ = p.c.Close()
		}()
	}
	wg.Wait()
	fmt.Printf("a change answered %d of %d held polls (200) in %s\n", answered.Load(), len(held), time.Since(began).Round(time.Millisecond))
	fmt.Printf("after: alive %v, API %s, MADS %s, RSS %s\n", alive(cp), serves(cp.API+"/meshes/default"),
		serves(cp.MADS+"/v3/discovery:monitoringassignments/http_sd"), cpproc.RSS(pid))
	return nil
}
