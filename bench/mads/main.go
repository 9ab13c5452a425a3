// Command mads measures the monitoring assignment server of a real kuma-cp
// process on its SQLite store: it loads N dataplanes through the REST API,
// then times, round by round, a dataplane write until the answer of a
// long poll held on the previous version, and reads the process's memory.
//
//	go run ./bench/mads -kuma-cp bin/kuma-cp -n 10000 -rounds 20
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
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
	if err := cpproc.Parallel(n, workers, func(i int) error { return putDataplane(api, i, 0) }); err != nil {
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

	lat, _, err := cp.ChangeToLongPoll(context.Background(), version, rounds, func(r int) error { return putDataplane(api, r%n, r+1) })
	if err != nil {
		return err
	}
	loaded := cpproc.RSS(cp.Cmd.Process.Pid)
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
