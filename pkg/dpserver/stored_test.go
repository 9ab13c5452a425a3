package dpserver_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/insight/record"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// fromStore configures a server that serves the stored Dataplanes and has
// no Writer at all: any write it tried would fail the test.
func fromStore(auth dpserver.Authenticator) func(*dpserver.Options) {
	return func(o *dpserver.Options) {
		o.Dataplanes = dpserver.FromStore
		o.Writer = nil
		o.Authenticator = auth
	}
}

// connectAs opens a config stream naming the dataplane in node.id, with no
// Dataplane in the metadata (what kuma-dp --name --mesh sends).
func (h *harness) connectAs(t *testing.T, ctx context.Context, nodeID string) *proxyStream {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	s, err := h.client.StreamProxyConfig(ctx)
	require.NoError(t, err)
	require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID}, TypeUrl: dpconfig.TypeURL}))
	t.Cleanup(cancel)
	return &proxyStream{t: t, BidiStreamingClient: s, cancel: cancel}
}

// storeDataplane writes a Dataplane as its owner (the pod controller) does.
func (h *harness) storeDataplane(t *testing.T, js string) *resource.Object {
	t.Helper()
	res, err := h.Manager.Apply(t.Context(), mustDecode(t, js), 0)
	require.NoError(t, err)
	o, err := h.Store.Get(t.Context(), resource.KindDataplane, res.Object.Meta.Key())
	require.NoError(t, err)
	return o
}

// TestServeStoredDataplanes: with dpserver.FromStore, a proxy that names its
// dataplane gets the stored Dataplane's config, follows the owner's changes
// of it, and never makes the server write: deregistering ends its stream
// and leaves the Dataplane and its insight.
func TestServeStoredDataplanes(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, fromStore(dpserver.DataplaneTokens{Verifier: iss}))
	key := resource.Key{Mesh: "default", Name: "web-5c89f4d995-85znn.kuma-example"}
	stored := h.storeDataplane(t, `{"type":"Dataplane","mesh":"default","name":"web-5c89f4d995-85znn.kuma-example","networking":{"address":"127.0.0.7",`+
		`"inbound":[{"port":8080,"tags":{"kuma.io/service":"web_kuma-example_svc_80"}}]}}`)
	ctx := withToken(t.Context(), dpToken(t, iss, key.Name, services("web_kuma-example_svc_80")))

	s := h.connectAs(t, ctx, key.String())
	cfg, _ := s.next()
	require.Equal(t, key.Name, cfg.GetName())
	require.Equal(t, "default", cfg.GetMesh())
	require.Len(t, cfg.GetInbounds(), 1)
	require.Equal(t, "127.0.0.7", cfg.GetInbounds()[0].GetAddress())
	require.Eventually(t, func() bool { return online(h.insight(t, key)) }, waitTimeout, time.Millisecond)

	// The owner changes the Dataplane (the Pod got another IP): the proxy
	// gets it.
	h.storeDataplane(t, `{"type":"Dataplane","mesh":"default","name":"web-5c89f4d995-85znn.kuma-example","networking":{"address":"127.0.0.8",`+
		`"inbound":[{"port":8080,"tags":{"kuma.io/service":"web_kuma-example_svc_80"}}]}}`)
	cfg, _ = s.next()
	require.Equal(t, "127.0.0.8", cfg.GetInbounds()[0].GetAddress())
	changed, err := h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, stored.Meta.Version+1, changed.Meta.Version, "the owner's write only")

	// Deregistering ends the stream; the Dataplane and its insight stay.
	_, err = h.client.Deregister(ctx, &meshv1.DeregisterRequest{Mesh: key.Mesh, Name: key.Name})
	require.NoError(t, err)
	_, err = s.Recv()
	require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "the proxy deregistered")
	require.Eventually(t, func() bool {
		in := h.insight(t, key)
		return len(in.Subscriptions) == 1 && !online(in)
	}, waitTimeout, time.Millisecond, "offline, its subscription kept")
	after, err := h.Store.Get(t.Context(), resource.KindDataplane, key)
	require.NoError(t, err)
	require.Equal(t, changed.Meta.Version, after.Meta.Version, "never written by the server")

	// A certificate is signed for the stored Dataplane's identities.
	enableMTLS(t, h)
	resp, err := certificateFor(t, h, ctx, key.Name)
	require.NoError(t, err)
	require.NotEmpty(t, resp.GetCertChain())
}

