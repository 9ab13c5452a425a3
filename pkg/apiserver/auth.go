package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/pkg/authn"
)

// Tokens verifies user tokens and issues both kinds (*authn.Issuer).
type Tokens interface {
	VerifyUser(token string) (authn.User, error)
	IssueUser(name string, groups []string, validFor time.Duration) (string, error)
	IssueDataplane(mesh, name string, tags map[string][]string, validFor time.Duration) (string, error)
}

var _ Tokens = (*authn.Issuer)(nil)

// Access is who may use an endpoint. The zero value is AdminOnly, so that an
// endpoint registered without thinking about it is closed.
type Access int

const (
	// AdminOnly endpoints serve callers in authn.AdminGroup: a user token of
	// that group, or a loopback caller without a token when loopback callers
	// are admin. An anonymous caller gets 401, any other user 403.
	AdminOnly Access = iota
	// Public endpoints serve every caller, anonymous ones included (a request
	// with an invalid token is still refused with 401).
	Public
)

// caller is who made a request, as ServeHTTP found out before routing.
type caller struct {
	user authn.User
	// err is why the request's credentials were refused (401 on every route).
	err error
}

type callerKey struct{}

// UserFrom returns the user a request of this server comes from: the user
// of its token, authn.LocalhostAdmin() or authn.Anonymous(). ok is false
// outside a request served by a Server, or when its credentials were refused.
func UserFrom(ctx context.Context) (u authn.User, ok bool) {
	c, found := ctx.Value(callerKey{}).(caller)
	if !found || c.err != nil {
		return authn.User{}, false
	}
	return c.user, true
}

// identify finds who sends r: an admin when it presented one of the admin
// client certificates over TLS; else the user of its bearer token; without
// an Authorization header, an admin when it comes from a loopback address and
// those are admin, anonymous otherwise. Credentials that do not verify (a
// header that is not a valid bearer token, a client certificate that is not
// an admin's) are refused rather than ignored, so that a client learns at
// once that they do not work.
func (s *Server) identify(r *http.Request) caller {
	var certUser *authn.User
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		u, err := s.clientCerts.user(r.TLS.PeerCertificates[0])
		if err != nil {
			return caller{err: err}
		}
		certUser = &u
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		switch {
		case certUser != nil:
			return caller{user: *certUser}
		case s.loopbackIsAdmin() && loopback.IsAddr(r.RemoteAddr):
			return caller{user: authn.LocalhostAdmin()}
		}
		return caller{user: authn.Anonymous()}
	}
	token, ok := authn.BearerToken(h)
	if !ok {
		return caller{err: errors.New("the Authorization header must be `Bearer <user token>`")}
	}
	if s.opts.Tokens == nil {
		return caller{err: errors.New("this API server does not accept tokens")}
	}
	u, err := s.opts.Tokens.VerifyUser(token)
	if err != nil {
		return caller{err: fmt.Errorf("the user token was refused: %w", err)}
	}
	if certUser != nil {
		// Both verified: the certificate makes an admin, which no token exceeds.
		return caller{user: *certUser}
	}
	return caller{user: u}
}

// loopbackIsAdmin: without Tokens nobody could ever be admin, so loopback
// callers are admin whatever LocalhostIsAdmin says.
func (s *Server) loopbackIsAdmin() bool { return s.opts.Tokens == nil || s.opts.LocalhostIsAdmin }

// RequireAdmin wraps h so that only admins reach it: anonymous callers get
// 401, other users 403, in the API's error body. It relies on the Server
// having identified the caller, so h must be served through a Server (see
// Handle); elsewhere every request is refused.
func RequireAdmin(h http.Handler) http.Handler { return guard(AdminOnly, h) }

// guard enforces access on h.
func guard(access Access, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, found := r.Context().Value(callerKey{}).(caller)
		if !found {
			c = caller{err: errors.New("the request was not authenticated (the handler is not served through the API server)")}
		}
		if c.err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kuma", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "Unauthenticated", c.err.Error(), nil)
			return
		}
		if access != Public && !c.user.IsAdmin() {
			refuse(w, r, c.user)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuse answers a caller who is not allowed an admin-only endpoint.
func refuse(w http.ResponseWriter, r *http.Request, u authn.User) {
	what := r.Method + " " + clip(r.URL.EscapedPath())
	if u.IsAnonymous() {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kuma"`)
		writeError(w, http.StatusUnauthorized, "Unauthenticated",
			fmt.Sprintf("%s is allowed to admins only; send a user token of group %s (Authorization: Bearer <token>)", what, authn.AdminGroup), nil)
		return
	}
	writeError(w, http.StatusForbidden, "Access denied",
		fmt.Sprintf("user %q may not %s: it is allowed to admins only (group %s)", u.Name, what, authn.AdminGroup), nil)
}

// clip shortens a value taken from a request before it goes into an answer.
func clip(s string) string {
	const maxLen = 200
	if len(s) > maxLen {
		return s[:maxLen] + "..."
	}
	return s
}
