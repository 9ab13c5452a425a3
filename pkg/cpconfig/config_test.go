package cpconfig

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load("", env(nil))
	require.NoError(t, err)
	require.Equal(t, uint32(5681), c.APIServer.HTTP.Port)
	require.Equal(t, uint32(5678), c.DPServer.Port)
	require.Equal(t, uint32(5676), c.MonitoringAssignmentServer.Port)
	require.Equal(t, uint32(5680), c.Diagnostics.ServerPort)
	require.Equal(t, Duration(30*time.Second), c.MonitoringAssignmentServer.DefaultFetchTimeout)
	require.Equal(t, StoreSQLite, c.Store.Type)
	require.Equal(t, filepath.Join("kuma-data", "kuma.db"), c.SQLitePath())
}

func TestFileThenEnvironment(t *testing.T) {
	f := filepath.Join(t.TempDir(), "cp.yaml")
	require.NoError(t, os.WriteFile(f, []byte("apiServer:\n  http:\n    port: 7000\nstore:\n  type: memory\ngeneral:\n  workDir: /tmp/w\n"), 0o600))
	c, err := Load(f, env(map[string]string{
		"KUMA_API_SERVER_HTTP_PORT":                               "7001",
		"KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT": "1m",
	}))
	require.NoError(t, err)
	require.Equal(t, uint32(7001), c.APIServer.HTTP.Port, "the environment wins over the file")
	require.Equal(t, StoreMemory, c.Store.Type)
	require.Equal(t, "/tmp/w/kuma.db", c.SQLitePath())
	require.Equal(t, Duration(time.Minute), c.MonitoringAssignmentServer.DefaultFetchTimeout)

	c, err = Load("", env(map[string]string{"KUMA_STORE_SQLITE_PATH": "/data/x.db", "KUMA_GENERAL_WORK_DIR": "/w"}))
	require.NoError(t, err)
	require.Equal(t, "/data/x.db", c.SQLitePath())
}

func TestBadSettingsNameTheSetting(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want string
	}{
		{name: "port not a number", env: map[string]string{"KUMA_API_SERVER_HTTP_PORT": "http"}, want: `KUMA_API_SERVER_HTTP_PORT: must be a port number from 0 to 65535, got "http"`},
		{name: "port too large", env: map[string]string{"KUMA_DP_SERVER_PORT": "70000"}, want: "KUMA_DP_SERVER_PORT"},
		{name: "unknown store", env: map[string]string{"KUMA_STORE_TYPE": "etcd"}, want: `store.type (KUMA_STORE_TYPE): must be sqlite or memory, got "etcd"`},
		{name: "bad duration", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT": "soon"}, want: "KUMA_MONITORING_ASSIGNMENT_SERVER_DEFAULT_FETCH_TIMEOUT"},
		{name: "unknown file field", file: "apiServer:\n  htp: {}\n", want: "apiServer.htp: unknown field"},
		{name: "file type error", file: "dpServer:\n  port: high\n", want: "dpServer.port: must be a non-negative integer"},
		{name: "file YAML syntax", file: "a: [\n", want: "invalid YAML"},
		{name: "MADS TLS cert without key", env: map[string]string{"KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE": "c.pem"}, want: "KUMA_MONITORING_ASSIGNMENT_SERVER_TLS_CERT_FILE, _KEY_FILE): set both or neither"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "cp.yaml")
				require.NoError(t, os.WriteFile(path, []byte(tc.file), 0o600))
			}
			_, err := Load(path, env(tc.env))
			require.ErrorContains(t, err, tc.want)
		})
	}
}
