// Package dpservertest runs a real dataplane server for the tests of its
// clients (kuma-dp) and of its Authenticators: on 127.0.0.1, port chosen by
// the system, over a store (memory unless given), with the resource manager,
// the store mirror and the insights recorder of the control plane, stopped
// when the test ends.
package dpservertest

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/insight/record"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
)

// InstanceID is the control plane instance the server records in the
// proxies' subscriptions.
const InstanceID = "cp-test"

// Server is a running dataplane server.
type Server struct {
	// Addr is host:port of the server.
	Addr string
	// CAFile verifies the server (kuma-dp --ca-cert-file).
	CAFile string
	// Store holds its resources; Manager writes them as the control plane
	// does (mesh "default" exists).
	Store   store.Store
	Manager *manager.Manager
	// Registry has the server's metrics (dp_server_dataplane_refused_total).
	Registry *prometheus.Registry
	// Stop stops the server at once (streams cut, as when the process
	// dies), before the test ends; the test's cleanup does it otherwise.
	Stop func()
}

// Start runs a dataplane server until the test ends. st is its store (nil:
// a new memory store); configure changes its options (the Authenticator,
// the DataplaneSource).
func Start(t testing.TB, st store.Store, configure func(*dpserver.Options)) *Server {
	t.Helper()
	if st == nil {
		st = memory.New()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	fail := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("dataplane server: %s: %v", what, err)
		}
	}
	mgr := manager.New(st, nil)
	fail("default mesh", mgr.EnsureDefaultMesh(ctx))
	rec, err := record.New(record.Options{Store: st, InstanceID: InstanceID, FlushInterval: 5 * time.Millisecond})
	fail("insights", err)
	fail("insights", rec.Register(ctx))
	mir := mirror.New(st, nil, resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission, resource.KindSecret)
	dir := t.TempDir()
	cert, err := dpserver.ServerCertificate(dir, "", "", time.Now())
	fail("certificate", err)
	reg := prometheus.NewRegistry()
	opts := dpserver.Options{Views: mir, Reader: st, Writer: mgr, Insights: rec, InstanceID: InstanceID, Certificate: cert,
		Debounce: 5 * time.Millisecond, Registerer: reg}
	if configure != nil {
		configure(&opts)
	}
	srv, err := dpserver.New(opts)
	fail("new", err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	fail("listen", err)
	wg.Add(4)
	go func() { defer wg.Done(); _ = rec.Run(ctx) }()
	go func() { defer wg.Done(); _ = mir.Run(ctx) }()
	go func() { defer wg.Done(); srv.Reconcile(ctx) }()
	go func() { defer wg.Done(); _ = srv.Serve(ctx, ln) }()
	return &Server{Addr: ln.Addr().String(), CAFile: filepath.Join(dir, dpconfig.ServerCAFile), Store: st, Manager: mgr, Registry: reg, Stop: stop}
}

// Refused reads dp_server_dataplane_refused_total{reason}.
func (s *Server) Refused(t testing.TB, reason string) float64 {
	t.Helper()
	mfs, err := s.Registry.Gather()
	if err != nil {
		t.Fatalf("dataplane server metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dp_server_dataplane_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no dp_server_dataplane_refused_total{reason=%q}", reason)
	return 0
}
