package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/pgtest"
	"github.com/kumametrics/mesh/pkg/pki"
)

// postgresEnv points a kuma-cp at database db of pg.
func postgresEnv(pg *pgtest.Server, db string) []string {
	return []string{
		"KUMA_STORE_TYPE=postgres",
		"KUMA_STORE_POSTGRES_HOST=" + pg.Host,
		fmt.Sprintf("KUMA_STORE_POSTGRES_PORT=%d", pg.Port),
		"KUMA_STORE_POSTGRES_USER=" + pgtest.User,
		"KUMA_STORE_POSTGRES_PASSWORD=" + pgtest.Password,
		"KUMA_STORE_POSTGRES_DB_NAME=" + db,
	}
}

// kumaCP runs a kuma-cp subcommand to its end with env.
func kumaCP(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kuma-cp"), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// isLeader reads the control plane's leader gauge.
func (cp *controlPlane) isLeader(t *testing.T) bool {
	t.Helper()
	v, err := seriesValue(httpGet(t, cp.diagURL+"/metrics"), `leader{zone="Standalone"}`)
	require.NoError(t, err)
	return v == 1
}

// madsFetch asks the MADS of madsAddr for the assignments newer than
// version (a long poll held up to wait) and returns the new version and the
// dataplane names (mesh/name) assigned.
func madsFetch(madsAddr, version string, wait time.Duration) (string, []string, error) {
	body := fmt.Sprintf(`{"version_info":%q,"node":{"id":"e2e"},"type_url":"type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}`, version)
	c := http.Client{Timeout: wait + 10*time.Second}
	res, err := c.Post(fmt.Sprintf("http://%s/v3/discovery:monitoringassignments?fetch-timeout=%s", madsAddr, wait), "application/json", strings.NewReader(body))
	if err != nil {
		return "", nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", nil, err
	}
	if res.StatusCode == http.StatusNotModified {
		return version, nil, errNotModified
	}
	if res.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("MADS: status %d: %s", res.StatusCode, b)
	}
	var resp struct {
		Version   string `json:"version_info"`
		Resources []struct {
			Mesh    string `json:"mesh"`
			Targets []struct {
				Name string `json:"name"`
			} `json:"targets"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return "", nil, fmt.Errorf("MADS answer: %w: %s", err, b)
	}
	var names []string
	for _, r := range resp.Resources {
		for _, target := range r.Targets {
			names = append(names, r.Mesh+"/"+target.Name)
		}
	}
	sort.Strings(names)
	return resp.Version, names, nil
}

var errNotModified = errors.New("not modified")

// madsNames is what the MADS of madsAddr assigns now.
func madsNames(madsAddr string) ([]string, error) {
	_, names, err := madsFetch(madsAddr, "", 0)
	return names, err
}

// putDataplane registers a Dataplane without a proxy through the REST API
// of apiURL; an error means it was not acknowledged.
func putResource(apiURL, path, body string) error {
	req, err := http.NewRequest(http.MethodPut, apiURL+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("PUT %s: %d %s", path, res.StatusCode, b)
	}
	return nil
}

func dataplaneJSON(name, addr string) string {
	return fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":%q,"inbound":[{"port":8080,"tags":{"kuma.io/service":"load"}}]}}`, name, addr)
}

// writer writes resources through one API until stopped, and keeps the
// names of the writes that were acknowledged.
type writer struct {
	stop  chan struct{}
	once  sync.Once
	done  chan struct{}
	mu    sync.Mutex
	acked []string
	fails atomic.Int64
}

func startWriter(t *testing.T, apiURL, prefix string, body func(name string) (path, json string)) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { w.halt() })
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			name := fmt.Sprintf("%s-%d", prefix, i)
			path, b := body(name)
			if err := putResource(apiURL, path, b); err != nil {
				w.fails.Add(1)
				// A write that failed is written again under a new name:
				// whether it landed is unknown, and only acknowledged
				// writes are promised.
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.mu.Lock()
			w.acked = append(w.acked, name)
			w.mu.Unlock()
		}
	}()
	return w
}