func TestServeStoredDataplanesRefusals(t *testing.T) {
	iss := tokenIssuer(t, nil)
	h := start(t, fromStore(dpserver.DataplaneTokens{Verifier: iss}))
	h.storeDataplane(t, `{"type":"Dataplane","mesh":"default","name":"web","networking":{"address":"127.0.0.7",`+
		`"inbound":[{"port":8080,"tags":{"kuma.io/service":"payments"}}]}}`)
	web := withToken(t.Context(), dpToken(t, iss, "web", services("web")))
	ghost := withToken(t.Context(), dpToken(t, iss, "ghost", services("ghost")))

	open := func(ctx context.Context, nodeID string, md map[string]any) error {
		t.Helper()
		s, err := h.client.StreamProxyConfig(ctx)
		require.NoError(t, err)
		meta, err := structpb.NewStruct(md)
		require.NoError(t, err)
		require.NoError(t, s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: nodeID, Metadata: meta}, TypeUrl: dpconfig.TypeURL}))
		_, err = s.Recv()
		require.Error(t, err)
		return err
	}

	// None stored: NotFound, said clearly and counted.
	err := open(ghost, "default/ghost", nil)
	require.Equal(t, codes.NotFound, status.Code(err), "%v", err)
	require.Equal(t, "dataplane default/ghost: no such Dataplane is stored, and this control plane serves only the Dataplanes of its store "+
		"(on Kubernetes the pod controller makes one for each Pod with sidecar injection once it has an IP); the proxy retries", status.Convert(err).Message())
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonDataplaneNotFound))

	// A proxy presenting a Dataplane is told how to run instead.
	err = open(web, "default/web", map[string]any{dpconfig.MetadataDataplane: dataplaneJSON("web", "127.0.0.2", false)})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.ErrorContains(t, err, "run kuma-dp with --name and --mesh instead of --dataplane-file or --dataplane")

	// node.id must name the dataplane.
	for _, id := range []string{"web", "default/", "/web", "default/web/1", "Default/web"} {
		err = open(web, id, nil)
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%s: %v", id, err)
		require.ErrorContains(t, err, "node.id")
	}

	// The authenticator is asked about the stored Dataplane: the token of
	// web does not allow what is stored under web.
	err = open(web, "default/web", nil)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, `dataplane default/web: no config: in the stored Dataplane, networking.inbound[0] has kuma.io/service "payments", `+
		`but the dataplane token allows only "web"; have an admin issue a token that allows it (kumactl generate dataplane-token --mesh default --name web --tag KEY=VALUE)`,
		status.Convert(err).Message())
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonServiceNotAllowed))
	_, err = h.client.Deregister(web, &meshv1.DeregisterRequest{Mesh: "default", Name: "web"})
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	err = open(t.Context(), "default/web", nil)
	require.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
}

// authenticatorFunc is an dpserver.Authenticator of a test.
type authenticatorFunc func(ctx context.Context, token string, key resource.Key) (dpserver.Admit, error)

func (f authenticatorFunc) Authenticate(ctx context.Context, token string, key resource.Key) (dpserver.Admit, error) {
	return f(ctx, token, key)
}

// TestAuthenticatorErrors: a dpserver.Refusal is the proxy's gRPC error and is
// counted under its reason; a failure to decide is Unavailable, not counted.
func TestAuthenticatorErrors(t *testing.T) {
	var (
		mu   sync.Mutex
		seen []string
	)
	h := start(t, fromStore(authenticatorFunc(func(_ context.Context, token string, key resource.Key) (dpserver.Admit, error) {
		mu.Lock()
		seen = append(seen, token+"@"+key.String())
		mu.Unlock()
		switch token {
		case "other-sa":
			return nil, &dpserver.Refusal{Code: codes.PermissionDenied, Reason: dpserver.ReasonWrongServiceAccount, Msg: "dataplane " + key.String() + ": not your pod"}
		case "":
			return nil, errors.New("the API server is away")
		}
		return func(dp *resource.Object, use dpserver.Use) error {
			if use != dpserver.Serve && use != dpserver.Certify {
				return &dpserver.Refusal{Code: codes.PermissionDenied, Reason: dpserver.ReasonWrongDataplane, Msg: "stored only"}
			}
			return nil
		}, nil
	})))
	h.storeDataplane(t, dataplaneJSON("web", "127.0.0.7", false))

	_, err := h.connectAs(t, withToken(t.Context(), "other-sa"), "default/web").Recv()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Equal(t, "dataplane default/web: not your pod", status.Convert(err).Message())
	require.Equal(t, 1.0, h.Refused(t, dpserver.ReasonWrongServiceAccount))

	_, err = h.connectAs(t, t.Context(), "default/web").Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.Equal(t, "dataplane default/web: the control plane could not authenticate the proxy: the API server is away; the proxy retries", status.Convert(err).Message())

	s := h.connectAs(t, withToken(t.Context(), "pod-sa"), "default/web")
	cfg, _ := s.next()
	require.Equal(t, "web", cfg.GetName())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"other-sa@default/web", "@default/web", "pod-sa@default/web"}, seen)
}

func TestNewNeedsAWriterForPresentedDataplanes(t *testing.T) {
	st := memory.New()
	rec, err := record.New(record.Options{Store: st, InstanceID: "cp-1"})
	require.NoError(t, err)
	opts := dpserver.Options{Views: mirror.New(st, nil), Reader: st, Insights: rec}
	_, err = dpserver.New(opts)
	require.ErrorContains(t, err, "a Writer is required")
	opts.Dataplanes = dpserver.FromStore
	_, err = dpserver.New(opts)
	require.NoError(t, err)
	opts.Dataplanes = 7
	_, err = dpserver.New(opts)
	require.ErrorContains(t, err, "unknown DataplaneSource 7")
}
