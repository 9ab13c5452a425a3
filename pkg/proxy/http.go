package proxy

import (
	"context"
	"net"

	"github.com/kumametrics/mesh/pkg/proxy/http1"
	"github.com/kumametrics/mesh/pkg/stats"
)

// http1Handler carries HTTP/1.1 through the lean engine of package http1.
type http1Handler struct {
	engine *http1.Proxy
	hcm    *stats.HTTPConnManagerStats
}

// newHTTP1 returns the HTTP/1.1 handler of a route.
func (p *Proxy) newHTTP1(rt route) connHandler {
	h := &http1Handler{hcm: stats.NewHTTPConnManagerStats(p.stats, rt.hcm)}
	h.engine = http1.New(http1.Config{
		Pick:     rt.cluster.Pick,
		Dial:     rt.cluster.DialFrom,
		Reusable: rt.cluster.reusable,
		Cluster:  rt.cluster.stats,
		Listener: h.hcm,
		Log:      p.log,
		Panics:   rt.panics,
	})
	rt.cluster.watchEndpoints(h.engine.RetainEndpoints)
	return h
}

func (h *http1Handler) ServeConn(conn net.Conn, external bool) { h.engine.ServeConn(conn, external) }

func (h *http1Handler) Drain(ctx context.Context) { _ = h.engine.Drain(ctx) }

func (h *http1Handler) Close() {
	h.engine.Close()
	h.hcm.Release()
}
