package kumactl_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/kumactl/config"
	"github.com/kumametrics/mesh/pkg/resource"
)

func TestDelete(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantCall string
	}{
		{"dataplane", []string{"delete", "dataplane", "web-1"}, "Dataplane default/web-1"},
		{"traffic-permission in a mesh", []string{"delete", "traffic-permission", "allow-all", "-m", "demo"}, "TrafficPermission demo/allow-all"},
		{"mesh", []string{"delete", "mesh", "demo"}, "Mesh demo"},
		{"not found", []string{"delete", "dataplane", "nope"}, "Dataplane default/nope"},
		{"no name", []string{"delete", "dataplane"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var calls []string
			e.cp.Delete = func(w http.ResponseWriter, _ *http.Request, d resource.Descriptor, mesh, name string) {
				calls = append(calls, string(d.Kind)+" "+resource.Key{Mesh: mesh, Name: name}.String())
				if name == "nope" {
					writeNotFound(w)
					return
				}
				writeJSON(w, http.StatusOK, map[string]string{})
			}
			golden(t, "delete/"+tc.name, e.run(tc.args...).String())
			if tc.wantCall == "" {
				require.Empty(t, calls)
			} else {
				require.Equal(t, []string{tc.wantCall}, calls)
			}
		})
	}
}

func overviews() []apiclient.DataplaneOverview {
	at := func(d time.Duration) *time.Time { v := now.Add(-d); return &v }
	dps := fixtureDataplanes()
	ov := func(i int, status string, subs ...apiclient.Subscription) apiclient.DataplaneOverview {
		return apiclient.DataplaneOverview{
			Mesh: dps[i].Meta.Mesh, Name: dps[i].Meta.Name, CreationTime: dps[i].Meta.CreationTime, ModificationTime: dps[i].Meta.ModificationTime,
			Dataplane: *dps[i].Dataplane(), DataplaneInsight: apiclient.DataplaneInsight{Subscriptions: subs}, Status: status,
		}
	}
	sub := func(id string, connected time.Duration, disconnected, updated *time.Time, sent, rejected uint64) apiclient.Subscription {
		return apiclient.Subscription{
			ID: id, ControlPlaneInstanceID: "cp-0-a1b2", ConnectTime: *at(connected), DisconnectTime: disconnected,
			Status: apiclient.SubscriptionStatus{LastUpdateTime: updated, Total: apiclient.Totals{ResponsesSent: sent, ResponsesAcknowledged: sent - rejected, ResponsesRejected: rejected}},
		}
	}
	return []apiclient.DataplaneOverview{
		ov(0, apiclient.StatusOnline,
			sub("s-1", 3*time.Hour, at(2*time.Hour), at(150*time.Minute), 10, 1),
			sub("s-2", 2*time.Hour, nil, at(30*time.Second), 7, 2)),
		ov(1, apiclient.StatusOffline,
			sub("s-3", 25*time.Hour, at(24*time.Hour), nil, 0, 0)),
		ov(2, apiclient.StatusOffline),
	}
}

func TestInspect(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"dataplanes", []string{"inspect", "dataplanes"}},
		{"dataplanes of an empty mesh", []string{"inspect", "dataplanes", "-m", "empty"}},
		{"dataplanes of a missing mesh", []string{"inspect", "dataplanes", "-m", "nope"}},
		{"services", []string{"inspect", "services"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.cp.Overviews = func(w http.ResponseWriter, _ *http.Request, mesh string) {
				switch mesh {
				case "default":
					writePage(w, overviews())
				case "empty":
					writePage[apiclient.DataplaneOverview](w, nil)
				default:
					writeNotFound(w)
				}
			}
			e.cp.ServiceInsights = func(w http.ResponseWriter, _ *http.Request, mesh string) {
				require.Equal(t, "default", mesh)
				writePage(w, []apiclient.ServiceInsight{
					{Mesh: "default", Name: "backend", Status: apiclient.ServicePartiallyDegraded, Dataplanes: apiclient.DataplaneCounts{Online: 2, Offline: 1, Total: 3}},
					{Mesh: "default", Name: "web", Status: apiclient.ServiceOnline, Dataplanes: apiclient.DataplaneCounts{Online: 1, Total: 1}},
				})
			}
			golden(t, "inspect/"+tc.name, e.run(tc.args...).String())
		})
	}
}

