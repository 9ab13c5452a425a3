package dpconfig

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/resource"
)

func tp(name string, created time.Time, sources []map[string]string, dests ...map[string]string) *resource.Object {
	spec := &resource.TrafficPermissionSpec{}
	for _, s := range sources {
		spec.Sources = append(spec.Sources, resource.Selector{Match: s})
	}
	for _, d := range dests {
		spec.Destinations = append(spec.Destinations, resource.Selector{Match: d})
	}
	o := resource.New("default", name, spec)
	o.Meta.CreationTime = created
	return o
}

func svc(s string) map[string]string { return map[string]string{resource.ServiceTag: s} }

func sources(sel []*meshv1.Selector) []map[string]string {
	var out []map[string]string
	for _, s := range sel {
		out = append(out, s.GetMatch())
	}
	return out
}

func TestAllowedSourcesPicksTheMostSpecific(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	allowAll := tp("allow-all-default", t0, []map[string]string{svc("*")}, svc("*"))
	webOnly := tp("web-from-frontend", t0.Add(time.Hour), []map[string]string{svc("frontend")}, svc("web"))
	webV1 := tp("web-v1-from-admin", t0, []map[string]string{svc("admin")}, map[string]string{resource.ServiceTag: "web", "version": "v1"})
	webStar2 := tp("web-any-version", t0, []map[string]string{svc("ops")}, map[string]string{resource.ServiceTag: "web", "version": "*"})
	newer := tp("web-from-cron", t0.Add(2*time.Hour), []map[string]string{svc("cron")}, svc("web"))
	metrics := tp("metrics-permissions", t0, []map[string]string{svc("prometheus-server")}, svc("dataplane-metrics"), svc("other"))

	cases := []struct {
		name string
		tps  []*resource.Object
		tags map[string]string
		want []map[string]string
	}{
		{"nothing matches: nobody", []*resource.Object{webOnly}, svc("db"), nil},
		{"allow-all", []*resource.Object{allowAll}, svc("db"), []map[string]string{svc("*")}},
		{"exact beats star", []*resource.Object{allowAll, webOnly}, svc("web"), []map[string]string{svc("frontend")}},
		{"more tags beat fewer", []*resource.Object{webOnly, webV1}, map[string]string{resource.ServiceTag: "web", "version": "v1"}, []map[string]string{svc("admin")}},
		{"more exact values beat a star on equal tags", []*resource.Object{webStar2, webV1}, map[string]string{resource.ServiceTag: "web", "version": "v1"}, []map[string]string{svc("admin")}},
		{"a star counts as a matched tag", []*resource.Object{webOnly, webStar2}, map[string]string{resource.ServiceTag: "web", "version": "v2"}, []map[string]string{svc("ops")}},
		{"newest wins a tie", []*resource.Object{webOnly, newer}, svc("web"), []map[string]string{svc("cron")}},
		{"any destination selector counts", []*resource.Object{allowAll, metrics}, svc("dataplane-metrics"), []map[string]string{svc("prometheus-server")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, sources(AllowedSources(tc.tps, tc.tags)))
		})
	}
}

func TestAllowed(t *testing.T) {
	sel := []*meshv1.Selector{{Match: map[string]string{resource.ServiceTag: "frontend", "version": "*"}}, {Match: svc("admin")}}
	require.True(t, Allowed(sel, map[string][]string{resource.ServiceTag: {"frontend"}, "version": {"v1"}}))
	require.True(t, Allowed(sel, map[string][]string{resource.ServiceTag: {"web", "admin"}}), "a peer with several services")
	require.False(t, Allowed(sel, map[string][]string{resource.ServiceTag: {"frontend"}}), "version required (any value)")
	require.False(t, Allowed(sel, map[string][]string{resource.ServiceTag: {"web"}}))
	require.False(t, Allowed(nil, map[string][]string{resource.ServiceTag: {"web"}}), "no permission: nobody")
}

