package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/kumametrics/mesh/internal/loopback"
)

// longPoll sends a MADS long poll for version (held until a change or
// 5 minutes) on a raw connection and leaves it waiting.
func longPoll(c net.Conn, version string) error {
	body := `{"version_info":"` + version + `","node":{"id":"flood"},"type_url":"type.googleapis.com/kuma.observability.v1.MonitoringAssignment"}`
	_, err := fmt.Fprintf(c, "POST /v3/discovery:monitoringassignments?fetch-timeout=5m HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return err
}

// madsVersion is the version of the current assignments (waiting for the
// first generation).
func madsVersion(t *testing.T, madsAddr string) string {
	t.Helper()
	var v string
	eventually(t, 30*time.Second, func() error {
		res, err := http.Post("http://"+madsAddr+"/v3/discovery:monitoringassignments?fetch-timeout=0s", "application/json", strings.NewReader(`{}`))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", res.StatusCode, b)
		}
		_, rest, ok := strings.Cut(string(b), `"version_info":"`)
		if !ok {
			return fmt.Errorf("no version_info in %s", b)
		}
		v, _, _ = strings.Cut(rest, `"`)
		return nil
	})
	return v
}

func openFiles(pid int) int {
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(entries)
}

// Under `ulimit -n 64`, a flood of connections exhausts kuma-cp's file
// descriptors: it keeps running, retries accepting, and serves every API
// again once the connections are gone.
func TestControlPlaneSurvivesFileDescriptorExhaustion(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.nofile = 64
	cp.start()
	version := madsVersion(t, cp.madsAddr)

	// More held long polls than descriptors: the last ones wait unaccepted.
	const flood = 100
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", cp.madsAddr, 10*time.Second)
		require.NoError(t, err, "the kernel completes connections to a listening socket")
		conns = append(conns, c)
		require.NoError(t, longPoll(c, version))
	}
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(cp.log.String(), "accepting connections fails") {
			return fmt.Errorf("kuma-cp has not run out of descriptors yet (%d open)", openFiles(cp.cmd.Process.Pid))
		}
		return nil
	})
	require.Contains(t, cp.log.String(), "too many open files")
	select {
	case err := <-cp.done:
		cp.done <- err
		t.Fatalf("kuma-cp exited when it ran out of file descriptors: %v\n%s", err, cp.log.String())
	default:
	}

	// The flood ends: everything serves again.
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	// New connections each time: accepting works again.
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	okOnNewConn := func(url string) func() error {
		return func() error {
			code, err := getStatus(fresh, url)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("%s: status %d", url, code)
			}
			return nil
		}
	}
	eventually(t, 60*time.Second, okOnNewConn(cp.diagURL+"/ready"))
	eventually(t, 60*time.Second, okOnNewConn(cp.apiURL+"/meshes/default"))
	eventually(t, 60*time.Second, okOnNewConn("http://"+cp.madsAddr+"/v3/discovery:monitoringassignments/http_sd"))
	require.Contains(t, cp.log.String(), "accepting connections again")
	metrics := httpGet(t, cp.diagURL+"/metrics")
	require.Regexp(t, `server_accept_errors_total\{server="mads",zone="Standalone"\} [1-9]`, metrics)
	cp.stop()
}

// Under `ulimit -n 64`, a flood of connections exhausts kuma-dp's file
// descriptors: its inbound listener keeps retrying and carries traffic
// again once the connections are gone, and the proxy stays ready.
func TestDataplaneSurvivesFileDescriptorExhaustion(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	k.must("apply", "-f", filepath.Join(guideDir, "mesh-universal-short.yaml"))
	app, addr := loopback.Host(), loopback.Host()
	startApp(t, "backend", "--name", "b", "--listen", hostPort(app, appPort), "--error-rate", "0")
	dp := startDataplane(t, cp, "backend-1", backendDataplane("backend-1", addr, app))
	inbound := hostPort(addr, inboundPort)
	lim := unix.Rlimit{Cur: 64, Max: 64}
	require.NoError(t, unix.Prlimit(dp.cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil))

	// Idle keep-alive connections to the inbound, more than descriptors.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range 100 {
		c, err := net.DialTimeout("tcp", inbound, 10*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	eventually(t, 30*time.Second, func() error {
		for _, line := range strings.Split(dp.log.String(), "\n") {
			if strings.Contains(line, "accepting connections fails") && strings.Contains(line, "listener=inbound:"+inbound) {
				return nil
			}
		}
		return fmt.Errorf("kuma-dp's inbound has not run out of descriptors yet (%d open)", openFiles(dp.cmd.Process.Pid))
	})
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil

	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, 60*time.Second, func() error {
		code, err := getStatus(fresh, "http://"+inbound+"/")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	select {
	case err := <-dp.done:
		dp.done <- err
		t.Fatalf("kuma-dp exited: %v", err)
	default:
	}
	require.Equal(t, "LIVE\n", httpGet(t, dp.admin("/ready")))
	require.NotEqual(t, "0", dp.stat(t, "listener.inbound_"+strings.ReplaceAll(inbound, ":", "_")+".accept_errors"))
}