// halt stops the writer (once) and returns the acknowledged names.
func (w *writer) halt() []string {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// waitWrites waits until the writer has n more acknowledged writes.
func (w *writer) waitWrites(t *testing.T, n int) {
	t.Helper()
	target := w.count() + n
	eventually(t, 60*time.Second, func() error {
		if c := w.count(); c < target {
			return fmt.Errorf("%d of %d writes acknowledged (%d failed)", c, target, w.fails.Load())
		}
		return nil
	})
}

// TestReplicasOnPostgres runs two kuma-cp replicas on one PostgreSQL
// database as issue 13 asks: one leader, a write through either reaches
// the other's MADS and proxies, PostgreSQL restarted under load loses no
// acknowledged write and the replicas' views converge, a mesh created
// through both at once gets one CA, and SIGKILL of a replica under steady
// traffic fails no request while its proxies fail over to the other.
func TestReplicasOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	env := postgresEnv(pg, pg.CreateDB(t))
	a := newControlPlane(t, t.TempDir(), env...)
	b := newControlPlane(t, t.TempDir(), env...)

	// An empty database: kuma-cp says what to run, then migrate up does it.
	out, err := kumaCP(t, a.env, "run")
	require.Error(t, err, out)
	require.Contains(t, out, "kuma-cp migrate up")
	out, err = kumaCP(t, a.env, "migrate", "up")
	require.NoError(t, err, out)

	a.start()
	b.start()
	eventually(t, 30*time.Second, func() error {
		if la, lb := a.isLeader(t), b.isLeader(t); la == lb {
			return fmt.Errorf("leaders: A %v, B %v", la, lb)
		}
		return nil
	})
	kA, kB := newKumactl(t, a), newKumactl(t, b)
	kA.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	require.Contains(t, kB.must("get", "meshes"), "default")

	// A write through A answers a long poll held on B.
	version := madsVersion(t, b.madsAddr)
	type answer struct {
		names []string
		err   error
	}
	held := make(chan answer, 1)
	go func() {
		_, names, err := madsFetch(b.madsAddr, version, time.Minute)
		held <- answer{names, err}
	}()
	require.NoError(t, putResource(a.apiURL, "/meshes/default/dataplanes/first", dataplaneJSON("first", loopback.Host())))
	select {
	case got := <-held:
		require.NoError(t, got.err)
		require.Contains(t, got.names, "default/first")
	case <-time.After(90 * time.Second):
		t.Fatal("the long poll held on B was not answered after a write through A")
	}

	t.Run("PostgreSQL restarted under load", func(t *testing.T) {
		w := startWriter(t, a.apiURL, "load", func(name string) (string, string) {
			return "/meshes/default/dataplanes/" + name, dataplaneJSON(name, "127.0.0.1")
		})
		w.waitWrites(t, 20)
		pg.Stop()
		// Down for a while: writes fail, nothing is acknowledged.
		failures := w.fails.Load()
		eventually(t, 30*time.Second, func() error {
			if w.fails.Load() < failures+5 {
				return fmt.Errorf("%d writes failed while PostgreSQL is down", w.fails.Load()-failures)
			}
			return nil
		})
		require.NoError(t, pg.Restart())
		w.waitWrites(t, 20)
		acked := w.halt()
		require.NotZero(t, w.fails.Load(), "no write failed: PostgreSQL did not go away")
		// Every acknowledged write is in the store, and both replicas'
		// mirrors (what MADS serves) converge on it.
		for _, cp := range []*controlPlane{a, b} {
			eventually(t, 60*time.Second, func() error {
				names, err := madsNames(cp.madsAddr)
				if err != nil {
					return err
				}
				for _, n := range acked {
					if !slices.Contains(names, "default/"+n) {
						return fmt.Errorf("%s: MADS misses acknowledged dataplane %s", cp.host, n)
					}
				}
				return nil
			})
		}
		got := kB.must("get", "dataplanes", "--mesh", "default", "-o", "json")
		for _, n := range acked {
			require.Contains(t, got, `"`+n+`"`)
		}
		// Both answer again.
		require.NoError(t, httpOK(a.diagURL+"/ready"))
		require.NoError(t, httpOK(b.diagURL+"/ready"))
	})

	t.Run("one CA when both replicas create the mesh", func(t *testing.T) {
		mesh := `{"type":"Mesh","name":"secure","mtls":{"enabledBackend":"ca-1","backends":[{"name":"ca-1","type":"builtin"}]}}`
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, cp := range []*controlPlane{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = putResource(cp.apiURL, "/meshes/secure", mesh) }()
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...))
		var certs string
		eventually(t, 30*time.Second, func() error {
			certs = kA.must("get", "secrets", "--mesh", "secure", "-o", "json")
			if !strings.Contains(certs, "secure.ca-builtin-cert-ca-1") {
				return fmt.Errorf("no CA yet: %s", certs)
			}
			return nil
		})
		// One CA: its key and certificate are one pair, each written once
		// (never replaced by the other replica's CA), read alike on both.
		certPEM, certWritten := storedSecret(t, a, "secure", "secure.ca-builtin-cert-ca-1")
		keyPEM, keyWritten := storedSecret(t, b, "secure", "secure.ca-builtin-key-ca-1")
		require.True(t, certWritten, "the CA certificate was written more than once")
		require.True(t, keyWritten, "the CA key was written more than once")
		_, err := pki.ParseKeyPair(certPEM, keyPEM)
		require.NoError(t, err, "the mesh's CA key and certificate are not one pair")
	})

	t.Run("SIGKILL of a replica under traffic", func(t *testing.T) {
		failoverUnderTraffic(t, a, b, kB)
	})
}