func TestVersion(t *testing.T) {
	t.Run("with server", func(t *testing.T) {
		e := newEnv(t)
		e.cp.Index = indexHandler("0.1.0")
		golden(t, "version/with server", e.run("version").String())
	})
	t.Run("without server", func(t *testing.T) {
		e := newEnv(t)
		addr := e.cp.URL()
		e.cp.srv.Close()
		res := e.run("version")
		require.Equal(t, 0, res.code)
		require.Equal(t, "Client: kumactl 1.2.3-test\n", res.stdout)
		require.Contains(t, res.stderr, "WARNING: the control plane's version is unknown: cannot reach the control plane at "+addr)
	})
}

func TestConfigControlPlanes(t *testing.T) {
	e := newEnv(t)
	// Start from no config file at all, in a directory that does not exist yet.
	e.cfgFile = filepath.Join(t.TempDir(), "home", ".kumactl", "config")
	e.cp.Index = indexHandler("0.1.0")
	serveFixtures(e.cp)
	other := newFakeCP(t)
	other.Index = indexHandler("0.2.0")
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html>It works!</html>"))
	}))
	t.Cleanup(html.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	fileExists := func() bool {
		_, err := os.Stat(e.cfgFile)
		return err == nil
	}
	steps := []struct {
		name string
		args []string
	}{
		{"list without a config file", []string{"config", "control-planes", "list"}},
		{"add", []string{"config", "control-planes", "add", "--name", "cp-1", "--address", e.cp.URL() + "/"}},
		{"list after add", []string{"config", "control-planes", "list"}},
		{"get uses the new control plane", []string{"get", "meshes"}},
		{"add an existing name", []string{"config", "control-planes", "add", "--name", "cp-1", "--address", other.URL()}},
		{"add an unreachable address", []string{"config", "control-planes", "add", "--name", "cp-2", "--address", goneURL}},
		{"add an address that is not the api", []string{"config", "control-planes", "add", "--name", "cp-2", "--address", html.URL}},
		{"add a malformed address", []string{"config", "control-planes", "add", "--name", "cp-2", "--address", "localhost:5681"}},
		{"add with overwrite", []string{"config", "control-planes", "add", "--name", "cp-1", "--address", other.URL(), "--overwrite"}},
		{"version of the overwritten control plane", []string{"version"}},
		{"switch", []string{"config", "control-planes", "switch", "--name", "local"}},
		{"list after switch", []string{"config", "control-planes", "list"}},
		{"switch to an unknown name", []string{"config", "control-planes", "switch", "--name", "nope"}},
		{"switch back", []string{"config", "control-planes", "switch", "--name", "cp-1"}},
		{"remove", []string{"config", "control-planes", "remove", "--name", "cp-1"}},
		{"list after remove", []string{"config", "control-planes", "list"}},
	}
	for i, step := range steps {
		res := e.run(step.args...)
		golden(t, "config/"+step.name, res.String(),
			e.cp.URL(), "{{CP1}}", other.URL(), "{{CP2}}", html.URL, "{{HTML}}", goneURL, "{{GONE}}",
			strings.TrimPrefix(goneURL, "http://"), "{{GONE_HOST}}")
		if i == 0 {
			require.False(t, fileExists(), "listing must not write the config file")
		}
	}

	fi, err := os.Stat(e.cfgFile)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	di, err := os.Stat(filepath.Dir(e.cfgFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), di.Mode().Perm())
	cfg, exists, err := config.Load(e.cfgFile)
	require.NoError(t, err)
	require.True(t, exists)
	require.Equal(t, config.Default(), cfg)
}

func TestBrokenConfigFile(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, os.WriteFile(e.cfgFile, []byte("currentContext: elsewhere\n"), 0o600))
	res := e.run("get", "meshes")
	require.Equal(t, 1, res.code)
	require.Equal(t, "Error: the kumactl config "+e.cfgFile+" is not valid: currentContext: no context is named \"elsewhere\"\n", res.stderr)
}
