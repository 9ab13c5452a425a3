// Command mads measures the monitoring assignment server of real kuma-cp
// processes on SQLite or PostgreSQL: it loads N dataplanes through the REST
// API, then times, round by round, a dataplane write until the answer of a
// long poll held on the previous version, and reads the processes' memory.
//
//	go run ./bench/mads -kuma-cp bin/kuma-cp -n 10000 -rounds 20
//	go run ./bench/mads -store postgres -n 10000
//	go run ./bench/mads -store postgres -replicas 2 -rounds 100
//
// -store postgres starts Debian's PostgreSQL 15 itself (internal/pgtest: a
// temporary directory, a loopback address, as the unprivileged user
// postgres when run as root), creates the database, runs `kuma-cp migrate
// up` and gives kuma-cp the store's settings; the server and its files are
// removed at the end, also on an error or SIGINT/SIGTERM.
//
// -replicas 2 runs two kuma-cp, A and B, on the one database: the
// dataplanes are loaded and every round's write is made through A, the
// long poll is held on B, and a real kuma-dp (-kuma-dp) connected to B's
// dataplane server, with an outbound to the service each write adds an
// endpoint to, is polled until its cluster has the new endpoint. -proxy
// runs the same proxy with one replica (the comparison).
//
// kuma-cp inherits the bench's own environment, then the store's settings,
// then the -env settings (which win). -profile DIR saves a CPU profile of
// kuma-cp (with -replicas 2 of B, which serves the long poll and the
// proxy) taken during the rounds, and a heap profile after them (through
// its /debug/pprof/).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kumametrics/mesh/bench/internal/cpproc"
	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/pgtest"
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

// Stores -store accepts.
const (
	storeSQLite   = "sqlite"
	storePostgres = "postgres"
	storeMemory   = "memory"
)

// dbName is the database -store postgres creates for kuma-cp.
const dbName = "kuma_bench"

// options are the bench's flags.
type options struct {
	kumaCP, kumaDP string
	n, rounds      int
	workers        int
	store          string
	replicas       int
	proxy          bool
	env            []string
	profileDir     string
	profileSecs    int
}

// check says what is wrong with the flags' combination, naming the flag.
func (o options) check() error {
	switch o.store {
	case storeSQLite, storePostgres, storeMemory:
	default:
		return fmt.Errorf("-store %q: want %s, %s or %s", o.store, storeSQLite, storePostgres, storeMemory)
	}
	if o.replicas < 1 || o.replicas > 2 {
		return fmt.Errorf("-replicas %d: want 1 or 2", o.replicas)
	}
	if o.replicas > 1 && o.store != storePostgres {
		return fmt.Errorf("-replicas %d: replicas share a database, only -store %s has one (not %s)", o.replicas, storePostgres, o.store)
	}
	if o.n < 1 {
		return fmt.Errorf("-n %d: want at least 1 dataplane", o.n)
	}
	if o.rounds < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", o.rounds)
	}
	if o.workers < 1 {
		return fmt.Errorf("-workers %d: want at least 1", o.workers)
	}
	return nil
}

// withProxy tells whether a kuma-dp takes part: always with two replicas.
func (o options) withProxy() bool { return o.proxy || o.replicas > 1 }

// pgAddr is where kuma-cp finds the benchmark's PostgreSQL database.
type pgAddr struct {
	Host           string
	Port           int
	User, Password string
	DB             string
}

// storeEnv is kuma-cp's environment for the store, before -env (which is
// appended after it, so it wins); pg is used by postgres only.
func storeEnv(store string, pg pgAddr) []string {
	switch store {
	case storePostgres:
		return []string{
			"KUMA_STORE_TYPE=postgres",
			"KUMA_STORE_POSTGRES_HOST=" + pg.Host,
			"KUMA_STORE_POSTGRES_PORT=" + strconv.Itoa(pg.Port),
			"KUMA_STORE_POSTGRES_USER=" + pg.User,
			"KUMA_STORE_POSTGRES_PASSWORD=" + pg.Password,
			"KUMA_STORE_POSTGRES_DB_NAME=" + pg.DB,
			"KUMA_STORE_POSTGRES_TLS_MODE=disable",
		}
	case storeMemory:
		return []string{"KUMA_STORE_TYPE=memory"}
	default: // sqlite is kuma-cp's default in Universal mode
		return []string{"KUMA_STORE_TYPE=sqlite"}
	}
}

