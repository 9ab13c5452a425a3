package mads

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kumametrics/mesh/pkg/authn"
)

// UserTokens verifies the user tokens of the control plane (*authn.Issuer).
type UserTokens interface {
	VerifyUser(token string) (authn.User, error)
}

// verify checks the value of an Authorization header (or gRPC metadata):
// `Bearer <user token>` (or the bare token) with a token that verifies. Any
// valid user token may read the assignments.
func (s *Server) verify(header string) (authn.User, error) {
	if header == "" {
		return authn.User{}, errors.New("this control plane's monitoring assignments need a user token: send `Authorization: Bearer <token>`")
	}
	token, ok := authn.BearerToken(header)
	if !ok {
		// Prometheus' http_sd_configs (2.42, Debian's) leave out the default
		// type of `authorization: {credentials_file: F}` and send the bare
		// token: accept a value without a scheme as a token.
		if bare := strings.TrimSpace(header); !strings.ContainsAny(bare, " \t") {
			token, ok = bare, true
		}
	}
	if !ok {
		return authn.User{}, errors.New("the Authorization header must be `Bearer <user token>`")
	}
	u, err := s.opts.Tokens.VerifyUser(token)
	if err != nil {
		return authn.User{}, fmt.Errorf("the user token was refused: %w", err)
	}
	return u, nil
}

// authenticate refuses HTTP requests without a valid user token with 401 in
// the server's JSON error body, when the server requires tokens.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.opts.Tokens == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.verify(r.Header.Get("Authorization")); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kuma"`)
			writeError(w, http.StatusUnauthorized, "Unauthenticated", err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// grpcAuthOptions are the interceptors that refuse gRPC calls without a valid
// user token (metadata `authorization: Bearer <token>`) with Unauthenticated,
// when the server requires tokens. A stream ends, Unauthenticated, when its
// token expires (and the issuer's leeway has passed): the client reconnects
// with a fresh one.
func (s *Server) grpcAuthOptions() []grpc.ServerOption {
	if s.opts.Tokens == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if _, err := s.verifyGRPC(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			u, err := s.verifyGRPC(ss.Context())
			if err != nil {
				return err
			}
			if u.ExpiresAt.IsZero() {
				return h(srv, ss)
			}
			// The issuer accepts a token up to Leeway after its exp (checked in
			// whole seconds): the stream ends when a reconnection with the same
			// token would be refused, not earlier.
			ctx, cancel := context.WithDeadline(ss.Context(), u.ExpiresAt.Add(authn.Leeway+time.Second))
			defer cancel()
			err = h(srv, &contextStream{ServerStream: ss, ctx: ctx})
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && ss.Context().Err() == nil {
				return status.Error(codes.Unauthenticated, "the user token expired; reconnect with a valid one")
			}
			return err
		}),
	}
}

func (s *Server) verifyGRPC(ctx context.Context) (authn.User, error) {
	var header string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			header = v[0]
		}
	}
	u, err := s.verify(header)
	if err != nil {
		return authn.User{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return u, nil
}

// contextStream is a server stream with its own context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *contextStream) Context() context.Context { return c.ctx }
