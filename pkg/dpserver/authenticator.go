package dpserver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"

	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Authenticator decides who may act as a dataplane. The server asks it on
// every call of a proxy (opening the config stream, deregistering, asking
// for a certificate). Universal uses DataplaneTokens; Kubernetes
// authenticates ServiceAccount tokens (pkg/k8s/dpauth).
type Authenticator interface {
	// Authenticate checks the bearer token of a call ("" when it carries
	// none) for the dataplane key (its mesh and name are set) and returns
	// what the caller may be as that dataplane. Refusals are *Refusal;
	// another error is a failure to decide (the proxy gets Unavailable and
	// retries).
	Authenticate(ctx context.Context, token string, key resource.Key) (Admit, error)
}

// Admit checks that an authenticated proxy may use the Dataplane dp (of the
// key it authenticated for) as use says; nil when it may, a *Refusal when
// not.
type Admit func(dp *resource.Object, use Use) error

// Use is what a proxy would do with a Dataplane.
type Use int

const (
	// Present: the proxy presents dp as its own, to be stored (the
	// Universal registration).
	Present Use = iota
	// Replace: dp is stored under the proxy's name, and the proxy would
	// replace it with what it presents, or delete it when it deregisters.
	Replace
	// Serve: dp is stored, and the proxy asks for its config (Dataplanes
	// served from the store, FromStore).
	Serve
	// Certify: dp is stored, and the proxy asks for a workload certificate
	// of its identities.
	Certify
)

// Refusal is an Authenticator's refusal of a proxy: the gRPC code the proxy
// gets (Unauthenticated, PermissionDenied, NotFound), the reason
// dp_server_dataplane_refused_total counts it under (one of the Reason
// constants), and the message for the proxy, which names the dataplane and
// says how to fix it.
type Refusal struct {
	Code   codes.Code
	Reason string
	Msg    string
}

func (r *Refusal) Error() string { return r.Msg }

// admitAll is the Admit of a server that authenticates no proxy.
func admitAll(*resource.Object, Use) error { return nil }

// DataplaneTokens authenticates proxies by dataplane tokens (Universal): a
// token must verify and name the dataplane's mesh and name, and every
// Dataplane the proxy presents, replaces, is served or certified for must
// carry only inbound tags the token allows
// (docs/2026-12-06-dataplane-token-tags.md).
type DataplaneTokens struct {
	// Verifier checks tokens (errors: authn.ErrWrongDataplane,
	// authn.ErrExpired, authn.ErrInvalid).
	Verifier TokenVerifier
	// AllowUntagged accepts tokens that do not constrain kuma.io/service,
	// for any service (dpServer.authn.dpProxy.dpToken.allowUntaggedTokens).
	AllowUntagged bool
}

// TokenVerifier checks that a dataplane token is one for mesh/name
// (errors: authn.ErrWrongDataplane, authn.ErrExpired, authn.ErrInvalid).
type TokenVerifier interface {
	VerifyDataplaneFor(token, mesh, name string) (authn.DataplaneIdentity, error)
}

// Authenticate implements Authenticator.
func (d DataplaneTokens) Authenticate(_ context.Context, token string, key resource.Key) (Admit, error) {
	if token == "" {
		return nil, &Refusal{codes.Unauthenticated, ReasonNoToken,
			fmt.Sprintf("dataplane %s: a dataplane token is required (kuma-dp --dataplane-token-file; kumactl generate dataplane-token)", key)}
	}
	id, err := d.Verifier.VerifyDataplaneFor(token, key.Mesh, key.Name)
	switch {
	case err == nil:
		return func(dp *resource.Object, use Use) error { return d.admit(key, id, dp, use) }, nil
	case errors.Is(err, authn.ErrWrongDataplane):
		return nil, &Refusal{codes.PermissionDenied, ReasonWrongDataplane,
			fmt.Sprintf("dataplane %s: %v; present the token issued for this dataplane (kumactl generate dataplane-token --mesh %s --name %s)",
				key, err, key.Mesh, key.Name)}
	case errors.Is(err, authn.ErrExpired):
		return nil, &Refusal{codes.Unauthenticated, ReasonExpiredToken,
			fmt.Sprintf("dataplane %s: the dataplane token was refused: %v; issue a new one (kumactl generate dataplane-token --mesh %s --name %s) "+
				"and write it to the proxy's token file (kuma-dp re-reads it)", key, err, key.Mesh, key.Name)}
	default:
		return nil, &Refusal{codes.Unauthenticated, ReasonInvalidToken,
			fmt.Sprintf("dataplane %s: the dataplane token was refused: %v; issue a new one (kumactl generate dataplane-token --mesh %s --name %s)",
				key, err, key.Mesh, key.Name)}
	}
}

// admit checks that the token id allows the inbounds of dp (see
// authn.DataplaneIdentity.CheckInbounds).
func (d DataplaneTokens) admit(key resource.Key, id authn.DataplaneIdentity, dp *resource.Object, use Use) error {
	spec := dp.Dataplane()
	var inbounds []map[string]string
	if spec != nil && spec.Networking != nil {
		for _, in := range spec.Networking.Inbound {
			inbounds = append(inbounds, in.Tags)
		}
	}
	err := id.CheckInbounds(inbounds, d.AllowUntagged)
	if err == nil {
		return nil
	}
	if errors.Is(err, authn.ErrUntagged) {
		services := "SERVICE"
		if spec != nil && len(spec.Services()) > 0 {
			services = strings.Join(spec.Services(), ",")
		}
		return &Refusal{codes.PermissionDenied, ReasonUntaggedToken, fmt.Sprintf(
			"dataplane %s: %v, and this control plane refuses such tokens; issue one that does: "+
				"kumactl generate dataplane-token --mesh %s --name %s --tag %s=%s (--tag %s='*' allows any service; "+
				"the control plane setting dpServer.authn.dpProxy.dpToken.allowUntaggedTokens accepts untagged tokens for any service)",
			key, err, key.Mesh, key.Name, authn.ServiceTag, services, authn.ServiceTag)}
	}
	reason := ReasonServiceNotAllowed
	var te *authn.TagError
	if errors.As(err, &te) && te.Key != authn.ServiceTag {
		reason = ReasonTagNotAllowed
	}
	switch use {
	case Replace:
		return &Refusal{codes.PermissionDenied, ReasonStoredDataplaneDiffers, fmt.Sprintf(
			"dataplane %s: a Dataplane of that name is stored that this proxy's token does not cover (its %v), and a proxy never "+
				"replaces or removes such a Dataplane; if this proxy should take the name, an admin deletes it first (kumactl delete dataplane %s --mesh %s)",
			key, err, key.Name, key.Mesh)}
	case Certify:
		return &Refusal{codes.PermissionDenied, reason, fmt.Sprintf(
			"dataplane %s: no certificate: in the stored Dataplane, %v", key, err)}
	case Serve:
		return &Refusal{codes.PermissionDenied, reason, fmt.Sprintf(
			"dataplane %s: no config: in the stored Dataplane, %v; have an admin issue a token that allows it "+
				"(kumactl generate dataplane-token --mesh %s --name %s --tag KEY=VALUE)", key, err, key.Mesh, key.Name)}
	default:
		return &Refusal{codes.PermissionDenied, reason, fmt.Sprintf(
			"dataplane %s: %v; a proxy may present only what its token allows: fix the Dataplane, or have an admin issue a token "+
				"that allows it (kumactl generate dataplane-token --mesh %s --name %s --tag KEY=VALUE)", key, err, key.Mesh, key.Name)}
	}
}
