package xds

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/kumametrics/mesh/pkg/latest"
)

// Source tells a stream what to serve one client.
type Source interface {
	// Watch returns the client's current snapshot (nil while none is ready)
	// and a channel closed when a newer one may exist. An error ends the
	// stream; return a gRPC status error to choose its code.
	Watch(ctx context.Context, node *corev3.Node) (*Snapshot, <-chan struct{}, error)
}

// Shared serves one snapshot to every client.
type Shared struct {
	v latest.Value[*Snapshot]
}

// Publish makes s current unless it has the current version; it reports
// whether it did.
func (p *Shared) Publish(s *Snapshot) bool {
	if cur := p.v.Load(); cur != nil && cur.Version() == s.Version() {
		return false
	}
	p.v.Set(s)
	return true
}

// Current returns the current snapshot (nil before the first Publish) and a
// channel closed when another is published.
func (p *Shared) Current() (*Snapshot, <-chan struct{}) { return p.v.Get() }

// Watch implements Source.
func (p *Shared) Watch(context.Context, *corev3.Node) (*Snapshot, <-chan struct{}, error) {
	s, ch := p.v.Get()
	return s, ch, nil
}
