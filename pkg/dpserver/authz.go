package dpserver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Reasons of dp_server_dataplane_refused_total: why a call of a proxy was
// refused.
const (
	// ReasonNoToken: the call carried no dataplane token (Unauthenticated).
	ReasonNoToken = "no_token"
	// ReasonInvalidToken: the token does not verify (Unauthenticated).
	ReasonInvalidToken = "invalid_token"
	// ReasonExpiredToken: the token is past its exp (Unauthenticated).
	ReasonExpiredToken = "expired_token"
	// ReasonWrongDataplane: the token is for another dataplane or mesh
	// (PermissionDenied).
	ReasonWrongDataplane = "wrong_dataplane"
	// ReasonServiceNotAllowed: an inbound's kuma.io/service is not one the
	// token allows (PermissionDenied); for a certificate, an inbound of the
	// stored Dataplane.
	ReasonServiceNotAllowed = "service_not_allowed"
	// ReasonTagNotAllowed: an inbound lacks another tag the token names, or
	// carries a value of it the token does not allow (PermissionDenied).
	ReasonTagNotAllowed = "tag_not_allowed"
	// ReasonUntaggedToken: the token does not constrain kuma.io/service and
	// the server does not accept such tokens (PermissionDenied).
	ReasonUntaggedToken = "untagged_token"
	// ReasonStoredDataplaneDiffers: a Dataplane of that name is stored whose
	// inbounds the token does not allow, so the proxy may neither replace
	// nor deregister it (PermissionDenied).
	ReasonStoredDataplaneDiffers = "stored_dataplane_differs"
)

var reasons = []string{
	ReasonNoToken, ReasonInvalidToken, ReasonExpiredToken, ReasonWrongDataplane,
	ReasonServiceNotAllowed, ReasonTagNotAllowed, ReasonUntaggedToken, ReasonStoredDataplaneDiffers,
}

// newRefusedCounter registers dp_server_dataplane_refused_total{reason} on
// reg (kept unregistered when reg is nil), every reason at zero.
func newRefusedCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dp_server_dataplane_refused_total",
		Help: "Calls of data plane proxies the dataplane server refused, by reason.",
	}, []string{"reason"})
	for _, r := range reasons {
		c.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dataplane server metrics: %w", err)
		}
	}
	return c, nil
}

// refuse counts and logs a refused call and returns its gRPC error.
func (s *Server) refuse(rpc string, key resource.Key, code codes.Code, reason, msg string) error {
	s.refused.WithLabelValues(reason).Inc()
	s.log.Warn("refused a proxy", "rpc", rpc, "dataplane", key.String(), "reason", reason, "err", msg)
	return status.Error(code, msg)
}

// authorize checks that the caller may act as the dataplane key: its
// dataplane token must verify and be one for key. It returns the token's
// identity, nil when the server authenticates no proxy.
func (s *Server) authorize(ctx context.Context, rpc string, key resource.Key) (*authn.DataplaneIdentity, error) {
	if key.Mesh == "" || key.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "mesh and name are required")
	}
	if s.opts.Tokens == nil {
		return nil, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if vs := md.Get("authorization"); len(vs) == 1 {
		token, _ = authn.BearerToken(vs[0])
	}
	if token == "" {
		return nil, s.refuse(rpc, key, codes.Unauthenticated, ReasonNoToken,
			fmt.Sprintf("dataplane %s: a dataplane token is required (kuma-dp --dataplane-token-file; kumactl generate dataplane-token)", key))
	}
	id, err := s.opts.Tokens.VerifyDataplaneFor(token, key.Mesh, key.Name)
	switch {
	case err == nil:
		return &id, nil
	case errors.Is(err, authn.ErrWrongDataplane):
		return nil, s.refuse(rpc, key, codes.PermissionDenied, ReasonWrongDataplane,
			fmt.Sprintf("dataplane %s: %v; present the token issued for this dataplane (kumactl generate dataplane-token --mesh %s --name %s)",
				key, err, key.Mesh, key.Name))
	case errors.Is(err, authn.ErrExpired):
		return nil, s.refuse(rpc, key, codes.Unauthenticated, ReasonExpiredToken,
			fmt.Sprintf("dataplane %s: the dataplane token was refused: %v; issue a new one (kumactl generate dataplane-token --mesh %s --name %s) "+
				"and write it to the proxy's token file (kuma-dp re-reads it)", key, err, key.Mesh, key.Name))
	default:
		return nil, s.refuse(rpc, key, codes.Unauthenticated, ReasonInvalidToken,
			fmt.Sprintf("dataplane %s: the dataplane token was refused: %v; issue a new one (kumactl generate dataplane-token --mesh %s --name %s)",
				key, err, key.Mesh, key.Name))
	}
}

// What a Dataplane checked against a token is.
type checked int

const (
	// presented: the Dataplane the proxy presents.
	presented checked = iota
	// stored: the Dataplane of that name in the store, which the proxy
	// would replace or delete.
	stored
	// certified: the stored Dataplane whose identities a certificate gets.
	certified
)

// admit checks that the token id allows the inbounds of dp (see
// authn.DataplaneIdentity.CheckInbounds); nil when id is nil.
func (s *Server) admit(rpc string, key resource.Key, id *authn.DataplaneIdentity, dp *resource.Object, what checked) error {
	if id == nil {
		return nil
	}
	spec := dp.Dataplane()
	var inbounds []map[string]string
	if spec != nil && spec.Networking != nil {
		for _, in := range spec.Networking.Inbound {
			inbounds = append(inbounds, in.Tags)
		}
	}
	err := id.CheckInbounds(inbounds, s.opts.AllowUntaggedTokens)
	if err == nil {
		return nil
	}
	if errors.Is(err, authn.ErrUntagged) {
		services := "SERVICE"
		if spec != nil && len(spec.Services()) > 0 {
			services = strings.Join(spec.Services(), ",")
		}
		return s.refuse(rpc, key, codes.PermissionDenied, ReasonUntaggedToken, fmt.Sprintf(
			"dataplane %s: %v, and this control plane refuses such tokens; issue one that does: "+
				"kumactl generate dataplane-token --mesh %s --name %s --tag %s=%s (--tag %s='*' allows any service; "+
				"the control plane setting dpServer.authn.dpProxy.dpToken.allowUntaggedTokens accepts untagged tokens for any service)",
			key, err, key.Mesh, key.Name, authn.ServiceTag, services, authn.ServiceTag))
	}
	reason := ReasonServiceNotAllowed
	var te *authn.TagError
	if errors.As(err, &te) && te.Key != authn.ServiceTag {
		reason = ReasonTagNotAllowed
	}
	switch what {
	case stored:
		return s.refuse(rpc, key, codes.PermissionDenied, ReasonStoredDataplaneDiffers, fmt.Sprintf(
			"dataplane %s: a Dataplane of that name is stored that this proxy's token does not cover (its %v), and a proxy never "+
				"replaces or removes such a Dataplane; if this proxy should take the name, an admin deletes it first (kumactl delete dataplane %s --mesh %s)",
			key, err, key.Name, key.Mesh))
	case certified:
		return s.refuse(rpc, key, codes.PermissionDenied, reason, fmt.Sprintf(
			"dataplane %s: no certificate: in the stored Dataplane, %v", key, err))
	default:
		return s.refuse(rpc, key, codes.PermissionDenied, reason, fmt.Sprintf(
			"dataplane %s: %v; a proxy may present only what its token allows: fix the Dataplane, or have an admin issue a token "+
				"that allows it (kumactl generate dataplane-token --mesh %s --name %s --tag KEY=VALUE)", key, err, key.Mesh, key.Name))
	}
}
