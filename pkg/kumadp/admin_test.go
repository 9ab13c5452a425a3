package kumadp

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
)

func adminGet(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func TestAdminAPI(t *testing.T) {
	dps, err := loadDataplane("", validDataplane)
	require.NoError(t, err)
	a, err := New(Config{CPAddress: "https://127.0.0.1:1", InsecureSkipVerify: true, Dataplane: dps})
	require.NoError(t, err)
	require.NoError(t, a.admin.start("127.0.0.1:0"))
	defer a.admin.close()
	defer a.metrics.close()
	base := "http://" + a.admin.addr()

	code, body := adminGet(t, base+"/ready")
	require.Equal(t, 503, code)
	require.Contains(t, body, "PRE_INITIALIZING")
	code, _ = adminGet(t, base+"/config_dump")
	require.Equal(t, 503, code)

	a.server.SetLive(true)
	code, body = adminGet(t, base+"/stats")
	require.Equal(t, 200, code)
	require.Contains(t, body, "server.live: 1")
	code, body = adminGet(t, base+"/stats?format=prometheus&filter=^server%5C.live$")
	require.Equal(t, 200, code)
	require.Contains(t, body, "envoy_server_live 1")
	require.NotContains(t, body, "envoy_server_uptime", "filtered out")
	code, body = adminGet(t, base+"/stats?filter=(")
	require.Equal(t, 400, code)
	require.Contains(t, body, "filter")
	code, _ = adminGet(t, base+"/stats?format=xml")
	require.Equal(t, 400, code)

	// A config arrives: ready, and dumped.
	cfg, err := anypb.New(&meshv1.ProxyConfig{Mesh: "default", Name: "web-1", Outbounds: []*meshv1.Outbound{{
		Address: "127.0.0.1", Port: 0, Service: "backend", Protocol: "tcp", ClusterName: "backend", Name: "outbound:test",
	}}})
	require.NoError(t, err)
	require.NoError(t, a.apply(&discoveryv3.DiscoveryResponse{VersionInfo: "v1", Resources: []*anypb.Any{cfg}}))
	code, body = adminGet(t, base+"/ready")
	require.Equal(t, 200, code)
	require.Equal(t, "LIVE\n", body)
	code, body = adminGet(t, base+"/config_dump")
	require.Equal(t, 200, code)
	var dump struct {
		Version string         `json:"version_info"`
		Config  map[string]any `json:"config"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &dump), body)
	require.Equal(t, "v1", dump.Version)
	require.Equal(t, "web-1", dump.Config["name"])

	// The cluster exists; none of its statistics changed: usedonly leaves it out.
	code, all := adminGet(t, base+"/stats/prometheus")
	require.Equal(t, 200, code)
	require.Contains(t, all, `envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 0`)
	code, used := adminGet(t, base+"/stats/prometheus?usedonly")
	require.Equal(t, 200, code)
	require.NotContains(t, used, "envoy_cluster_upstream_rq_total")
	require.Contains(t, used, "envoy_server_live 1")

	// A config that cannot be decoded is rejected and the last one stays.
	require.ErrorContains(t, a.apply(&discoveryv3.DiscoveryResponse{VersionInfo: "v2"}), "expected one ProxyConfig")
	_, v := a.Current()
	require.Equal(t, "v1", v)
	a.draining.Store(true)
	code, _ = adminGet(t, base+"/ready")
	require.Equal(t, 503, code)
	a.proxy.Close()
}
