package proxy

import (
	"context"
	"net"

	"github.com/kumametrics/mesh/pkg/proxy/h2"
	"github.com/kumametrics/mesh/pkg/stats"
)

// http2Handler carries HTTP/2 with prior knowledge (h2c; gRPC) through the
// engine of package h2: the streams of downstream connections go to the
// cluster's endpoints over multiplexed upstream connections (one per
// endpoint while its streams fit), trailers passed through. The mesh's TLS,
// when on, is below it, done by the proxy itself.
type http2Handler struct {
	engine *h2.Proxy
	hcm    *stats.HTTPConnManagerStats
}

func newHTTP2(p *Proxy, rt route) connHandler {
	h := &http2Handler{hcm: stats.NewHTTPConnManagerStats(p.stats, rt.hcm)}
	h.engine = h2.New(h2.Config{
		Pick:     rt.cluster.Pick,
		Dial:     rt.cluster.DialCounted,
		Reusable: rt.cluster.reusable,
		Cluster:  rt.cluster.stats,
		Listener: h.hcm,
		Log:      p.log,
		Panics:   rt.panics,
	})
	rt.cluster.watchEndpoints(h.engine.RetainEndpoints)
	return h
}

func (h *http2Handler) ServeConn(conn net.Conn, external bool) { h.engine.ServeConn(conn, external) }

// Drain tells every client with GOAWAY that no new streams are taken (so it
// opens its next ones elsewhere) and waits for the streams in flight, until
// ctx ends.
func (h *http2Handler) Drain(ctx context.Context) { _ = h.engine.Drain(ctx) }

func (h *http2Handler) Close() {
	h.engine.Close()
	h.hcm.Release()
}
