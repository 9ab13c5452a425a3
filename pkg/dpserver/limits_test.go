package dpserver_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/netserve/netservetest"
)

func (h *harness) dialH2() (net.Conn, error) {
	cfg := h.tls.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", h.Addr, cfg)
	if err != nil {
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		_ = c.Close()
		return nil, &net.AddrError{Err: "negotiated " + p + ", not h2", Addr: h.Addr}
	}
	return c, nil
}

func TestGRPCLimits(t *testing.T) {
	limits := netserve.GRPCLimits{MaxConcurrentStreams: 9, KeepaliveTime: 300 * time.Millisecond, KeepaliveTimeout: 300 * time.Millisecond, KeepaliveMinTime: 100 * time.Millisecond}
	h := start(t, func(o *dpserver.Options) { o.GRPCLimits = limits })
	netservetest.CheckGRPCLimits(t, h.dialH2, limits)
}

func TestDefaultStreamLimit(t *testing.T) {
	h := start(t)
	netservetest.CheckGRPCStreamLimit(t, h.dialH2, 100)
}
