// Package benchgrpc is the gRPC service of the proxy benchmarks: one unary
// method, registered by hand (no generated code), that answers every call
// with a google.protobuf.BytesValue of a fixed size. The backend serves it
// and the load generator's gRPC mode calls it.
package benchgrpc

import (
	"bytes"
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service and Method name the unary call; Path is its HTTP/2 :path.
const (
	Service = "kumametrics.bench.Bench"
	Method  = "Unary"
	Path    = "/" + Service + "/" + Method
)

// Register adds the service to s: every call, whatever its request
// BytesValue holds, is answered with a BytesValue of size bytes.
func Register(s *grpc.Server, size int) {
	answer := wrapperspb.Bytes(bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size])
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: Method,
			Handler: func(_ any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.BytesValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				handle := func(context.Context, any) (any, error) { return answer, nil }
				if intercept == nil {
					return handle(ctx, in)
				}
				return intercept(ctx, in, &grpc.UnaryServerInfo{FullMethod: Path}, handle)
			},
		}},
	}, struct{}{})
}

// Encoded is the size of the protobuf encoding of a BytesValue holding size
// bytes: field 1's tag, the length as a varint, the bytes.
func Encoded(size int) int {
	n := 1 + size
	for v := uint64(size); ; v >>= 7 {
		n++
		if v < 0x80 {
			return n
		}
	}
}