// storeName is the store kuma-cp runs on: the last KUMA_STORE_TYPE of env.
func storeName(env []string) string {
	name := storeSQLite
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "KUMA_STORE_TYPE="); ok {
			name = v
		}
	}
	return name
}

func main() {
	var o options
	flag.StringVar(&o.kumaCP, "kuma-cp", "bin/kuma-cp", "kuma-cp binary")
	flag.StringVar(&o.kumaDP, "kuma-dp", "bin/kuma-dp", "kuma-dp binary (with -proxy or -replicas 2)")
	flag.IntVar(&o.n, "n", 10000, "dataplanes to load")
	flag.IntVar(&o.rounds, "rounds", 20, "write-to-answer rounds")
	flag.IntVar(&o.workers, "workers", 8, "concurrent REST writers while loading")
	flag.StringVar(&o.store, "store", storeSQLite, "kuma-cp's store: sqlite, postgres (a PostgreSQL server started by the bench) or memory")
	flag.IntVar(&o.replicas, "replicas", 1, "kuma-cp replicas on the one database (2 needs -store postgres; implies -proxy)")
	flag.BoolVar(&o.proxy, "proxy", false, "also time each write until a kuma-dp connected to the (last) replica applied it")
	flag.StringVar(&o.profileDir, "profile", "", "directory for kuma-cp's (B's with -replicas 2) CPU profile of the rounds (cpu.pprof) and heap profile after them (heap.pprof)")
	flag.IntVar(&o.profileSecs, "profile-seconds", 30, "length of the CPU profile (started with the rounds)")
	var env envFlags
	flag.Var(&env, "env", "NAME=VALUE for kuma-cp's environment, e.g. KUMA_STORE_SQLITE_SYNCHRONOUS=NORMAL (repeat the flag for more; wins over -store's settings)")
	flag.Parse()
	o.env = env
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/mads:", err)
		os.Exit(2)
	}
	var c cleanups
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench/mads: %s: stopping\n", s)
		c.run()
		os.Exit(130)
	}()
	err := run(o, &c)
	c.run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/mads:", err)
		os.Exit(1)
	}
}

// cleanups are what the bench started, stopped in reverse order once: at
// the end, on an error, or on a signal.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

func (c *cleanups) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

