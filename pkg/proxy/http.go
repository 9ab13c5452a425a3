package proxy

import (
	"context"
	"net"

	"github.com/kumametrics/mesh/pkg/proxy/h2"
	"github.com/kumametrics/mesh/pkg/proxy/http1"
	"github.com/kumametrics/mesh/pkg/stats"
)

// httpEngine is what a route's handler needs of an HTTP engine (package
// http1's for HTTP/1.1, h2's for HTTP/2 and gRPC).
type httpEngine interface {
	ServeConn(conn net.Conn, external bool)
	Drain(ctx context.Context) error
	Close()
	RetainEndpoints(keep func(endpoint string) bool)
}

// httpHandler carries a route's HTTP through its engine, with the route's
// HTTP connection manager statistics.
type httpHandler struct {
	engine httpEngine
	hcm    *stats.HTTPConnManagerStats
}

// newHTTP1 returns the HTTP/1.1 handler of a route: the lean engine of
// package http1.
func (p *Proxy) newHTTP1(rt route) connHandler {
	hcm := stats.NewHTTPConnManagerStats(p.stats, rt.hcm)
	return newHTTPHandler(rt, hcm, http1.New(http1.Config{
		Pick:     rt.cluster.Pick,
		Dial:     rt.cluster.DialFrom,
		Reusable: rt.cluster.reusable,
		Cluster:  rt.cluster.stats,
		Listener: hcm,
		Log:      p.log,
		Panics:   rt.panics,
	}))
}

// newHTTP2 returns the handler of an http2 or grpc route (HTTP/2 with prior
// knowledge; the mesh's TLS, when on, is below it, done by the proxy
// itself): the engine of package h2, forwarding the streams of downstream
// connections over multiplexed upstream connections, trailers passed
// through.
func newHTTP2(p *Proxy, rt route) connHandler {
	hcm := stats.NewHTTPConnManagerStats(p.stats, rt.hcm)
	return newHTTPHandler(rt, hcm, h2.New(h2.Config{
		Pick:     rt.cluster.Pick,
		Dial:     rt.cluster.DialCounted,
		Reusable: rt.cluster.reusable,
		Cluster:  rt.cluster.stats,
		Listener: hcm,
		Log:      p.log,
		Panics:   rt.panics,
	}))
}

func newHTTPHandler(rt route, hcm *stats.HTTPConnManagerStats, e httpEngine) *httpHandler {
	rt.cluster.watchEndpoints(e.RetainEndpoints)
	return &httpHandler{engine: e, hcm: hcm}
}

func (h *httpHandler) ServeConn(conn net.Conn, external bool) { h.engine.ServeConn(conn, external) }

// Drain stops taking requests (HTTP/2: GOAWAY to every client) and waits
// for those in flight, until ctx ends.
func (h *httpHandler) Drain(ctx context.Context) { _ = h.engine.Drain(ctx) }

func (h *httpHandler) Close() {
	h.engine.Close()
	h.hcm.Release()
}