// failoverUnderTraffic runs backend-1 on A (then B) and frontend-1 on B
// (then A), sends steady traffic through them, kills A, and checks that no
// request failed, every proxy is online on B, every write acknowledged by A
// is there, and discovery is unchanged.
func failoverUnderTraffic(t *testing.T, a, b *controlPlane, kB *kumactl) {
	ca := filepath.Join(a.workDir, "dp-server-ca.pem")
	cps := func(first, second *controlPlane) string {
		return "https://" + first.dpAddr + ",https://" + second.dpAddr
	}
	backendApp, frontendApp, frontAddr := loopback.Host(), loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0", "--latency", "1ms")
	startApp(t, "frontend", "--listen", hostPort(frontendApp, appPort), "--backend", appURL(frontendApp, outboundPort))
	// Tokens issued by A verify on B.
	backendYAML := backendDataplane("backend-1", loopback.Host(), backendApp)
	backend := launchDataplaneAt(t, cps(a, b), ca, "backend-1", backendYAML, a.dataplaneToken(t, "default", "backend-1", servicesOf(t, backendYAML)))
	frontYAML := frontendDataplane(frontAddr, frontendApp)
	front := launchDataplaneAt(t, cps(b, a), ca, "frontend-1", frontYAML, a.dataplaneToken(t, "default", "frontend-1", servicesOf(t, frontYAML)))
	for _, dp := range []*dataplane{backend, front} {
		eventually(t, 30*time.Second, func() error { return httpOK(dp.admin("/ready")) })
	}
	client := &http.Client{Timeout: 10 * time.Second}
	frontURL := appURL(frontAddr, inboundPort)
	eventually(t, 30*time.Second, func() error {
		code, err := getStatus(client, frontURL)
		if err != nil || code != 200 {
			return fmt.Errorf("through the mesh: %d %v", code, err)
		}
		return nil
	})
	kA := newKumactl(t, a)
	for _, k := range []*kumactl{kA, kB} {
		eventually(t, 30*time.Second, func() error { return allOnline(k, "backend-1", "frontend-1") })
	}
	sdBefore, err := madsNames(b.madsAddr)
	require.NoError(t, err)

	tr := startTraffic(t, client, frontURL)

	w := startWriter(t, a.apiURL, "tp", func(name string) (string, string) {
		return "/meshes/default/traffic-permissions/" + name,
			fmt.Sprintf(`{"type":"TrafficPermission","mesh":"default","name":%q,"sources":[{"match":{"kuma.io/service":"*"}}],"destinations":[{"match":{"kuma.io/service":"*"}}]}`, name)
	})
	w.waitWrites(t, 10)
	a.kill()
	acked := w.halt()

	// Proxies keep serving; backend-1 reconnects to B; B leads.
	eventually(t, 60*time.Second, func() error {
		if v := backend.stat(t, "control_plane.connected_state"); v != "1" {
			return fmt.Errorf("backend-1 connected_state %q", v)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		if !b.isLeader(t) {
			return errors.New("B does not lead after A died")
		}
		return nil
	})
	// Online on B within the heartbeat bound: A's subscriptions are
	// closed, backend-1's new one on B is open.
	eventually(t, 90*time.Second, func() error { return allOnline(kB, "backend-1", "frontend-1") })
	tr.waitSent(t, 100)
	tr.requireNoFailure(t)

	got := kB.must("get", "traffic-permissions", "--mesh", "default", "-o", "json")
	for _, n := range acked {
		require.Contains(t, got, `"`+n+`"`, "a write A acknowledged before it was killed is lost")
	}
	sdAfter, err := madsNames(b.madsAddr)
	require.NoError(t, err)
	require.True(t, slices.Equal(sdBefore, sdAfter), "discovery changed when a replica died: %d targets before, %d after", len(sdBefore), len(sdAfter))
}

// allOnline checks that kumactl inspect dataplanes shows each name Online.
func allOnline(k *kumactl, names ...string) error {
	out, errOut, err := k.run("", "inspect", "dataplanes")
	if err != nil {
		return fmt.Errorf("%v: %s", err, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		for _, n := range names {
			if strings.Contains(line, " "+n+" ") && !strings.Contains(line, "Online") {
				return fmt.Errorf("%s is not online:\n%s", n, out)
			}
		}
	}
	for _, n := range names {
		if !bytes.Contains([]byte(out), []byte(n)) {
			return fmt.Errorf("%s not listed:\n%s", n, out)
		}
	}
	return nil
}

// TestMoveFromSQLiteToPostgres follows the README's move from SQLite to
// PostgreSQL with the built binaries: export from a control plane on
// SQLite, migrate up, apply into a control plane on PostgreSQL, restart it;
// it then exports the same stream, and a proxy with a token of the old
// control plane, trusting the old dp-server-ca.pem, connects to the new one.
func TestMoveFromSQLiteToPostgres(t *testing.T) {
	old := newControlPlane(t, t.TempDir())
	old.start()
	kOld := newKumactl(t, old)
	kOld.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	_, errOut, err := kOld.run(`type: Mesh
name: secure
mtls:
  enabledBackend: ca-1
  backends:
  - name: ca-1
    type: builtin
---
type: TrafficPermission
mesh: secure
name: web-to-backend
sources:
- match:
    kuma.io/service: web
destinations:
- match:
    kuma.io/service: backend
`, "apply", "-f", "-")
	require.NoError(t, err, errOut)
	backendApp := loopback.Host()
	backendYAML := backendDataplane("backend-1", loopback.Host(), backendApp)
	_, errOut, err = kOld.run(backendYAML, "apply", "-f", "-")
	require.NoError(t, err, errOut)
	token := old.dataplaneToken(t, "default", "backend-1", servicesOf(t, backendYAML))
	eventually(t, 30*time.Second, func() error {
		if out := kOld.must("get", "secrets", "--mesh", "secure"); !strings.Contains(out, "secure.ca-builtin-cert-ca-1") {
			return fmt.Errorf("no CA for mesh secure yet:\n%s", out)
		}
		return nil
	})
	exported := kOld.must("export", "--include-secrets")
	old.stop()

	pg := pgtest.Start(t)
	neu := newControlPlane(t, t.TempDir(), postgresEnv(pg, pg.CreateDB(t))...)
	out, err := kumaCP(t, neu.env, "migrate", "up")
	require.NoError(t, err, out)
	require.Contains(t, out, "applied migration 1")
	neu.start()
	kNew := newKumactl(t, neu)
	_, errOut, err = kNew.run(exported, "apply", "-f", "-")
	require.NoError(t, err, errOut)
	// The restored signing keys and CAs take effect at the next start.
	neu.stop()
	neu.start()
	require.Equal(t, exported, kNew.must("export", "--include-secrets"))

	startApp(t, "backend", "--name", "backend-1", "--listen", hostPort(backendApp, appPort), "--error-rate", "0", "--latency", "1ms")
	dp := launchDataplaneAt(t, "https://"+neu.dpAddr, filepath.Join(old.workDir, "dp-server-ca.pem"), "backend-1", backendYAML, token)
	eventually(t, 30*time.Second, func() error { return httpOK(dp.admin("/ready")) })
	eventually(t, 30*time.Second, func() error { return allOnline(kNew, "backend-1") })
}

// storedSecret reads a Secret through the REST API of cp (as admin, from
// loopback): its bytes, and whether it was written once (its modification
// time is its creation time).
func storedSecret(t *testing.T, cp *controlPlane, mesh, name string) ([]byte, bool) {
	t.Helper()
	var s struct {
		Data             string    `json:"data"`
		CreationTime     time.Time `json:"creationTime"`
		ModificationTime time.Time `json:"modificationTime"`
	}
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, cp.apiURL+"/meshes/"+mesh+"/secrets/"+name)), &s))
	b, err := base64.StdEncoding.DecodeString(s.Data)
	require.NoError(t, err)
	return b, s.CreationTime.Equal(s.ModificationTime)
}
