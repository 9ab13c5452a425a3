// Command mads measures the monitoring assignment server of a real kuma-cp
// process on its SQLite store: it loads N dataplanes through the REST API,
// then times, round by round, a dataplane write until the answer of a
// long poll held on the previous version, and reads the process's memory.
//
//	go run ./bench/mads -kuma-cp bin/kuma-cp -n 10000 -rounds 20
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
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

func run(kumaCP string, n, rounds, workers int) error {
	cp, err := cpproc.StartTemp(kumaCP)
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
	if err := cpproc.WaitFor(60*time.Second, func() bool {
		v, count, err := cp.FetchMADS("", 0)
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
			v, _, err := cp.FetchMADS(version, 60*time.Second)
			got <- answer{v, err, time.Now()}
		}()
		if err := cpproc.WaitFor(10*time.Second, func() bool { return cp.HeldLongPolls() >= 1 }); err != nil {
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
	loaded := cpproc.RSS(cp.Cmd.Process.Pid)
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
	return cpproc.Put(api+"/meshes/default/dataplanes/"+name, body)
}

func fetchSize(url string) (string, int, int) {
	res, err := cpproc.Client.Post(url+"?fetch-timeout=0s", "application/json", bytes.NewBufferString(`{}`))
	if err != nil {
		return "", 0, 0
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return "", 0, len(b)
}