func run(o options, c *cleanups) error {
	fmt.Printf("load average at start            %s\n", loadAvg())
	var pg pgAddr
	if o.store == storePostgres {
		srv, err := pgtest.StartServer()
		if err != nil {
			return err
		}
		c.add(srv.Close)
		if err := srv.CreateDatabase(dbName); err != nil {
			return err
		}
		pg = pgAddr{Host: srv.Host, Port: srv.Port, User: pgtest.User, Password: pgtest.Password, DB: dbName}
	}
	env := append(storeEnv(o.store, pg), o.env...)
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
		env = append(env, "KUMA_DIAGNOSTICS_DEBUG_ENDPOINTS=true")
	}
	if storeName(env) == storePostgres {
		if err := migrateUp(o.kumaCP, env); err != nil {
			return err
		}
	}
	var cps []*cpproc.ControlPlane
	for range o.replicas {
		cp, err := cpproc.StartTemp(o.kumaCP, env...)
		if err != nil {
			return err
		}
		c.add(cp.Stop)
		cps = append(cps, cp)
	}
	a, b := cps[0], cps[len(cps)-1] // A takes the writes, B holds the long poll and the proxy
	idle := make([]string, len(cps))
	for i, cp := range cps {
		idle[i] = cpproc.RSS(cp.Cmd.Process.Pid)
	}

	if err := cpproc.Put(a.API+"/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus"}]}}`); err != nil {
		return err
	}
	began := time.Now()
	if err := cpproc.Parallel(o.n, o.workers, func(i int) error { return putDataplane(a.API, i, 0) }); err != nil {
		return err
	}
	load := time.Since(began)
	loadAvgLoaded := loadAvg()

	want := o.n
	rr := cpproc.Rounds{Change: func(r int) error { return putDataplane(a.API, r%o.n, r+1) }}
	if o.withProxy() {
		p, err := startProxy(o.kumaDP, a, b, c)
		if err != nil {
			return err
		}
		base := o.n + 2 // the loaded ones, the proxy's and the target's first
		want = base
		rr = cpproc.Rounds{
			Change:  func(r int) error { return putTarget(a.API, r+1) },
			Count:   func(r int) int { return base + r + 1 },
			Applied: func(r int) error { return p.waitMembers(r + 2) },
		}
	}
	var version string
	if err := cpproc.WaitFor(300*time.Second, func() bool {
		v, count, err := b.FetchMADS("", 0)
		version = v
		return err == nil && count == want
	}); err != nil {
		return fmt.Errorf("MADS (on the last replica) never served %d assignments: %w", want, err)
	}
	size := fetchSize(b.MADS + "/v3/discovery:monitoringassignments")

	var cpuDone chan error
	if o.profileDir != "" {
		cpuDone = make(chan error, 1)
		go func() {
			cpuDone <- save(b.Diag+fmt.Sprintf("/debug/pprof/profile?seconds=%d", o.profileSecs), filepath.Join(o.profileDir, "cpu.pprof"))
		}()
	}
	lat, _, err := b.TimeRounds(context.Background(), version, o.rounds, rr)
	if err != nil {
		return err
	}
	loaded := make([]string, len(cps))
	for i, cp := range cps {
		loaded[i] = cpproc.RSS(cp.Cmd.Process.Pid)
	}
	if o.profileDir != "" {
		if err := errors.Join(<-cpuDone, save(b.Diag+"/debug/pprof/heap", filepath.Join(o.profileDir, "heap.pprof"))); err != nil {
			return err
		}
	}
	p := func(l []time.Duration, q int) time.Duration { return l[(len(l)-1)*q/100].Round(100 * time.Microsecond) }
	where := ""
	if len(cps) > 1 {
		where = " on B"
	}
	fmt.Printf("dataplanes                       %d, store %s, %d replica(s)\n", o.n, storeName(env), len(cps))
	fmt.Printf("load through the REST API (A)    %s (%.0f/s, %d writers; load average then %s)\n", load.Round(time.Millisecond), float64(o.n)/load.Seconds(), o.workers, loadAvgLoaded)
	fmt.Printf("long-poll answer                 %.1f MB\n", float64(size)/1e6)
	fmt.Printf("write (A) -> held long poll%s    answer p50 %s  max %s;  headers p50 %s  max %s  (%d rounds)\n",
		where, p(lat.Answer, 50), p(lat.Answer, 100), p(lat.Headers, 50), p(lat.Headers, 100), len(lat.Answer))
	if len(lat.Applied) > 0 {
		fmt.Printf("write (A) -> kuma-dp%s applied   p50 %s  max %s  (cluster membership_total; %d rounds)\n", where, p(lat.Applied, 50), p(lat.Applied, 100), len(lat.Applied))
	}
	for i, cp := range cps {
		fmt.Printf("kuma-cp %c RSS                    idle %s, with %d dataplanes %s, peak %s\n", 'A'+i, idle[i], o.n, loaded[i], cpproc.PeakRSS(cp.Cmd.Process.Pid))
	}
	fmt.Printf("load average at end              %s\n", loadAvg())
	if o.profileDir != "" {
		fmt.Printf("profiles                         %s (go tool pprof -top %s %s)\n", o.profileDir, o.kumaCP, filepath.Join(o.profileDir, "cpu.pprof"))
	}
	return nil
}

// migrateUp runs `kuma-cp migrate up` with kuma-cp's environment.
func migrateUp(kumaCP string, env []string) error {
	cmd := exec.Command(kumaCP, "migrate", "up")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("kuma-cp migrate up: %w\n%s", err, out)
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

// targetService is the service of the proxy's outbound; each round adds a
// dataplane (an endpoint) to it.
const targetService = "bench-target"

// putTarget writes the i-th dataplane of the target service (0 is there
// before the rounds).
func putTarget(api string, i int) error {
	name := fmt.Sprintf("target-%04d", i)
	body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":"10.250.%d.%d","inbound":[`+
		`{"port":8080,"tags":{"kuma.io/service":%q}}]}}`, name, i>>8&255, i&255, targetService)
	return cpproc.Put(api+"/meshes/default/dataplanes/"+name, body)
}

