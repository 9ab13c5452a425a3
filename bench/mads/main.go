// Command mads measures the monitoring assignment server of a real kuma-cp
// process on its SQLite store: it loads N dataplanes through the REST API,
// then times, round by round, a dataplane write until the answer of a
// long poll held on the previous version, and reads the process's memory.
//
//	go run ./bench/mads -kuma-cp bin/kuma-cp -n 10000 -rounds 20
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	kumaCP := flag.String("kuma-cp", "bin/kuma-cp", "kuma-cp binary")
	n := flag.Int("n", 10000, "dataplanes to load")
	rounds := flag.Int("rounds", 20, "write-to-answer rounds")
	workers := flag.Int("workers", 8, "concurrent REST writers while loading")
	flag.Parse()
	if err := run(*kumaCP, *n, *rounds, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "bench/mads:", err)
		os.Exit(1)
	}
}

func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func run(kumaCP string, n, rounds, workers int) error {
	dir, err := os.MkdirTemp("", "bench-mads-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := freePorts(4)
	if err != nil {
		return err
	}
	cmd := exec.Command(kumaCP, "run", "--log-level=warn")
	cmd.Env = append(os.Environ(),
		"KUMA_GENERAL_WORK_DIR="+dir,
		fmt.Sprintf("KUMA_API_SERVER_HTTP_PORT=%d", p[0]), fmt.Sprintf("KUMA_DP_SERVER_PORT=%d", p[1]),
		fmt.Sprintf("KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=%d", p[2]), fmt.Sprintf("KUMA_DIAGNOSTICS_SERVER_PORT=%d", p[3]),
		"KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1", "KUMA_DP_SERVER_INTERFACE=127.0.0.1",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1", "KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1",
	)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	api := fmt.Sprintf("http://127.0.0.1:%d", p[0])
	madsURL := fmt.Sprintf("http://127.0.0.1:%d/v3/discovery:monitoringassignments", p[2])
	diag := fmt.Sprintf("http://127.0.0.1:%d", p[3])
	if err := waitFor(30*time.Second, func() bool { return get(diag+"/ready") == nil }); err != nil {
		return fmt.Errorf("kuma-cp not ready: %w", err)
	}
	idle := rss(cmd.Process.Pid)

	if err := put(api+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus"}]}}`); err != nil {
		return err
	}
	began := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := putDataplane(api, i, 0); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	load := time.Since(began)
	var version string
	if err := waitFor(60*time.Second, func() bool {
		v, count, err := fetch(madsURL, "", 0)
		version = v
		return err == nil && count == n
	}); err != nil {
		return fmt.Errorf("MADS never served %d assignments: %w", n, err)
	}
	_, _, size := fetchSize(madsURL)

	var lat []time.Duration
	for r := range rounds {
		type answer struct {
			v   string
			err error
			at  time.Time
		}
		got := make(chan answer, 1)
		go func() {
			v, _, err := fetch(madsURL, version, 60*time.Second)
			got <- answer{v, err, time.Now()}
		}()
		if err := waitFor(10*time.Second, func() bool { return held(diag) >= 1 }); err != nil {
			return fmt.Errorf("long poll not held: %w", err)
		}
		start := time.Now()
		if err := putDataplane(api, r%n, r+1); err != nil {
			return err
		}
		a := <-got
		if a.err != nil {
			return a.err
		}
		if a.v == version {
			return fmt.Errorf("round %d: answered without a new version", r)
		}
		version = a.v
		lat = append(lat, a.at.Sub(start))
	}
	loaded := rss(cmd.Process.Pid)
	slices.Sort(lat)
	fmt.Printf("dataplanes                       %d\n", n)
	fmt.Printf("load through the REST API        %s (%.0f/s, %d writers)\n", load.Round(time.Millisecond), float64(n)/load.Seconds(), workers)
	fmt.Printf("long-poll answer                 %.1f MB\n", float64(size)/1e6)
	fmt.Printf("write -> held long-poll answer   p50 %s  max %s  (%d rounds)\n", lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond), len(lat))
	fmt.Printf("kuma-cp RSS                      idle %s, with %d dataplanes %s\n", idle, n, loaded)
	return nil
}

func putDataplane(api string, i, gen int) error {
	name := fmt.Sprintf("dp-%05d", i)
	// gen changes the version tag, hence the dataplane's assignment.
	body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"10.%d.%d.%d","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"svc-%d","version":"v%d"}}]}}`, name, i>>16&255, i>>8&255, i&255, i%100, gen)
	return put(api+"/meshes/default/dataplanes/"+name, body)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func put(url, body string) error {
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return fmt.Errorf("PUT %s: %d %s", url, res.StatusCode, b)
	}
	return nil
}

func get(url string) error {
	res, err := client.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d", url, res.StatusCode)
	}
	return nil
}

// fetch long-polls MADS as Prometheus does; it returns the version and the number of resources.
func fetch(url, version string, timeout time.Duration) (string, int, error) {
	body := `{"node":{"id":"bench"},"type_url":"type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}`
	if version != "" {
		body = fmt.Sprintf(`{"version_info":%q,"node":{"id":"bench"}}`, version)
	}
	res, err := client.Post(fmt.Sprintf("%s?fetch-timeout=%s", url, timeout), "application/json", bytes.NewBufferString(body))
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusNotModified {
		return version, -1, nil
	}
	var out struct {
		Version   string            `json:"version_info"`
		Resources []json.RawMessage `json:"resources"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		return "", 0, err
	}
	return out.Version, len(out.Resources), nil
}

func fetchSize(url string) (string, int, int) {
	res, err := client.Post(url+"?fetch-timeout=0s", "application/json", bytes.NewBufferString(`{}`))
	if err != nil {
		return "", 0, 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return "", 0, len(b)
}

// held reads mads_server_long_polls_held from the control plane's metrics.
func held(diag string) int {
	res, err := client.Get(diag + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "mads_server_long_polls_held") {
			var v float64
			fields := strings.Fields(line)
			_, _ = fmt.Sscanf(fields[len(fields)-1], "%g", &v)
			return int(v)
		}
	}
	return 0
}

// rss is the resident set size of a process, from /proc.
func rss(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", fmt.Sprint(pid), "status"))
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
		}
	}
	return "?"
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
