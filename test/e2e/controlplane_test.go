package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

const guideDir = "../../pkg/resource/testdata/guide"

// The Universal snippets of the user guide, and the Kubernetes-form ones
// kumactl also accepts, in the order a user would apply them.
var guideFiles = []string{
	"mesh-universal-short.yaml",
	"mesh-universal-full.yaml",
	"dataplane-override-universal.yaml",
	"trafficpermissions-kubernetes.yaml",
	"mesh-kubernetes-short.yaml",
	"mesh-kubernetes-full.yaml",
}

func TestGuideSnippetsApplyAndSurviveRestart(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)

	for _, f := range guideFiles {
		k.must("apply", "-f", filepath.Join(guideDir, f))
	}
	// Finish with the Universal shortcut, the form the guide shows for Universal.
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))

	mesh := k.must("get", "mesh", "default", "-o", "yaml")
	for _, want := range []string{"port: 5670", "path: /metrics", "kuma.io/service: dataplane-metrics", "enabledBackend: prometheus-1", "skipMTLS: true"} {
		require.Contains(t, mesh, want)
	}
	dp := k.must("get", "dataplane", "example", "-m", "default", "-o", "yaml")
	require.Contains(t, dp, "port: 1234")
	require.Contains(t, dp, "path: /non-standard-path")

	before := map[string]string{}
	for _, kind := range []string{"meshes", "dataplanes", "traffic-permissions"} {
		before[kind] = k.must("get", kind, "-o", "json")
	}
	require.Contains(t, before["traffic-permissions"], "metrics-permissions")
	require.Contains(t, before["traffic-permissions"], "allow-all-default")

	cp.stop()
	cp.start()
	for kind, want := range before {
		require.JSONEq(t, want, k.must("get", kind, "-o", "json"), kind)
	}
}

func TestKumactlReportsBadInput(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)

	syntax := "type: Mesh\nname: a\n---\ntype: Mesh\nname: b\nmetrics:\n  enabledBackend: [oops\n"
	msg := k.fails(syntax, "apply", "-f", "-")
	require.Contains(t, msg, "<stdin>:7: invalid YAML")

	invalid := "type: Mesh\nname: default\nmetrics:\n  backends:\n  - name: p\n    type: prometheus\n    conf:\n      port: 70000\n"
	msg = k.fails(invalid, "apply", "-f", "-")
	require.Contains(t, msg, "metrics.backends[0].conf.port")
	require.Contains(t, msg, "must be in the range 1-65535")

	missingMesh := "type: Dataplane\nmesh: nope\nname: d\nnetworking:\n  address: " + loopback.Host() + "\n  inbound:\n  - port: 1\n    tags:\n      kuma.io/service: a\n"
	msg = k.fails(missingMesh, "apply", "-f", "-")
	require.Contains(t, msg, `mesh "nope" does not exist`)

	// Nothing of the refused documents was stored.
	require.NotContains(t, k.must("get", "meshes"), " b ")
	require.NotContains(t, k.must("get", "mesh", "default", "-o", "yaml"), "70000")
}

func TestDiagnostics(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	require.NoError(t, httpOK(cp.diagURL+"/healthy"))
	httpGet(t, cp.apiURL+"/meshes")
	metrics := httpGet(t, cp.diagURL+"/metrics")
	for _, want := range []string{
		`cp_info{instance_id=`,
		`resources_count{resource_type="Mesh",zone="Standalone"} 1`,
		`resources_count{resource_type="TrafficPermission",zone="Standalone"} 1`,
		`store_bucket{operation="list",resource_type="Mesh",zone="Standalone"`,
		`api_server_http_request_duration_seconds_count{code="200",handler="/meshes",method="GET",zone="Standalone"} 1`,
		`go_goroutines{zone="Standalone"}`,
		`leader{zone="Standalone"} 1`,
	} {
		require.Contains(t, metrics, want)
	}
}

func TestMemoryStoreStartsEmptyEachTime(t *testing.T) {
	cp := newControlPlane(t, t.TempDir(), "KUMA_STORE_TYPE=memory")
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	require.Contains(t, k.must("get", "mesh", "default", "-o", "yaml"), "prometheus-1")
	cp.stop()
	cp.start()
	require.NotContains(t, k.must("get", "mesh", "default", "-o", "yaml"), "prometheus-1")
}

// TestSIGKILLLosesNothingAcknowledged writes dataplanes from several clients,
// kills kuma-cp with SIGKILL in the middle of the writes, restarts it and
// checks that every write it acknowledged is there.
func TestSIGKILLLosesNothingAcknowledged(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()

	const writers, perWriter = 4, 150
	// The dataplanes' address (no proxy runs for them).
	addr := loopback.Host()
	var acked sync.Map // name -> port
	var nAcked atomic.Int64
	var wg sync.WaitGroup
	client := http.Client{Timeout: 5 * time.Second}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				name := fmt.Sprintf("dp-%d-%d", w, i)
				port := 1000 + i
				body := fmt.Sprintf(`{"type":"Dataplane","mesh":"default","name":%q,"networking":{"address":%q,"inbound":[{"port":%d,"tags":{"kuma.io/service":"svc-%d"}}]}}`, name, addr, port, w)
				req, _ := http.NewRequest("PUT", cp.apiURL+"/meshes/default/dataplanes/"+name, bytes.NewReader([]byte(body)))
				res, err := client.Do(req)
				if err != nil {
					return // the control plane is gone
				}
				res.Body.Close()
				if res.StatusCode == http.StatusCreated {
					acked.Store(name, port)
					nAcked.Add(1)
				}
			}
		}()
	}
	// Kill once a good share of the writes was acknowledged, while the rest are in flight.
	eventually(t, 60*time.Second, func() error {
		if n := nAcked.Load(); n < writers*perWriter/4 {
			return fmt.Errorf("%d writes acknowledged so far", n)
		}
		return nil
	})
	cp.kill()
	wg.Wait()
	total := nAcked.Load()
	require.Less(t, total, int64(writers*perWriter), "the kill must land while writes are in flight")
	t.Logf("%d of %d writes acknowledged before SIGKILL", total, writers*perWriter)

	cp.start()
	type list struct {
		Total int `json:"total"`
		Items []struct {
			Name       string `json:"name"`
			Networking struct {
				Inbound []struct {
					Port int `json:"port"`
				} `json:"inbound"`
			} `json:"networking"`
		} `json:"items"`
	}
	var l list
	require.NoError(t, json.Unmarshal([]byte(httpGet(t, cp.apiURL+"/meshes/default/dataplanes?size=1000")), &l))
	stored := map[string]int{}
	for _, it := range l.Items {
		stored[it.Name] = it.Networking.Inbound[0].Port
	}
	missing := 0
	acked.Range(func(k, v any) bool {
		if stored[k.(string)] != v.(int) {
			missing++
			t.Errorf("acknowledged %s (port %d) is not stored after the restart", k, v)
		}
		return true
	})
	require.Zero(t, missing)
	require.GreaterOrEqual(t, int64(l.Total), total)
	require.True(t, strings.HasPrefix(l.Items[0].Name, "dp-"))
}
