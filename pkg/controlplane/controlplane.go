// Package controlplane assembles and runs kuma-cp: the store, the resource
// manager, the store mirror the reconcilers read, the REST API, the
// monitoring assignment server (MADS) and the diagnostics server, with
// graceful shutdown. In Kubernetes mode (kubernetes.go) the store is the
// Kubernetes API and that mode's own parts join.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/authn"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/cpconfig"
	"github.com/kumametrics/mesh/pkg/diagnostics"
	"github.com/kumametrics/mesh/pkg/dpserver"
	"github.com/kumametrics/mesh/pkg/grpcmetrics"
	"github.com/kumametrics/mesh/pkg/insight/cleanup"
	"github.com/kumametrics/mesh/pkg/insight/record"
	"github.com/kumametrics/mesh/pkg/leader"
	"github.com/kumametrics/mesh/pkg/mads"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/pki"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/metered"
	"github.com/kumametrics/mesh/pkg/version"
	"github.com/kumametrics/mesh/pkg/xds"
)

// ZoneName is the zone label of a single-zone control plane.
const ZoneName = "Standalone"

// shutdownTimeout bounds graceful shutdown of the servers.
const shutdownTimeout = 10 * time.Second

// ControlPlane is a running kuma-cp.
type ControlPlane struct {
	cfg   cpconfig.Config
	log   *slog.Logger
	store store.Store
	// ownsStore: close the store when the control plane stops.
	ownsStore bool
	// leadership runs the work that must happen once.
	leadership *leadership
	registry   *prometheus.Registry
	instanceID string
	servers    []*server
	// tasks run beside the servers until the control plane stops.
	tasks []task
	// listeners of servers that are not plain HTTP servers, by name.
	listeners map[string]net.Listener
	// acceptErrors counts the accepts that failed temporarily, by server.
	acceptErrors *prometheus.CounterVec
}

// task is a component that runs until its context is done.
type task struct {
	name string
	run  func(ctx context.Context) error
}

type server struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// Addrs of the listeners, by server name: api, api-https (when
// apiServer.https.enabled), diagnostics, mads, dp-server.
func (cp *ControlPlane) Addrs() map[string]string {
	out := map[string]string{}
	for _, s := range cp.servers {
		out[s.name] = s.ln.Addr().String()
	}
	for name, ln := range cp.listeners {
		out[name] = ln.Addr().String()
	}
	return out
}

// Store is the control plane's store.
func (cp *ControlPlane) Store() store.Store { return cp.store }

// Leading tells whether this instance is the leader now.
func (cp *ControlPlane) Leading() bool { return cp.leadership.leading.Load() }

