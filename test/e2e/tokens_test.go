package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/loopback"
)

// seriesValue is the value of a series (name and labels as rendered) in a
// Prometheus text body, or an error.
func seriesValue(body, series string) (float64, error) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no series %s", series)
}

// TestDataplaneTokenBindsServices is the attack of issue 9 with the built
// binaries: the proxy holding frontend-1's token presents itself as
// kuma.io/service: payments. kuma-cp refuses it and counts it; kuma-dp says
// so clearly, once, and picks up a new token from its file without a
// restart.
func TestDataplaneTokenBindsServices(t *testing.T) {
	cp := newControlPlane(t, t.TempDir())
	cp.start()
	k := newKumactl(t, cp)
	token := strings.TrimSpace(k.must("generate", "dataplane-token", "--name", "frontend-1", "--tag", "kuma.io/service=frontend"))
	payments := strings.Replace(backendDataplane("frontend-1", loopback.Host(), loopback.Host()), "kuma.io/service: backend", "kuma.io/service: payments", 1)
	dp := launchDataplane(t, cp, "frontend-1", payments, token)

	refusal := `msg="the control plane refused this proxy" dataplane=default/frontend-1 code=PermissionDenied ` +
		`reason="dataplane default/frontend-1: networking.inbound[0] has kuma.io/service \"payments\", but the dataplane token allows only \"frontend\"; ` +
		`a proxy may present only what its token allows: fix the Dataplane, or have an admin issue a token that allows it ` +
		`(kumactl generate dataplane-token --mesh default --name frontend-1 --tag KEY=VALUE)"`
	eventually(t, 30*time.Second, func() error {
		if !strings.Contains(dp.log.String(), refusal) {
			return fmt.Errorf("kuma-dp has not said the refusal yet")
		}
		return nil
	})
	// kuma-cp counts every attempt; kuma-dp says it once.
	eventually(t, 30*time.Second, func() error {
		v, err := seriesValue(httpGet(t, cp.diagURL+"/metrics"), `dp_server_dataplane_refused_total{reason="service_not_allowed",zone="Standalone"}`)
		if err == nil && v < 2 {
			err = fmt.Errorf("refused %v times", v)
		}
		return err
	})
	logs := dp.log.String()
	require.Equal(t, 1, strings.Count(logs, "the control plane refused this proxy"), logs)
	require.NotContains(t, logs, "the last config stays applied")
	v, err := seriesValue(httpGet(t, dp.admin("/stats/prometheus")), "kuma_dp_dataplane_token_refused")
	require.NoError(t, err)
	require.Equal(t, 1.0, v)
	require.Error(t, httpOK(dp.admin("/ready")), "no config")
	require.NotContains(t, k.must("get", "dataplanes"), "frontend-1", "nothing registered")

	// An admin decides the proxy may serve payments: a new token in its
	// file, and it connects without a restart.
	token = strings.TrimSpace(k.must("generate", "dataplane-token", "--name", "frontend-1", "--tag", "kuma.io/service=payments", "--valid-for", "24h"))
	require.NoError(t, os.WriteFile(dp.tokenFile+".new", []byte(token+"\n"), 0o600))
	require.NoError(t, os.Rename(dp.tokenFile+".new", dp.tokenFile))
	eventually(t, 30*time.Second, func() error { return httpOK(dp.admin("/ready")) })
	require.Contains(t, k.must("get", "dataplanes"), "frontend-1")
	require.Nil(t, dp.cmd.ProcessState, "the same kuma-dp process")
	v, err = seriesValue(httpGet(t, dp.admin("/stats/prometheus")), "kuma_dp_dataplane_token_expiration_timestamp_seconds")
	require.NoError(t, err)
	require.InDelta(t, float64(time.Now().Add(24*time.Hour).Unix()), v, 120)

	// Without --tag, kumactl takes the services of the stored Dataplane and
	// says so on stderr.
	out, errOut, err := k.run("", "generate", "dataplane-token", "--name", "frontend-1")
	require.NoError(t, err, errOut)
	require.Equal(t, "note: the token allows kuma.io/service=payments, the services of the stored Dataplane \"frontend-1\" of mesh \"default\"\n", errOut)
	require.Regexp(t, `^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$`, out, "stdout is the bare token")
}
