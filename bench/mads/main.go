// Command mads measures the monitoring assignment server of a real kuma-cp
// process on the store its environment selects (SQLite by default): it
// loads N dataplanes through the REST API, then times, round by round, a
// dataplane write until the answer of a long poll held on the previous
// version, and reads the process's memory.
//
//	go run ./bench/mads -kuma-cp bin/kuma-cp -n 10000 -rounds 20
//	go run ./bench/mads -env KUMA_STORE_TYPE=postgres -env KUMA_STORE_POSTGRES_HOST=127.0.0.1 ...
//
// kuma-cp inherits the bench's own environment, then the -env settings
// (which win). -profile DIR saves a CPU profile of kuma-cp taken during the
// rounds, and a heap profile after them (through its /debug/pprof/).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
)

// envFlags is a repeated -env NAME=VALUE.
type envFlags []string

func (e *envFlags) String() string { return strings.Join(*e, " ") }

func (e *envFlags) Set(v string) error {
	name, _, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("-env %q: want NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

func main() {
	kumaCP := flag.String("kuma-cp", "bin/kuma-cp", "kuma-cp binary")
	n := flag.Int("n", 10000, "dataplanes to load")
	rounds := flag.Int("rounds", 20, "write-to-answer rounds")
	workers := flag.Int("workers", 8, "concurrent REST writers while loading")
	profile := flag.String("profile", "", "directory for kuma-cp's CPU profile of the rounds (cpu.pprof) and heap profile after them (heap.pprof)")
	profileSeconds := flag.Int("profile-seconds", 30, "length of the CPU profile (started with the rounds)")
	var env envFlags
	flag.Var(&env, "env", "NAME=VALUE for kuma-cp's environment, e.g. KUMA_STORE_TYPE=postgres (repeat the flag for more)")
	flag.Parse()
	if err := run(*kumaCP, *n, *rounds, *workers, env, *profile, *profileSeconds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/mads:", err)
		os.Exit(1)
	}
}

func run(kumaCP string, n, rounds, workers int, env []string, profileDir string, profileSeconds int) error {
	if profileDir != "" {
		if err := os.MkdirAll(profileDir, 0o755); err != nil {
			return err
		}
		env = append(env, "KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS=true")
	}
	cp, err := cpproc.StartTemp(kumaCP, env...)
	if err != nil {
		return err
	}
	defer cp.Stop()
	api := cp.API
	madsURL := cp.MADS + "/v3/discovery:monitoringassignments"
	idle := cpproc.RSS(cp.Cmd.Process.Pid)

	if err := cpproc.Put(api+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus"}]}}`); err != nil {
		return err
	}
	began := time.Now()
	if err := cpproc.Parallel(n, workers, func(i int) error { return putDataplane(api, i, 0) }); err != nil {
		return err
	}
	load := time.Since(began)
	var version string
	if err := cpproc.WaitFor(120*time.Second, func() bool {
		v, count, err := cp.FetchMADS("", 0)
		version = v
		return err == nil && count == n
	}); err != nil {
		return fmt.Errorf("MADS never served %d assignments: %w", n, err)
	}
	size := fetchSize(madsURL)

	var cpuDone chan error
	if profileDir != "" {
		cpuDone = make(chan error, 1)
		go func() {
			cpuDone <- save(cp.Diag+fmt.Sprintf("/debug/pprof/profile?seconds=%d", profileSeconds), filepath.Join(profileDir, "cpu.pprof"))
		}()
	}
	lat, _, err := cp.ChangeToLongPoll(context.Background(), version, rounds, func(r int) error { return putDataplane(api, r%n, r+1) })
	if err != nil {
		return err
	}
	loaded := cpproc.RSS(cp.Cmd.Process.Pid)
	if profileDir != "" {
		if err := errors.Join(<-cpuDone, save(cp.Diag+"/debug/pprof/heap", filepath.Join(profileDir, "heap.pprof"))); err != nil {
			return err
		}
	}
	p := func(l []time.Duration, q int) time.Duration { return l[(len(l)-1)*q/100].Round(100 * time.Microsecond) }
	store := "sqlite (default)"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "KUMA_STORE_TYPE="); ok {
			store = v
		}
	}
	fmt.Printf("dataplanes                       %d, store %s\n", n, store)
	fmt.Printf("load through the REST API        %s (%.0f/s, %d writers)\n", load.Round(time.Millisecond), float64(n)/load.Seconds(), workers)
	fmt.Printf("long-poll answer                 %.1f MB\n", float64(size)/1e6)
	fmt.Printf("write -> held long-poll answer   p50 %s  max %s  (%d rounds; whole body received)\n", p(lat.Answer, 50), p(lat.Answer, 100), len(lat.Answer))
	fmt.Printf("write -> its headers             p50 %s  max %s\n", p(lat.Headers, 50), p(lat.Headers, 100))
	fmt.Printf("kuma-cp RSS                      idle %s, with %d dataplanes %s, peak %s\n", idle, n, loaded, cpproc.PeakRSS(cp.Cmd.Process.Pid))
	if profileDir != "" {
		fmt.Printf("profiles                         %s (go tool pprof -top %s %s)\n", profileDir, kumaCP, filepath.Join(profileDir, "cpu.pprof"))
	}
	return nil
}

func putDataplane(api string, i, gen int) error {
	name := fmt.Sprintf("dp-%05d", i)
	// gen changes the version tag, hence the dataplane's assignment.
	body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"10.%d.%d.%d","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":"svc-%d","version":"v%d"}}]}}`, name, i>>16&255, i>>8&255, i&255, i%100, gen)
	return cpproc.Put(api+"/meshes/default/dataplanes/"+name, body)
}

// fetchSize is the size of a long poll's immediate answer.
func fetchSize(url string) int {
	res, err := cpproc.Client.Post(url+"?fetch-timeout=0s", "application/json", strings.NewReader(`{}`))
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return len(b)
}

// save writes what url answers into file.
func save(url, file string) error {
	res, err := cpproc.Client.Get(url)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		return fmt.Errorf("profile %s: %d %s", url, res.StatusCode, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", url, err)
	}
	return f.Close()
}