// proxy is a running kuma-dp.
type proxy struct {
	admin string // http://host:9901
}

// startProxy runs kuma-dp connected to b's dataplane server (CA from b's
// work directory, a token from b's API) with one outbound to the target
// service, whose first dataplane is written through a; it returns once the
// proxy has that one endpoint. cleanups stop it.
func startProxy(kumaDP string, a, b *cpproc.ControlPlane, c *cleanups) (*proxy, error) {
	if err := putTarget(a.API, 0); err != nil {
		return nil, err
	}
	token, err := dataplaneToken(b.API, "bench-proxy")
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(b.WorkDir, "bench-proxy.token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return nil, err
	}
	addr, adminHost := loopback.Host(), loopback.Host()
	yaml := fmt.Sprintf("type: Dataplane\nmesh: default\nname: bench-proxy\nnetworking:\n  address: %s\n  inbound:\n  - port: 8080\n    servicePort: 9\n    tags:\n      kuma.io/service: bench-proxy\n"+
		"  outbound:\n  - port: 20000\n    tags:\n      kuma.io/service: %s\n", addr, targetService)
	file := filepath.Join(b.WorkDir, "bench-proxy.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	dp := exec.Command(kumaDP, "run", "--log-level=warn",
		"--cp-address", b.DPServer, "--ca-cert-file", b.CAFile(), "--dataplane-token-file", tokenFile,
		"--dataplane-file", file, "--admin-address", adminHost, "--admin-port", "9901")
	dp.Stderr = os.Stderr
	if err := dp.Start(); err != nil {
		return nil, fmt.Errorf("kuma-dp: %w", err)
	}
	c.add(func() { _ = dp.Process.Kill(); _ = dp.Wait() })
	p := &proxy{admin: "http://" + net.JoinHostPort(adminHost, "9901")}
	if err := cpproc.WaitFor(120*time.Second, func() bool { return p.members() == 1 }); err != nil {
		return nil, fmt.Errorf("kuma-dp never had the first endpoint of %s (membership %d): %w", targetService, p.members(), err)
	}
	return p, nil
}

// dataplaneToken asks api (from loopback: admin) for a token of the dataplane name.
func dataplaneToken(api, name string) (string, error) {
	body := fmt.Sprintf(`{"mesh":"default","name":%q,"tags":{"kuma.io/service":[%q]}}`, name, name)
	req, err := http.NewRequest(http.MethodPost, api+"/tokens/dataplane", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/plain")
	res, err := cpproc.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("dataplane token: %w", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("dataplane token: %d %s", res.StatusCode, b)
	}
	return strings.TrimSpace(string(b)), nil
}

// members is the proxy's cluster membership_total of the target service
// (-1 when unknown).
func (p *proxy) members() int {
	res, err := cpproc.Client.Get(p.admin + "/stats?filter=" + `^cluster\.` + targetService + `\.membership_total$`)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return parseMembers(string(b))
}

// parseMembers reads the value of a "cluster.X.membership_total: N" line of
// the admin API's /stats (-1 when there is none).
func parseMembers(stats string) int {
	for _, line := range strings.Split(stats, "\n") {
		name, v, ok := strings.Cut(line, ": ")
		if ok && strings.HasSuffix(name, ".membership_total") {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return -1
}

// waitMembers polls the proxy (every 2 ms) until its target cluster has n endpoints.
func (p *proxy) waitMembers(n int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := p.members()
		if got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kuma-dp: %s membership %d, want %d after 60s", targetService, got, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// loadAvg is /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
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