// New opens the store, applies first-start defaults and binds every
// listener. On a store that serves one control plane (SQLite, memory) it
// leads at once: the default mesh exists when New returns. On a shared store
// the leader creates it.
func New(ctx context.Context, cfg cpconfig.Config, log *slog.Logger, opts ...Option) (cp *ControlPlane, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.General.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	cp = &ControlPlane{cfg: cfg, log: log, registry: prometheus.NewRegistry(), instanceID: instanceID(), listeners: map[string]net.Listener{}}
	// Every `return nil, err` below sets cp to nil: close what was opened
	// through a copy.
	opened := cp
	defer func() {
		if err != nil {
			opened.close()
		}
	}()
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"zone": ZoneName}, cp.registry)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cp_info", Help: "Static information about the control plane.",
		ConstLabels: prometheus.Labels{"instance_id": cp.instanceID, "version": version.Version, "product": version.Product},
	})
	info.Set(1)
	cp.acceptErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "server_accept_errors_total",
		Help: "Accepts of a server that failed temporarily (out of file descriptors, a connection aborted) and were retried.",
	}, []string{"server"})
	reg.MustRegister(info, cp.acceptErrors)

	var k8s *kubernetesMode
	var b *backend
	switch {
	case cfg.Kubernetes():
		if k8s, err = openKubernetes(ctx, cfg, log); err != nil {
			return nil, err
		}
		// Replicas share the Kubernetes store; each does the singleton work
		// (its writes are conditional, so they do not clash).
		b = &backend{store: k8s.store, elector: leader.Always{}, shared: true}
	case o.backend != nil:
		b = o.backend
	default:
		if b, err = openBackend(ctx, cfg, log); err != nil {
			return nil, err
		}
	}
	raw := b.store
	cp.store, cp.ownsStore = raw, !b.borrowed
	cp.leadership = &leadership{elector: b.elector, log: log.With("component", "leader")}
	if err := cp.leadership.registerMetrics(reg); err != nil {
		return nil, fmt.Errorf("leader metrics: %w", err)
	}
	if k8s != nil {
		// Before the first write: the API server may send it to the webhook.
		if err := cp.startKubernetesAdmission(k8s); err != nil {
			return nil, err
		}
	}
	st, err := metered.Wrap(raw, reg)
	if err != nil {
		return nil, fmt.Errorf("store metrics: %w", err)
	}
	mgr := manager.New(st, log.With("component", "manager"))
	if !cfg.Defaults.SkipMeshCreation {
		cp.leadership.firstStart = mgr.EnsureDefaultMesh
	}
	if leader.LeadsAtOnce(b.elector) {
		// It leads from the start: the first-start steps are done before
		// New returns, as they always were (lead does them again: they are
		// idempotent), and the metric says so from the first scrape.
		cp.leadership.leading.Store(true)
		if cp.leadership.firstStart != nil {
			if err := cp.leadership.firstStart(ctx); err != nil {
				return nil, err
			}
		}
	}
	// The subscriptions of the proxies connected here, and this instance's
	// heartbeat, are written to the store; the heartbeat goes first, so
	// that the subscriptions read online from the first connect.
	// SQLite and memory stores serve one control plane: an instance found
	// at start is a predecessor, and its proxies are offline at once. On a
	// shared store, every replica closes the subscriptions of a replica
	// whose heartbeat is older than insight.HeartbeatTimeout.
	insights, err := record.New(record.Options{Store: st, InstanceID: cp.instanceID, Exclusive: !b.shared, Now: o.now, HeartbeatInterval: o.heartbeat, Log: log.With("component", "insights")})
	if err != nil {
		return nil, err
	}
	if err := insights.Register(ctx); err != nil {
		return nil, err
	}
	cp.tasks = append(cp.tasks, task{"insights", insights.Run})
	// On Kubernetes a Dataplane lives as long as its Pod.
	if age := time.Duration(cfg.Runtime.Universal.DataplaneCleanupAge); age > 0 && !cfg.Kubernetes() {
		cleaner, err := cleanup.New(cleanup.Options{Store: st, Age: age, Registerer: reg, Log: log.With("component", "dataplane-cleanup")})
		if err != nil {
			return nil, err
		}
		cp.leadership.tasks = append(cp.leadership.tasks, task{"dataplane-cleanup", cleaner.Run})
	}
	// The signing keys live in the store, shared by every replica.
	tokens, loaded, err := authn.LoadStored(ctx, st, cfg.General.WorkDir, nil)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if len(loaded.Migrated) > 0 {
		log.Info("moved the token signing keys of the work directory into the store", "files", loaded.Migrated)
	}
	if loaded.AdminTokenIssued {
		log.Info("created the admin user token", "global_secret", authn.AdminTokenSecret)
	}
	if loaded.AdminTokenWritten {
		log.Info("wrote the admin user token", "file", authn.AdminTokenPath(cfg.General.WorkDir))
	}
	var adminCerts []*x509.Certificate
	if dir := cfg.APIServer.Auth.ClientCertsDir; dir != "" {
		if adminCerts, err = apiserver.LoadClientCerts(dir); err != nil {
			return nil, fmt.Errorf("api server: apiServer.auth.clientCertsDir: %w", err)
		}
		log.Info("admin client certificates loaded", "dir", dir, "certificates", len(adminCerts))
	}
	api, err := apiserver.New(apiserver.Options{
		Reader: st, Writer: mgr, Log: log.With("component", "api-server"),
		Registerer: reg, Version: version.Version, InstanceID: cp.instanceID, Zone: ZoneName,
		Tokens: tokens, LocalhostIsAdmin: cfg.APIServer.Authn.LocalhostIsAdmin, AdminClientCerts: adminCerts,
		AllowUntaggedDataplaneTokens: cfg.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens, MaxErrorCauses: cfg.APIServer.MaxErrorCauses,
		KubernetesKinds: kubernetesKinds(cfg), Now: o.now,
	})
	if err != nil {
		return nil, fmt.Errorf("api server: %w", err)
	}
	if err := cp.listen("api", cfg.APIServer.HTTP.Address(), api, nil); err != nil {
		return nil, err
	}
	if https := cfg.APIServer.HTTPS; https.Enabled {
		cert, err := pki.SharedServingCertificate(ctx, st, APIServerCASecret, cfg.General.WorkDir, APIServingFiles, https.TLSCertFile, https.TLSKeyFile, time.Now(),
			net.ParseIP(https.Interface))
		if err != nil {
			return nil, err
		}
		if err := cp.listen("api-https", https.Address(), api, api.TLSConfig(cert)); err != nil {
			return nil, err
		}
	}
	if err := cp.listen("diagnostics", cfg.Diagnostics.Address(), diagnostics.Handler(st, cp.registry, cfg.Diagnostics.DebugEndpoints), nil); err != nil {
		return nil, err
	}

	// Everything derived from the store reads it through one mirror. It
	// leaves out the insights and heartbeats: their writes never trigger a
	// regeneration.
	mir := mirror.New(raw, log.With("component", "mirror"), resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission, resource.KindSecret)
	cas := ca.NewManager(mir, mgr, log.With("component", "ca"))
	cp.tasks = append(cp.tasks, task{"mirror", mir.Run}, task{"leader", cp.leadership.run})
	cp.leadership.tasks = append(cp.leadership.tasks, task{"ca-manager", func(ctx context.Context) error { cas.Reconcile(ctx); return nil }})
	xdsMetrics, err := xds.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	grpcMetrics, err := grpcmetrics.New(reg)
	if err != nil {
		return nil, err
	}
	madsCfg := cfg.MonitoringAssignmentServer
	var madsTokens mads.UserTokens
	if madsCfg.Authn.Type == cpconfig.MADSAuthnToken {
		madsTokens = tokens
	}
	madsServer, err := mads.New(mads.Options{
		Views: mir, TLSCertFile: madsCfg.TLSCertFile, TLSKeyFile: madsCfg.TLSKeyFile, TLSClientCAFile: madsCfg.TLSClientCAFile,
		Tokens: madsTokens, DefaultFetchTimeout: time.Duration(madsCfg.DefaultFetchTimeout), MaxFetchTimeout: time.Duration(madsCfg.MaxFetchTimeout),
		MaxHeldLongPolls: madsCfg.MaxHeldLongPolls, HTTPLimits: cfg.ServerLimits.HTTP.Limits(), GRPCLimits: cfg.ServerLimits.GRPC.Limits(),
		AcceptErrors: cp.acceptErrors.WithLabelValues("mads"),
		XDSMetrics:   xdsMetrics, Registerer: reg, GRPCOptions: grpcMetrics.ServerOptions(), Log: log.With("component", "mads"),
	})
	if err != nil {
		return nil, err
	}
	madsLn, err := net.Listen("tcp", madsCfg.Address())
	if err != nil {
		return nil, fmt.Errorf("monitoring assignment server: listen on %s: %w", madsCfg.Address(), err)
	}
	cp.listeners["mads"] = madsLn
	cp.tasks = append(cp.tasks,
		task{"mads-reconciler", func(ctx context.Context) error { madsServer.Reconcile(ctx); return nil }},
		task{"mads", func(ctx context.Context) error { return madsServer.Serve(ctx, madsLn) }},
	)

	cert, err := dpserver.SharedServerCertificate(ctx, st, cfg.General.WorkDir, cfg.DPServer.TLSCertFile, cfg.DPServer.TLSKeyFile, time.Now(),
		net.ParseIP(cfg.DPServer.Interface))
	if err != nil {
		return nil, err
	}
	dpOpts := dpserver.Options{
		Views: mir, Reader: st, Writer: mgr, Insights: insights, InstanceID: cp.instanceID, Certificate: cert,
		XDSMetrics: xdsMetrics, Registerer: reg,
		GRPCOptions: grpcMetrics.ServerOptions(), Log: log.With("component", "dp-server"),
		GRPCLimits: cfg.ServerLimits.GRPC.Limits(), AcceptErrors: cp.acceptErrors.WithLabelValues("dp-server"),
	}
	if k8s != nil {
		// The pod controller makes the Dataplanes: a proxy names its own
		// and the dataplane server never writes one.
		dpOpts.Dataplanes, dpOpts.Writer = dpserver.FromStore, nil
	}
	untagged := cfg.DPServer.Authn.DPProxy.DPToken.AllowUntaggedTokens
	switch {
	case cfg.DPServer.Authn.DPProxy.Type == cpconfig.DPProxyAuthnNone:
		log.Warn("the dataplane server does not authenticate proxies (dpServer.authn.dpProxy.type: none)")
	case cfg.DPServer.Authn.DPProxy.Type == cpconfig.DPProxyAuthnServiceAccountToken:
		// Validation allows it in Kubernetes mode only: k8s is set.
		if dpOpts.Authenticator, err = k8s.dataplaneAuthenticator(); err != nil {
			return nil, err
		}
	case untagged:
		dpOpts.Authenticator = dpserver.DataplaneTokens{Verifier: tokens, AllowUntagged: true}
		log.Warn("dataplane tokens without kuma.io/service are accepted for any service (dpServer.authn.dpProxy.dpToken.allowUntaggedTokens)")
	default:
		dpOpts.Authenticator = dpserver.DataplaneTokens{Verifier: tokens}
	}
	dps, err := dpserver.New(dpOpts)
	if err != nil {
		return nil, err
	}
	dpLn, err := net.Listen("tcp", cfg.DPServer.Address())
	if err != nil {
		return nil, fmt.Errorf("dataplane server: listen on %s: %w", cfg.DPServer.Address(), err)
	}
	cp.listeners["dp-server"] = dpLn
	cp.tasks = append(cp.tasks,
		task{"dp-reconciler", func(ctx context.Context) error { dps.Reconcile(ctx); return nil }},
		task{"dp-server", func(ctx context.Context) error { return dps.Serve(ctx, dpLn) }},
	)
	if k8s != nil {
		if err := cp.addKubernetesParts(k8s, mgr); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

// kubernetesKinds are the kinds the API only reads: in Kubernetes mode,
// the custom resource kinds.
func kubernetesKinds(cfg cpconfig.Config) []resource.Kind {
	if !cfg.Kubernetes() {
		return nil
	}
	return kubectlKinds()
}

// listen binds an HTTP server, HTTPS with tlsConfig.
func (cp *ControlPlane) listen(name, addr string, h http.Handler, tlsConfig *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s server: listen on %s: %w", name, addr, err)
	}
	log := cp.log.With("component", name+"-server")
	srv := netserve.HTTPServer(h, cp.cfg.ServerLimits.HTTP.Limits(), log)
	srv.TLSConfig = tlsConfig
	cp.servers = append(cp.servers, &server{
		name: name,
		ln:   netserve.Listen(ln, netserve.AcceptOptions{Name: name, Log: log, Errors: cp.acceptErrors.WithLabelValues(name)}),
		srv:  srv,
	})
	return nil
}

