// Package kumadptest runs a data plane proxy (kumadp.Agent) in-process for
// the tests of its control plane side: until the test ends or it is
// stopped, with its log kept and shown when the test failed.
package kumadptest

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/kumametrics/mesh/internal/syncbuffer"
	"github.com/kumametrics/mesh/pkg/kumadp"
)

// Proxy is a running agent.
type Proxy struct {
	*kumadp.Agent
	// Log is what the agent logged.
	Log *syncbuffer.Buffer

	t       testing.TB
	cancel  context.CancelFunc
	done    chan error
	stopped sync.Once
}

// Run starts an agent of cfg (its Log is replaced by one into Proxy.Log)
// that runs until Stop or the end of the test.
func Run(t testing.TB, cfg kumadp.Config) *Proxy {
	t.Helper()
	log := &syncbuffer.Buffer{}
	cfg.Log = slog.New(slog.NewTextHandler(log, nil))
	a, err := kumadp.New(cfg)
	if err != nil {
		t.Fatalf("kuma-dp: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Agent: a, Log: log, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { p.done <- a.Run(ctx) }()
	t.Cleanup(p.Stop)
	return p
}

// Stop shuts the agent down (it deregisters and drains) and waits for it.
func (p *Proxy) Stop() {
	p.stopped.Do(func() {
		p.cancel()
		if err := <-p.done; err != nil {
			p.t.Errorf("kuma-dp stopped with %v", err)
		}
		if p.t.Failed() {
			p.t.Logf("kuma-dp log:\n%s", p.Log.String())
		}
	})
}
