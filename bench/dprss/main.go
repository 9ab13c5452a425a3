// Command dprss measures kuma-dp's memory: the resident set of a proxy with
// no outbound, then of one with N outbounds to N distinct services (N
// clusters, each with its statistics), both configured by a real kuma-cp.
//
//	go run ./bench/dprss -bin bin -clusters 1000
package main

import (
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
)

var logLevel = "warn"

func main() {
	bin := flag.String("bin", "bin", "directory with kuma-cp and kuma-dp")
	clusters := flag.Int("clusters", 1000, "outbounds (one cluster each) of the loaded proxy")
	flag.StringVar(&logLevel, "log-level", "warn", "kuma-dp log level")
	flag.Parse()
	if err := run(*bin, *clusters); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dprss:", err)
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

func run(bin string, n int) error {
	dir, err := os.MkdirTemp("", "bench-dprss-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := freePorts(6)
	if err != nil {
		return err
	}
	cp := exec.Command(filepath.Join(bin, "kuma-cp"), "run", "--log-level=warn")
	cp.Env = append(os.Environ(), "KUMA_STORE_TYPE=memory", "KUMA_GENERAL_WORK_DIR="+dir,
		fmt.Sprintf("KUMA_API_SERVER_HTTP_PORT=%d", p[0]), fmt.Sprintf("KUMA_DP_SERVER_PORT=%d", p[1]),
		fmt.Sprintf("KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=%d", p[2]), fmt.Sprintf("KUMA_DIAGNOSTICS_SERVER_PORT=%d", p[3]),
		"KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1", "KUMA_DP_SERVER_INTERFACE=127.0.0.1",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_INTERFACE=127.0.0.1", "KUMA_DIAGNOSTICS_SERVER_INTERFACE=127.0.0.1")
	cp.Stderr = os.Stderr
	if err := cp.Start(); err != nil {
		return err
	}
	defer func() { _ = cp.Process.Kill(); _ = cp.Wait() }()
	api := fmt.Sprintf("http://127.0.0.1:%d", p[0])
	if err := waitFor(30*time.Second, func() bool { return get(fmt.Sprintf("http://127.0.0.1:%d/ready", p[3])) }); err != nil {
		return fmt.Errorf("kuma-cp: %w", err)
	}
	if err := put(api+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus","conf":{"skipMTLS":true}}]}}`); err != nil {
		return err
	}
	// N services, one dataplane each (no proxy runs for them: only their endpoints matter).
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"127.0.%d.%d","inbound":[{"port":8080,"tags":{"kuma.io/service":%q,"kuma.io/protocol":"http"}}]}}`,
			name, 10+i/250, 1+i%250, name)
		if err := put(api+"/meshes/default/dataplanes/"+name, body); err != nil {
			return err
		}
	}
	idle, err := measure(bin, dir, p[1], p[4], "idle", "127.0.1.250", nil)
	if err != nil {
		return err
	}
	var outs []string
	for i := range n {
		outs = append(outs, fmt.Sprintf("  - port: %d\n    tags:\n      kuma.io/service: svc-%04d\n", 20000+i, i))
	}
	loaded, err := measure(bin, dir, p[1], p[5], "loaded", "127.0.1.251", outs)
	if err != nil {
		return err
	}
	fmt.Printf("kuma-dp RSS   idle (1 inbound, no outbound): %s   with %d clusters (outbounds): %s\n", idle, n, loaded)
	return nil
}

// measure runs a kuma-dp with the given outbounds until its config is
// applied and its statistics scraped once, and returns its VmRSS.
func measure(bin, workDir string, dpPort, adminPort int, name, addr string, outbounds []string) (string, error) {
	yaml := fmt.Sprintf("type: Dataplane\nmesh: default\nname: %s\nnetworking:\n  address: %s\n  inbound:\n  - port: 8080\n    servicePort: 9\n    tags:\n      kuma.io/service: %s\n", name, addr, name)
	if len(outbounds) > 0 {
		yaml += "  outbound:\n" + strings.Join(outbounds, "")
	}
	file := filepath.Join(workDir, name+".yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return "", err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dp := exec.CommandContext(ctx, filepath.Join(bin, "kuma-dp"), "run", "--log-level="+logLevel,
		"--cp-address", fmt.Sprintf("https://127.0.0.1:%d", dpPort), "--ca-cert-file", filepath.Join(workDir, "dp-server-ca.pem"),
		"--dataplane-file", file, "--admin-port", fmt.Sprint(adminPort))
	dp.Stderr = os.Stderr
	if err := dp.Start(); err != nil {
		return "", err
	}
	defer func() { _ = dp.Process.Kill(); _ = dp.Wait() }()
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	want := len(outbounds)
	if err := waitFor(60*time.Second, func() bool {
		return get(admin+"/ready") && countOutbounds(admin) == want
	}); err != nil {
		return "", fmt.Errorf("%s proxy never applied its %d outbounds: %w", name, want, err)
	}
	// One scrape, as Prometheus would.
	res, err := http.Get("http://" + addr + ":5670/metrics")
	if err != nil {
		return "", err
	}
	res.Body.Close()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", dp.Process.Pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), nil
		}
	}
	return "?", nil
}

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

func put(url, body string) error {
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode >= 300 {
		return fmt.Errorf("PUT %s: %d", url, res.StatusCode)
	}
	return nil
}

func get(url string) bool {
	res, err := http.Get(url)
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

func waitFor(d time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
