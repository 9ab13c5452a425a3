package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/controlplane"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/dpconfig"
)

const waitTimeout = 20 * time.Second

type running struct {
	cp   *controlplane.ControlPlane
	stop func()
}

// start runs a control plane on the SQLite store of workDir, every server
// on 127.0.0.1 with a port of its own choosing.
func start(t *testing.T, workDir string) *running {
	t.Helper()
	cfg := cpconfig.Default()
	cfg.General.WorkDir = workDir
	cfg.ListenOn("127.0.0.1")
	cfg.DPServer.Authn.DPProxy.Type = cpconfig.DPProxyAuthnNone
	return startReplica(t, cfg)
}

func (r *running) get(t *testing.T, path string, v any) {
	t.Helper()
	res, err := http.Get("http://" + r.cp.Addrs()["api"] + path)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode, string(b))
	require.NoError(t, json.Unmarshal(b, v), string(b))
}

func (r *running) overview(t *testing.T) apiclient.DataplaneOverview {
	t.Helper()
	var ov apiclient.DataplaneOverview
	r.get(t, "/meshes/default/dataplanes+insights/web-1", &ov)
	return ov
}

func (r *running) instanceID(t *testing.T) string {
	t.Helper()
	var idx apiclient.Index
	r.get(t, "/", &idx)
	return idx.InstanceID
}

// connect opens web-1's config stream, without a token, and takes its first config.
func connect(t *testing.T, r *running, workDir string) context.CancelFunc {
	t.Helper()
	return connectProxy(t, r, filepath.Join(workDir, dpconfig.ServerCAFile), "")
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInsightsSurviveARestart: a proxy's subscription history is kept in
// the SQLite store across a control-plane restart, and a reconnect adds
// to it.
func TestInsightsSurviveARestart(t *testing.T) {
	workDir := t.TempDir()
	first := start(t, workDir)
	firstID := first.instanceID(t)
	disconnect := connect(t, first, workDir)
	eventually(t, "online at the first control plane", func() error {
		if ov := first.overview(t); ov.Status != apiclient.StatusOnline {
			return fmt.Errorf("status %s", ov.Status)
		}
		return nil
	})
	first.stop()
	disconnect()

	second := start(t, workDir)
	secondID := second.instanceID(t)
	require.NotEqual(t, firstID, secondID)
	ov := second.overview(t)
	require.Equal(t, apiclient.StatusOffline, ov.Status, "offline at once after the restart")
	require.Len(t, ov.DataplaneInsight.Subscriptions, 1, "the history is kept")
	old := ov.DataplaneInsight.Subscriptions[0]
	require.Equal(t, firstID, old.ControlPlaneInstanceID)
	require.NotNil(t, old.DisconnectTime, "closed at the clean shutdown")

	connect(t, second, workDir)
	eventually(t, "online at the second control plane", func() error {
		ov := second.overview(t)
		if ov.Status != apiclient.StatusOnline || len(ov.DataplaneInsight.Subscriptions) != 2 {
			return fmt.Errorf("status %s, %d subscriptions", ov.Status, len(ov.DataplaneInsight.Subscriptions))
		}
		return nil
	})
	subs := second.overview(t).DataplaneInsight.Subscriptions
	require.Equal(t, old.ID, subs[0].ID, "the old subscription, then the new one")
	require.Equal(t, secondID, subs[1].ControlPlaneInstanceID)
}