// APIServerCASecret is the GlobalSecret holding the API server's generated
// HTTPS CA, shared by the control planes of one store.
const APIServerCASecret = "api-server-ca"

// APIServingFiles are the files of the API server's generated HTTPS
// certificate in the work directory: its own CA (api-server-ca.pem, what
// kumactl --ca-cert-file trusts), apart from the dataplane server's.
var APIServingFiles = pki.ServingFiles{
	Server:       "API server",
	CACommonName: "kuma-api-server-ca",
	CACert:       "api-server-ca.pem",
	CAKey:        "api-server-ca.key",
	Cert:         "api-server.pem",
	Key:          "api-server.key",
}

// Run serves until ctx is done, then shuts down gracefully.
func (cp *ControlPlane) Run(ctx context.Context) error {
	errc := make(chan error, len(cp.servers)+len(cp.tasks))
	tctx, stopTasks := context.WithCancel(context.Background())
	var tasks sync.WaitGroup
	for _, t := range cp.tasks {
		tasks.Add(1)
		go func() {
			defer tasks.Done()
			if err := t.run(tctx); err != nil {
				errc <- fmt.Errorf("%s: %w", t.name, err)
			}
		}()
	}
	for name, ln := range cp.listeners {
		cp.log.Info("server listening", "server", name, "address", ln.Addr().String())
	}
	for _, s := range cp.servers {
		cp.log.Info("server listening", "server", s.name, "address", s.ln.Addr().String())
		go func() {
			serve := s.srv.Serve
			if s.srv.TLSConfig != nil {
				serve = func(ln net.Listener) error { return s.srv.ServeTLS(ln, "", "") }
			}
			if err := serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", s.name, err)
			}
		}()
	}
	cp.log.Info("control plane started", "instance_id", cp.instanceID, "version", version.Version)
	var runErr error
	select {
	case <-ctx.Done():
		cp.log.Info("shutting down")
	case runErr = <-errc:
		cp.log.Error("server failed, shutting down", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range cp.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Shutdown(sctx); err != nil {
				cp.log.Warn("server shutdown", "server", s.name, "err", err)
			}
		}()
	}
	wg.Wait()
	stopTasks()
	tasks.Wait()
	cp.close()
	cp.log.Info("control plane stopped")
	return runErr
}

func (cp *ControlPlane) close() {
	for _, s := range cp.servers {
		_ = s.ln.Close()
	}
	for _, ln := range cp.listeners {
		_ = ln.Close()
	}
	if cp.store != nil && cp.ownsStore {
		if err := cp.store.Close(); err != nil {
			cp.log.Warn("closing the store", "err", err)
		}
	}
}

func instanceID() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}
