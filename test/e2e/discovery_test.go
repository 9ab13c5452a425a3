package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/resource"
)

// The guide's kuma_sd_configs relabel rules, used here with http_sd_configs.
const guideRelabelRules = `
  relabel_configs:
  - source_labels:
    - __meta_kuma_mesh
    regex: "(.*)"
    target_label: mesh
  - source_labels:
    - __meta_kuma_dataplane
    regex: "(.*)"
    target_label: dataplane
  - source_labels:
    - __meta_kuma_service
    regex: "(.*)"
    target_label: service
  - action: labelmap
    regex: __meta_kuma_label_(.+)
`

// demoDataplanes are frontend-1 and backend-1 (no proxy runs for them), on
// the given addresses.
func demoDataplanes(frontendAddr, backendAddr string) string {
	return fmt.Sprintf(`
type: Dataplane
mesh: default
name: frontend-1
networking:
  address: %s
  inbound:
  - port: 8080
    tags:
      kuma.io/service: frontend
---
type: Dataplane
mesh: default
name: backend-1
networking:
  address: %s
  inbound:
  - port: 8080
    tags:
      kuma.io/service: backend
      version: v1
`, frontendAddr, backendAddr)
}

// applyDiscoveryFixtures applies the guide's Universal mesh with metrics,
// its per-dataplane override (dataplane "example") and demoDataplanes, and
// returns the address of each dataplane by name.
func applyDiscoveryFixtures(t *testing.T, k *kumactl) map[string]string {
	t.Helper()
	override := filepath.Join(guideDir, "dataplane-override-universal.yaml")
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	k.must("apply", "-f", override)
	addrs := map[string]string{"frontend-1": loopback.Host(), "backend-1": loopback.Host()}
	_, errOut, err := k.run(demoDataplanes(addrs["frontend-1"], addrs["backend-1"]), "apply", "-f", "-")
	require.NoError(t, err, errOut)
	// The guide's example keeps the guide's address.
	b, err := os.ReadFile(override)
	require.NoError(t, err)
	example, err := resource.DecodeYAML(b, 1)
	require.NoError(t, err)
	addrs["example"] = example.Dataplane().Networking.Address
	return addrs
}

// poolDataplanes returns the dataplane label of each target of a pool, after
// checking that every target has mesh, dataplane and service labels.
func poolDataplanes(t *testing.T, targets []target) []string {
	t.Helper()
	var out []string
	for _, tg := range targets {
		for _, l := range []string{"mesh", "dataplane", "service"} {
			require.NotEmpty(t, tg.Labels[l], "target %v has no %s label", tg.Labels, l)
		}
		out = append(out, tg.Labels["dataplane"])
	}
	sort.Strings(out)
	return out
}

func TestPrometheusDiscoversDataplanes(t *testing.T) {
	requireProgram(t, "prometheus")
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	addrs := applyDiscoveryFixtures(t, k)

	// kuma-prometheus-sd writes the file the guide's file_sd job reads.
	sdDir := t.TempDir()
	sdFile := filepath.Join(sdDir, "kuma.file_sd.json")
	startProcess(t, filepath.Join(binDir, "kuma-prometheus-sd"), nil, "run",
		"--cp-address=grpc://"+cp.madsAddr, "--output-file="+sdFile)

	config := fmt.Sprintf(`
scrape_configs:
- job_name: 'kuma-dataplanes'
  scrape_interval: 15s
  file_sd_configs:
  - files:
    - %s
- job_name: 'kuma-dataplanes-http-sd'
  scrape_interval: "5s"
%s
  http_sd_configs:
  - url: http://%s/v3/discovery:monitoringassignments/http_sd
    refresh_interval: 1s
`, sdFile, guideRelabelRules, cp.madsAddr)
	prom := startPrometheus(t, config)

	all := []string{"backend-1", "example", "frontend-1"}
	var pools map[string][]target
	eventually(t, 60*time.Second, func() error {
		pools = prom.targets(t)
		for _, pool := range []string{"kuma-dataplanes", "kuma-dataplanes-http-sd"} {
			if got := poolDataplanes(t, pools[pool]); strings.Join(got, ",") != strings.Join(all, ",") {
				return fmt.Errorf("pool %s has %v, want %v", pool, got, all)
			}
		}
		return nil
	})
	for _, pool := range []string{"kuma-dataplanes", "kuma-dataplanes-http-sd"} {
		for _, tg := range pools[pool] {
			require.Equal(t, "default", tg.Labels["mesh"])
			switch tg.Labels["dataplane"] {
			case "example":
				require.Equal(t, "http://"+net.JoinHostPort(addrs["example"], "1234")+"/non-standard-path", tg.ScrapeURL, "the dataplane's override")
				require.Equal(t, "example", tg.Labels["service"])
			case "backend-1":
				require.Equal(t, "http://"+hostPort(addrs["backend-1"], metricsPort)+"/metrics", tg.ScrapeURL)
				require.Equal(t, "backend", tg.Labels["service"])
				require.Equal(t, "v1", tg.Labels["version"])
				require.Equal(t, ",backend,", tg.Labels["kuma_io_services"])
			}
		}
	}

	// Removing a dataplane removes its targets from both jobs.
	k.must("delete", "dataplane", "frontend-1", "-m", "default")
	eventually(t, 60*time.Second, func() error {
		pools = prom.targets(t)
		for _, pool := range []string{"kuma-dataplanes", "kuma-dataplanes-http-sd"} {
			if got := poolDataplanes(t, pools[pool]); strings.Join(got, ",") != "backend-1,example" {
				return fmt.Errorf("pool %s still has %v", pool, got)
			}
		}
		return nil
	})
}
