package dpserver

import (
	"context"
	"errors"
	"fmt"

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
	// ReasonNoToken: the call carried no token (Unauthenticated).
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
	// ReasonDataplaneNotFound: the proxy asks for a Dataplane of the store
	// (FromStore) that is not there, or whose owner is gone (NotFound; the
	// proxy retries: on Kubernetes the pod controller makes it soon).
	ReasonDataplaneNotFound = "dataplane_not_found"
	// ReasonWrongServiceAccount: a Kubernetes token that does not stand for
	// the Dataplane: of another ServiceAccount than the one of the Pod that
	// owns it, bound to another Pod, of a user rather than a ServiceAccount,
	// or for a Dataplane no Pod controls (PermissionDenied).
	ReasonWrongServiceAccount = "wrong_service_account"
)

var reasons = []string{
	ReasonNoToken, ReasonInvalidToken, ReasonExpiredToken, ReasonWrongDataplane,
	ReasonServiceNotAllowed, ReasonTagNotAllowed, ReasonUntaggedToken, ReasonStoredDataplaneDiffers,
	ReasonDataplaneNotFound, ReasonWrongServiceAccount,
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

// authorize checks that the caller may act as the dataplane key: the
// server's Authenticator must accept the bearer token of the call for it.
// It returns what the caller may be (admitAll when the server
// authenticates no proxy).
func (s *Server) authorize(ctx context.Context, rpc string, key resource.Key) (Admit, error) {
	if key.Mesh == "" || key.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "mesh and name are required")
	}
	if s.opts.Authenticator == nil {
		return admitAll, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	if vs := md.Get("authorization"); len(vs) == 1 {
		token, _ = authn.BearerToken(vs[0])
	}
	admit, err := s.opts.Authenticator.Authenticate(ctx, token, key)
	if err != nil {
		return nil, s.refusal(rpc, key, err)
	}
	return admit, nil
}

// admit checks that the authorized caller may use dp as use says.
func (s *Server) admit(rpc string, key resource.Key, admit Admit, dp *resource.Object, use Use) error {
	if err := admit(dp, use); err != nil {
		return s.refusal(rpc, key, err)
	}
	return nil
}

// refusal turns an error of the Authenticator into the call's gRPC error: a
// *Refusal is counted and logged; a failure to decide is Unavailable (the
// proxy retries).
func (s *Server) refusal(rpc string, key resource.Key, err error) error {
	var r *Refusal
	switch {
	case errors.As(err, &r):
		return s.refuse(rpc, key, r.Code, r.Reason, r.Msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	s.log.Warn("could not authenticate a proxy", "rpc", rpc, "dataplane", key.String(), "err", err)
	return status.Errorf(codes.Unavailable, "dataplane %s: the control plane could not authenticate the proxy: %v; the proxy retries", key, err)
}
