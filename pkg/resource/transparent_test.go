package resource

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The reference system's transparently proxied Dataplane, in both forms,
// with the Kubernetes Service address of its inbound and an outbound at a
// virtual address.
const transparentUniversal = `type: Dataplane
mesh: default
name: web-1
networking:
  address: 10.0.0.5
  inbound:
  - port: 8080
    tags:
      kuma.io/service: web
    vips: ["10.96.0.17:80"]
  outbound:
  - address: 10.96.0.20
    port: 80
    tags:
      kuma.io/service: backend
  transparentProxying:
    redirectPortInbound: 15006
    redirectPortOutbound: 15001
`

const transparentKubernetes = `apiVersion: kuma.io/v1alpha1
kind: Dataplane
mesh: default
metadata:
  name: web-1
spec:
  networking:
    address: 10.0.0.5
    inbound:
    - port: 8080
      tags:
        kuma.io/service: web
      vips: ["10.96.0.17:80"]
    outbound:
    - address: 10.96.0.20
      port: 80
      tags:
        kuma.io/service: backend
    transparentProxying:
      redirectPortInbound: 15006
      redirectPortOutbound: 15001
`

func TestTransparentProxyingDecodesInBothForms(t *testing.T) {
	u, err := DecodeYAML([]byte(transparentUniversal), 1)
	require.NoError(t, err)
	k, err := DecodeYAML([]byte(transparentKubernetes), 1)
	require.NoError(t, err)
	require.NoError(t, Validate(u))
	require.Equal(t, specJSON(t, u), specJSON(t, k))
	nw := u.Dataplane().Networking
	require.Equal(t, &TransparentProxying{RedirectPortInbound: 15006, RedirectPortOutbound: 15001}, nw.TransparentProxying)
	require.Equal(t, []string{"10.96.0.17:80"}, nw.Inbound[0].VIPs)
	require.Equal(t, "10.96.0.20", nw.Outbound[0].Address)
}

func TestTransparentProxyingDefaults(t *testing.T) {
	dp := validDataplane()
	dp.Networking.TransparentProxying = &TransparentProxying{}
	o := New("default", "d", dp)
	require.NoError(t, Validate(o))
	ApplyDefaults(o)
	require.Equal(t, &TransparentProxying{RedirectPortInbound: 15006, RedirectPortOutbound: 15001}, dp.Networking.TransparentProxying)
}

func TestTransparentProxyingValidation(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Networking)
		causes []Cause
	}{
		{"inbound redirect port out of range", func(n *Networking) { n.TransparentProxying.RedirectPortInbound = 70000 },
			[]Cause{{"networking.transparentProxying.redirectPortInbound", "must be in the range 1-65535"}}},
		{"outbound redirect port out of range", func(n *Networking) { n.TransparentProxying.RedirectPortOutbound = 65536 },
			[]Cause{{"networking.transparentProxying.redirectPortOutbound", "must be in the range 1-65535"}}},
		{"same redirect ports", func(n *Networking) { n.TransparentProxying.RedirectPortOutbound = 15006 },
			[]Cause{{"networking.transparentProxying.redirectPortOutbound", "must differ from redirectPortInbound (15006)"}}},
		{"default redirect ports equal when one is set to the other's default", func(n *Networking) { n.TransparentProxying.RedirectPortInbound = 15001 },
			[]Cause{{"networking.transparentProxying.redirectPortOutbound", "must differ from redirectPortInbound (15001)"}}},
		{"inbound on a redirect port", func(n *Networking) { n.Inbound[0].Port = 15001 },
			[]Cause{{"networking.inbound[0].port", "port 15001 is a redirect port of transparentProxying"}}},
		{"vip without port", func(n *Networking) { n.Inbound[0].VIPs = []string{"10.96.0.1"} },
			[]Cause{{"networking.inbound[0].vips[0]", `"10.96.0.1" must be an IP address and a port, such as 10.96.0.10:80`}}},
		{"vip with a host name", func(n *Networking) { n.Inbound[0].VIPs = []string{"10.96.0.1:80", "backend:80"} },
			[]Cause{{"networking.inbound[0].vips[1]", `"backend:80" must be an IP address and a port, such as 10.96.0.10:80`}}},
		{"vip with port 0", func(n *Networking) { n.Inbound[0].VIPs = []string{"10.96.0.1:0"} },
			[]Cause{{"networking.inbound[0].vips[0]", `"10.96.0.1:0": port must be in the range 1-65535`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dp := validDataplane()
			dp.Networking.TransparentProxying = &TransparentProxying{}
			tc.change(dp.Networking)
			err := Validate(New("default", "d", dp))
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Equal(t, tc.causes, ve.Causes)
		})
	}
}

func TestDecodeRefusesAMistypedTransparentProxyingField(t *testing.T) {
	_, err := DecodeYAML([]byte(`type: Dataplane
mesh: default
name: d
networking:
  address: 10.0.0.5
  inbound:
  - port: 8080
    tags: {kuma.io/service: web}
  transparentProxying:
    redirectPortInbond: 15006
`), 1)
	require.ErrorContains(t, err, "networking.transparentProxying.redirectPortInbond")
}

func TestMeshOutboundPassthrough(t *testing.T) {
	require.True(t, (&MeshSpec{}).OutboundPassthrough(), "unset: passthrough, as the reference system")
	for _, yaml := range []string{
		"type: Mesh\nname: m\nnetworking:\n  outbound:\n    passthrough: false\n",
		"apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\nspec:\n  networking:\n    outbound:\n      passthrough: false\n",
	} {
		o, err := DecodeYAML([]byte(yaml), 1)
		require.NoError(t, err)
		require.NoError(t, Validate(o))
		require.False(t, o.Mesh().OutboundPassthrough())
	}
	o, err := DecodeYAML([]byte("type: Mesh\nname: m\nnetworking:\n  outbound:\n    passthrough: true\n"), 1)
	require.NoError(t, err)
	require.True(t, o.Mesh().OutboundPassthrough())
}
