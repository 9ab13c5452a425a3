// Command dprss measures kuma-dp's memory: the resident set of a proxy with
// no outbound, then of one with N outbounds to N distinct services (N
// clusters, each with its statistics), both configured by a real kuma-cp.
//
//	go run ./bench/dprss -bin bin -clusters 1000
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
	"github.com/kumametrics/mesh/internal/loopback"
)

func main() {
	bin := flag.String("bin", "bin", "directory with kuma-cp and kuma-dp")
	clusters := flag.Int("clusters", 1000, "outbounds (one cluster each) of the loaded proxy")
	logLevel := flag.String("log-level", "warn", "kuma-dp log level")
	flag.DurationVar(&settle, "settle", 12*time.Second, "how long each proxy runs after applying its config before it is measured (kuma-dp settles 10 s after its last config)")
	flag.BoolVar(&hold, "hold", false, "after measuring each proxy, print its pid and addresses and wait for a line on stdin (to profile it)")
	flag.Parse()
	if err := run(*bin, *clusters, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dprss:", err)
		os.Exit(1)
	}
}

func run(bin string, n int, logLevel string) error {
	dir, err := os.MkdirTemp("", "bench-dprss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Tokens are checked when a proxy connects, never on the data path.
	cp, err := cpproc.Start(filepath.Join(bin, "kuma-cp"), dir, "KUMA_STORE_TYPE=memory", "KUMA_DP_SERVER_AUTHN_DP_PROXY_TYPE=none")
	if err != nil {
		return err
	}
	defer cp.Stop()
	outs, err := cp.MeshWithServices(n)
	if err != nil {
		return err
	}
	idle, err := measure(bin, cp, "idle", nil, logLevel)
	if err != nil {
		return err
	}
	loaded, err := measure(bin, cp, "loaded", outs, logLevel)
	if err != nil {
		return err
	}
	fmt.Printf("kuma-dp RSS idle (1 inbound, no outbound): %s\nkuma-dp RSS with %d clusters (outbounds): %s\n", idle, n, loaded)
	return nil
}

// measure runs a kuma-dp with the given outbounds until its config is
// applied and its statistics scraped once, and returns its VmRSS. The proxy
// and its admin API (on its default port) each have a fresh loopback
// address.
func measure(bin string, cp *cpproc.ControlPlane, name string, outbounds []string, logLevel string) (string, error) {
	addr, adminHost := loopback.Host(), loopback.Host()
	yaml := fmt.Sprintf("type: Dataplane\nmesh: default\nname: %s\nnetworking:\n  address: %s\n  inbound:\n  - port: 8080\n    servicePort: 9\n    tags:\n      kuma.io/service: %s\n", name, addr, name)
	if len(outbounds) > 0 {
		yaml += "  outbound:\n" + strings.Join(outbounds, "")
	}
	file := filepath.Join(cp.WorkDir, name+".yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dp := exec.CommandContext(ctx, filepath.Join(bin, "kuma-dp"), "run", "--log-level="+logLevel,
		"--cp-address", cp.DPServer, "--ca-cert-file", cp.CAFile(),
		"--dataplane-file", file, "--admin-address", adminHost, "--admin-port", "9901")
	dp.Stderr = os.Stderr
	if err := dp.Start(); err != nil {
		return "", err
	}
	defer func() { _ = dp.Process.Kill(); _ = dp.Wait() }()
	admin := "http://" + net.JoinHostPort(adminHost, "9901")
	want := len(outbounds)
	if err := cpproc.WaitFor(60*time.Second, func() bool {
		return cpproc.Get(admin+"/ready") == nil && countOutbounds(admin) == want
	}); err != nil {
		return "", fmt.Errorf("%s proxy never applied its %d outbounds: %w", name, want, err)
	}
	// A scrape, as Prometheus would, before and after the proxy settled.
	metrics := "http://" + addr + ":5670/metrics"
	if err := cpproc.Get(metrics); err != nil {
		return "", err
	}
	time.Sleep(settle)
	if err := cpproc.Get(metrics); err != nil {
		return "", err
	}
	pid := dp.Process.Pid
	if hold {
		fmt.Printf("%s: kuma-dp pid %d, admin %s, metrics %s; a line on stdin goes on\n", name, pid, admin, metrics)
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	return fmt.Sprintf("%s (anon %s, file %s; peak %s)", cpproc.RSS(pid), cpproc.Status(pid, "RssAnon:"), cpproc.Status(pid, "RssFile:"), cpproc.PeakRSS(pid)), nil
}

// settle is how long a proxy runs after applying its config before it is
// measured.
var settle time.Duration

// hold stops after each measurement (-hold).
var hold bool

func countOutbounds(admin string) int {
	res, err := http.Get(admin + "/config_dump")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	var dump struct {
		Config struct {
			Outbounds []json.RawMessage `json:"outbounds"`
		} `json:"config"`
	}
	if err := json.NewDecoder(res.Body).Decode(&dump); err != nil {
		return -1
	}
	return len(dump.Config.Outbounds)
}