func TestGenerateMTLSAndPermissions(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m := resource.New("", "default", &resource.MeshSpec{
		MTLS: &resource.MTLS{EnabledBackend: "ca-1", Backends: []resource.CertificateAuthorityBackend{
			{Name: "ca-1", Type: "builtin", DpCert: &resource.DpCert{Rotation: &resource.DpCertRotation{Expiration: "1h"}}},
			{Name: "ca-2", Type: "builtin"},
		}},
		Metrics: &resource.Metrics{EnabledBackend: "p", Backends: []resource.MetricsBackend{{Name: "p", Type: "prometheus"}}},
	})
	resource.ApplyDefaults(m)
	secrets := []*resource.Object{
		resource.NewSecret("default", "default.ca-builtin-cert-ca-1", []byte("-----CA1-----\n")),
		resource.NewSecret("default", "default.ca-builtin-key-ca-1", []byte("key1")),
		resource.NewSecret("default", "default.ca-builtin-cert-ca-2", []byte("-----CA2-----\n")),
	}
	web := dp("default", "web-1", resource.Networking{Address: "127.0.0.2", AdvertisedAddress: "192.0.2.1",
		Inbound: []resource.Inbound{{Port: 8080, Tags: tags(resource.ServiceTag, "web")}}})
	perms := []*resource.Object{
		tp("web-from-frontend", now, []map[string]string{svc("frontend")}, svc("web")),
		tp("metrics", now, []map[string]string{svc("prometheus")}, svc("dataplane-metrics")),
	}
	in := Inputs{Meshes: []*resource.Object{m}, Dataplanes: []*resource.Object{web}, TrafficPermissions: perms, Secrets: secrets}

	cfg, err := Generate(NewIndex(in), web)
	require.NoError(t, err)
	require.True(t, cfg.GetMtls().GetEnabled())
	require.Equal(t, "-----CA1-----\n-----CA2-----\n", string(cfg.GetMtls().GetTrustBundle()), "every listed CA is trusted")
	require.NotEmpty(t, cfg.GetMtls().GetCaVersion())
	require.Equal(t, int64(3600), cfg.GetMtls().GetCertLifetimeSeconds())
	require.Zero(t, cfg.GetMtls().GetSwitchAt(), "no switch seen")
	require.Equal(t, []map[string]string{svc("frontend")}, sources(cfg.GetInbounds()[0].GetAllowedSources()))
	require.Equal(t, []map[string]string{svc("prometheus")}, sources(cfg.GetMetrics().GetAllowedSources()))
	require.Equal(t, []string{"127.0.0.2", "192.0.2.1"}, cfg.GetMetrics().GetAddresses())

	// A switch seen by the control plane sets the windows.
	in.Transitions = map[string]time.Time{"default": now}
	cfg, err = Generate(NewIndex(in), web)
	require.NoError(t, err)
	require.Equal(t, now.Add(SwitchDelay).UnixMilli(), cfg.GetMtls().GetSwitchAt())
	require.Equal(t, now.Add(PermissiveWindow).UnixMilli(), cfg.GetMtls().GetPermissiveUntil())

	// Switched off: still a block (the windows), not enabled.
	m.Mesh().MTLS.EnabledBackend = ""
	cfg, err = Generate(NewIndex(in), web)
	require.NoError(t, err)
	require.False(t, cfg.GetMtls().GetEnabled())
	require.NotZero(t, cfg.GetMtls().GetPermissiveUntil())
	// Never had mTLS: no block.
	in.Transitions = nil
	cfg, err = Generate(NewIndex(in), web)
	require.NoError(t, err)
	require.Nil(t, cfg.GetMtls())

	// The CA not created yet: not enabled (proxies stay plain until it is).
	m.Mesh().MTLS.EnabledBackend = "ca-1"
	in.Secrets = nil
	cfg, err = Generate(NewIndex(in), web)
	require.NoError(t, err)
	require.False(t, cfg.GetMtls().GetEnabled())
}
