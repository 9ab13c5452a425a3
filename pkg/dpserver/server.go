// Package dpserver is the control plane's dataplane server: data plane
// proxies connect to it over TLS, authenticated by an Authenticator, and
// receive their proxy config as a stream (xDS state of the world with
// ACK/NACK), kept current as the store changes. Where a proxy's Dataplane
// comes from is the server's DataplaneSource: in Universal the proxy
// presents it, the server stores it and removes it when the proxy
// deregisters on a clean shutdown; on Kubernetes the pod controller owns the
// Dataplanes and the server only serves them. It records each proxy's
// subscription for the insights.
package dpserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshv1 "github.com/kumametrics/mesh/api/mesh/v1"
	"github.com/kumametrics/mesh/pkg/ca"
	"github.com/kumametrics/mesh/pkg/dpconfig"
	"github.com/kumametrics/mesh/pkg/latest"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/mirror"
	"github.com/kumametrics/mesh/pkg/netserve"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/xds"
)

// Views gives the current view of the store and a signal of its next change.
type Views = mirror.Views

// Reader reads the store: the Dataplane a proxy would replace or delete is
// checked as stored, not as the mirror last saw it.
type Reader interface {
	Get(ctx context.Context, kind resource.Kind, key resource.Key) (*resource.Object, error)
}

// Writer changes resources with validation and defaults (the manager).
type Writer interface {
	Apply(ctx context.Context, obj *resource.Object, ifVersion int64) (*manager.Result, error)
	Delete(ctx context.Context, kind resource.Kind, key resource.Key, ifVersion int64) error
}

// Insights records the subscriptions of the proxies (the control plane's
// *record.Recorder, which writes them to the store as DataplaneInsights).
type Insights interface {
	Connect(key resource.Key, sub resource.Subscription)
	Update(key resource.Key, id string, change func(*resource.Subscription))
	Disconnect(key resource.Key, id string, at time.Time)
	Forget(key resource.Key)
}

// DataplaneSource says where the Dataplane of a connecting proxy comes from.
type DataplaneSource int

const (
	// FromProxy (Universal): the proxy presents its Dataplane in the node
	// metadata (dpconfig.MetadataDataplane) of its first request; the server
	// validates and stores it, and deletes it when the proxy deregisters.
	FromProxy DataplaneSource = iota
	// FromStore (Kubernetes): the Dataplanes are made by another owner (the
	// pod controller); a proxy names its dataplane in node.id
	// ("<mesh>/<name>") and presents none; the server serves the stored
	// Dataplane and never writes or deletes one: deregistering closes the
	// proxy's stream only.
	FromStore
)

// Options configure a Server.
type Options struct {
	// Authenticator decides which dataplane the caller of every call (its
	// "authorization: Bearer" metadata) may act as; nil admits any proxy.
	Authenticator Authenticator
	// Dataplanes is where proxies' Dataplanes come from (FromProxy by
	// default).
	Dataplanes DataplaneSource

	Views  Views
	Reader Reader
	// Writer stores presented Dataplanes (FromProxy only: unused and may be
	// nil with FromStore).
	Writer     Writer
	Insights   Insights
	InstanceID string
	// Certificate the server presents.
	Certificate tls.Certificate
	// Debounce before regenerating configs after a change (default 50ms).
	Debounce   time.Duration
	XDSMetrics *xds.Metrics
	// Registerer takes dp_server_dataplane_refused_total (may be nil).
	Registerer prometheus.Registerer
	// GRPCOptions are added to the gRPC server's (interceptors).
	GRPCOptions []grpc.ServerOption
	// GRPCLimits bound what one proxy's connection can hold (zero fields:
	// netserve's defaults).
	GRPCLimits netserve.GRPCLimits
	// AcceptErrors counts the accepts that failed temporarily (may be nil).
	AcceptErrors netserve.Counter
	Log          *slog.Logger
	// Now is the clock (time.Now by default).
	Now func() time.Time
}

// Server serves proxy configs.
type Server struct {
	opts    Options
	log     *slog.Logger
	xds     *xds.Server
	grpc    *grpc.Server
	refused *prometheus.CounterVec

	mu      sync.Mutex
	proxies map[resource.Key]*proxy
	// kick asks the reconciler to generate (a proxy registered).
	kick chan struct{}
	// transitions is used by the reconciler only.
	transitions transitions
	// index is the reconciler's last index (nil while no proxy is
	// connected); the next follows it (dpconfig.Index.Next).
	index *dpconfig.Index
}

// transitions remembers, per mesh, whether mTLS was on at the last
// generation and when the control plane saw it switch.
type transitions struct {
	enabled map[string]bool
	at      map[string]time.Time
}

// observe records switches seen in view and returns the switch times. A
// mesh seen for the first time has no switch: its state is as it was.
func (t *transitions) observe(view *mirror.View, now time.Time) map[string]time.Time {
	if t.enabled == nil {
		t.enabled, t.at = map[string]bool{}, map[string]time.Time{}
	}
	seen := map[string]bool{}
	for _, m := range view.List(resource.KindMesh, "") {
		name := m.Meta.Name
		seen[name] = true
		on := ca.Enabled(m.Mesh()) != nil
		if was, known := t.enabled[name]; known && was != on {
			t.at[name] = now
		}
		t.enabled[name] = on
	}
	for name := range t.enabled {
		if !seen[name] {
			delete(t.enabled, name)
			delete(t.at, name)
		}
	}
	return t.at
}

// proxy is one connected proxy.
type proxy struct {
	snap latest.Value[*xds.Snapshot]
	// stop ends its stream with a gRPC status error saying why (a newer
	// connection of the same dataplane replaced it, it deregistered).
	stop  context.CancelCauseFunc
	subID string
	// memo of the last generation.
	memo memo
}

// New builds a server; Serve runs it and Reconcile keeps configs current.
func New(opts Options) (*Server, error) {
	if opts.Views == nil || opts.Reader == nil || opts.Insights == nil {
		return nil, errors.New("dpserver: Views, Reader and Insights are required")
	}
	switch opts.Dataplanes {
	case FromProxy:
		if opts.Writer == nil {
			return nil, errors.New("dpserver: a Writer is required to store the Dataplanes proxies present")
		}
	case FromStore:
	default:
		return nil, fmt.Errorf("dpserver: unknown DataplaneSource %d", opts.Dataplanes)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	refused, err := newRefusedCounter(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Log, refused: refused, proxies: map[resource.Key]*proxy{}, kick: make(chan struct{}, 1)}
	s.xds = xds.NewServer(dpconfig.TypeURL, s, opts.XDSMetrics, opts.Log)
	// The limits' keepalive finds proxies that vanished without closing
	// their stream.
	s.grpc = grpc.NewServer(append(append(opts.GRPCOptions,
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{opts.Certificate}, MinVersion: tls.VersionTLS12})),
	), netserve.GRPCServerOptions(opts.GRPCLimits)...)...)
	meshv1.RegisterDataplaneConfigServiceServer(s.grpc, &service{s: s})
	return s, nil
}

// Serve serves on ln until ctx is done. Streams are then closed: proxies keep
// their last config and reconnect.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	ln = netserve.Listen(ln, netserve.AcceptOptions{Name: "dp-server", Log: s.log, Errors: s.opts.AcceptErrors})
	go func() { errc <- s.grpc.Serve(ln) }()
	select {
	case <-ctx.Done():
		s.grpc.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("dataplane server: %w", err)
	}
}

type service struct {
	meshv1.UnimplementedDataplaneConfigServiceServer
	s *Server
}

func (svc *service) StreamProxyConfig(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	s := svc.s
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	var (
		key resource.Key
		p   *proxy
	)
	cb := xds.Callbacks{
		OnOpen: func(node *corev3.Node) error {
			var err error
			key, p, err = s.register(ctx, node, cancel)
			return err
		},
		OnClose: func() { s.unregister(key, p) },
		OnResponse: func(version string) {
			now := s.opts.Now().UTC()
			s.opts.Insights.Update(key, p.subID, func(sub *resource.Subscription) {
				sub.Status.Total.ResponsesSent++
				sub.Status.LastUpdateTime = &now
			})
		},
		OnAck: func(version string) {
			s.opts.Insights.Update(key, p.subID, func(sub *resource.Subscription) {
				sub.Status.Total.ResponsesAcknowledged++
				sub.ConfigVersion = version
			})
		},
		OnNack: func(version, detail string) {
			s.opts.Insights.Update(key, p.subID, func(sub *resource.Subscription) { sub.Status.Total.ResponsesRejected++ })
		},
	}
	err := s.xds.StreamSotW(&ctxStream{stream, ctx}, cb)
	if status.Code(err) == codes.Canceled && stream.Context().Err() == nil {
		if cause := context.Cause(ctx); status.Code(cause) != codes.Unknown {
			return cause
		}
	}
	return err
}

// ctxStream runs a stream under a context the server can cancel.
type ctxStream struct {
	grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// Watch implements xds.Source: a proxy's own snapshot.
func (s *Server) Watch(ctx context.Context, node *corev3.Node) (*xds.Snapshot, <-chan struct{}, error) {
	s.mu.Lock()
	p := s.proxies[nodeKey(node)]
	s.mu.Unlock()
	if p == nil {
		return nil, nil, status.Error(codes.Internal, "proxy not registered")
	}
	snap, ch := p.snap.Get()
	return snap, ch, nil
}

// nodeKey is where register files a proxy: node.id is set to "<mesh>/<name>"
// once the dataplane is known.
func nodeKey(node *corev3.Node) resource.Key {
	mesh, name, _ := strings.Cut(node.GetId(), "/")
	return resource.Key{Mesh: mesh, Name: name}
}

// register admits the proxy's Dataplane (as its DataplaneSource says) and
// records its subscription.
func (s *Server) register(ctx context.Context, node *corev3.Node, stop context.CancelCauseFunc) (resource.Key, *proxy, error) {
	var (
		key resource.Key
		err error
	)
	switch s.opts.Dataplanes {
	case FromStore:
		key, err = s.registerStored(ctx, node)
	default:
		key, err = s.registerPresented(ctx, node)
	}
	if err != nil {
		return key, nil, err
	}
	node.Id = key.String()

	p := &proxy{stop: stop, subID: newID()}
	s.mu.Lock()
	old := s.proxies[key]
	s.proxies[key] = p
	s.mu.Unlock()
	if old != nil {
		s.log.Warn("a dataplane connected again; the older connection is closed", "dataplane", key.String())
		old.stop(status.Error(codes.Aborted, "a newer connection of this dataplane replaced this one"))
	}
	s.opts.Insights.Connect(key, resource.Subscription{ID: p.subID, ControlPlaneInstanceID: s.opts.InstanceID, ConnectTime: s.opts.Now()})
	s.log.Info("proxy connected", "dataplane", key.String())
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return key, p, nil
}

// registerPresented validates and stores the Dataplane the proxy presents
// (FromProxy).
func (s *Server) registerPresented(ctx context.Context, node *corev3.Node) (resource.Key, error) {
	raw := node.GetMetadata().GetFields()[dpconfig.MetadataDataplane].GetStringValue()
	if raw == "" {
		return resource.Key{}, status.Errorf(codes.InvalidArgument, "the first request's node.metadata must carry %q: the proxy's Dataplane as JSON "+
			"(this control plane stores the Dataplanes its proxies present: kuma-dp --dataplane-file)", dpconfig.MetadataDataplane)
	}
	obj, err := resource.DecodeJSON([]byte(raw))
	if err != nil {
		return resource.Key{}, status.Errorf(codes.InvalidArgument, "invalid Dataplane: %v", err)
	}
	if obj.Meta.Kind != resource.KindDataplane {
		return resource.Key{}, status.Errorf(codes.InvalidArgument, "node.metadata %q holds a %s, not a Dataplane", dpconfig.MetadataDataplane, obj.Meta.Kind)
	}
	if obj.Meta.Mesh == "" {
		obj.Meta.Mesh = resource.DefaultMesh
	}
	key := obj.Meta.Key()
	admit, err := s.authorize(ctx, "stream", key)
	if err != nil {
		return key, err
	}
	if err := resource.Validate(obj); err != nil {
		return key, status.Errorf(codes.InvalidArgument, "invalid Dataplane: %v", err)
	}
	resource.ApplyDefaults(obj)
	if err := s.admit("stream", key, admit, obj, Present); err != nil {
		return key, err
	}
	return key, s.store(ctx, admit, obj)
}

// registerStored admits the proxy to the stored Dataplane its node.id
// names (FromStore); nothing is written.
func (s *Server) registerStored(ctx context.Context, node *corev3.Node) (resource.Key, error) {
	if _, presented := node.GetMetadata().GetFields()[dpconfig.MetadataDataplane]; presented {
		return resource.Key{}, status.Errorf(codes.InvalidArgument, "node.metadata carries %q, but this control plane serves the Dataplanes of its store "+
			"(on Kubernetes the pod controller makes them from the Pods) and takes none from a proxy: run kuma-dp with --name and --mesh "+
			"instead of --dataplane-file or --dataplane", dpconfig.MetadataDataplane)
	}
	key, err := parseNodeID(node.GetId())
	if err != nil {
		return resource.Key{}, status.Error(codes.InvalidArgument, err.Error())
	}
	admit, err := s.authorize(ctx, "stream", key)
	if err != nil {
		return key, err
	}
	have, err := s.opts.Reader.Get(ctx, resource.KindDataplane, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return key, s.refuse("stream", key, codes.NotFound, ReasonDataplaneNotFound, fmt.Sprintf(
			"dataplane %s: no such Dataplane is stored, and this control plane serves only the Dataplanes of its store "+
				"(on Kubernetes the pod controller makes one for each Pod with sidecar injection once it has an IP); the proxy retries", key))
	case err != nil:
		return key, status.Errorf(codes.Unavailable, "reading the stored Dataplane: %v", err)
	}
	return key, s.admit("stream", key, admit, have, Serve)
}

// parseNodeID reads the dataplane a proxy names in node.id: "<mesh>/<name>".
func parseNodeID(id string) (resource.Key, error) {
	mesh, name, ok := strings.Cut(id, "/")
	key := resource.Key{Mesh: mesh, Name: name}
	if !ok {
		return key, fmt.Errorf("node.id %q: must name the proxy's dataplane as <mesh>/<name> (kuma-dp --mesh and --name)", id)
	}
	if err := resource.ValidateKey(resource.KindDataplane, key); err != nil {
		return key, fmt.Errorf("node.id %q: %w", id, err)
	}
	return key, nil
}

// store writes the presented Dataplane unless the store already has it. A
// stored Dataplane of that name is replaced only when the proxy may replace
// it too, and only the version that was checked.
func (s *Server) store(ctx context.Context, admit Admit, obj *resource.Object) error {
	key := obj.Meta.Key()
	ifVersion := manager.CreateOnly
	have, err := s.opts.Reader.Get(ctx, resource.KindDataplane, key)
	switch {
	case err == nil:
		if sameSpec(have.Spec, obj.Spec) {
			return nil
		}
		if err := s.admit("stream", key, admit, have, Replace); err != nil {
			return err
		}
		ifVersion = have.Meta.Version
	case !errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.Unavailable, "reading the stored Dataplane: %v", err)
	}
	if _, err := s.opts.Writer.Apply(ctx, obj, ifVersion); err != nil {
		var ve *resource.ValidationError
		switch {
		case errors.As(err, &ve):
			return status.Errorf(codes.InvalidArgument, "invalid Dataplane: %v", err)
		case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound):
			return status.Errorf(codes.Unavailable, "dataplane %s changed while the proxy registered; it retries", key)
		}
		return status.Errorf(codes.Unavailable, "storing the Dataplane: %v", err)
	}
	return nil
}

func sameSpec(a, b resource.Spec) bool {
	ja, err1 := (&resource.Object{Meta: resource.Meta{Kind: a.Kind()}, Spec: a}).MarshalJSON()
	jb, err2 := (&resource.Object{Meta: resource.Meta{Kind: b.Kind()}, Spec: b}).MarshalJSON()
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func (s *Server) unregister(key resource.Key, p *proxy) {
	if p == nil {
		return
	}
	s.mu.Lock()
	if s.proxies[key] == p {
		delete(s.proxies, key)
	}
	s.mu.Unlock()
	s.opts.Insights.Disconnect(key, p.subID, s.opts.Now())
	s.log.Info("proxy disconnected", "dataplane", key.String())
}

func (svc *service) Deregister(ctx context.Context, req *meshv1.DeregisterRequest) (*meshv1.DeregisterResponse, error) {
	s := svc.s
	key := resource.Key{Mesh: req.GetMesh(), Name: req.GetName()}
	admit, err := s.authorize(ctx, "deregister", key)
	if err != nil {
		return nil, err
	}
	use := Replace
	if s.opts.Dataplanes == FromStore {
		use = Serve
	}
	have, err := s.opts.Reader.Get(ctx, resource.KindDataplane, key)
	switch {
	case err == nil:
		if err := s.admit("deregister", key, admit, have, use); err != nil {
			return nil, err
		}
	case !errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.Unavailable, "reading the stored Dataplane: %v", err)
	}
	if s.opts.Dataplanes == FromStore {
		// The Dataplane is its owner's: only the proxy's stream ends, and
		// its subscription with it.
		s.mu.Lock()
		p := s.proxies[key]
		s.mu.Unlock()
		if p != nil {
			p.stop(status.Error(codes.Canceled, "the proxy deregistered"))
		}
		s.log.Info("proxy deregistered; its Dataplane stays with its owner", "dataplane", key.String())
		return &meshv1.DeregisterResponse{}, nil
	}
	if have != nil {
		err = s.opts.Writer.Delete(ctx, resource.KindDataplane, key, have.Meta.Version)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.Unavailable, "deleting the Dataplane: %v", err)
		}
	}
	s.opts.Insights.Forget(key)
	s.log.Info("proxy deregistered", "dataplane", key.String())
	return &meshv1.DeregisterResponse{}, nil
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Reconcile regenerates the configs of connected proxies whenever the store
// changes or a proxy connects, until ctx is done.
func (s *Server) Reconcile(ctx context.Context) {
	mirror.Follow(ctx, s.opts.Views, s.kick, s.opts.Debounce, s.generate)
}

// memo is what a proxy's last config was generated from.
type memo struct {
	dp, mesh *resource.Object
	services string // the services' endpoint versions it used
	snap     *xds.Snapshot
}

func (s *Server) generate(view *mirror.View) {
	start := time.Now()
	s.mu.Lock()
	proxies := make(map[resource.Key]*proxy, len(s.proxies))
	for k, p := range s.proxies {
		proxies[k] = p
	}
	s.mu.Unlock()
	if len(proxies) == 0 {
		s.index = nil // nothing to keep up to date
		return
	}
	ix := s.index.Next(dpconfig.Inputs{
		Meshes:             view.List(resource.KindMesh, ""),
		Dataplanes:         view.List(resource.KindDataplane, ""),
		TrafficPermissions: view.List(resource.KindTrafficPermission, ""),
		Secrets:            view.List(resource.KindSecret, ""),
		Transitions:        s.transitions.observe(view, s.opts.Now()),
	})
	s.index = ix
	var failed error
	for key, p := range proxies {
		dp := view.Get(resource.KindDataplane, key)
		mesh := view.Get(resource.KindMesh, resource.Key{Name: key.Mesh})
		if dp == nil || mesh == nil {
			continue // not in the view yet (or deleted): nothing to send
		}
		services := ix.ServiceVersions(dp) + "/" + ix.MeshVersion(key.Mesh)
		if p.memo.dp == dp && p.memo.mesh == mesh && p.memo.services == services {
			continue
		}
		snap, err := snapshotFor(ix, dp)
		if err != nil {
			failed = err
			s.log.Error("generating a proxy config failed", "dataplane", key.String(), "err", err)
			continue
		}
		p.memo = memo{dp: dp, mesh: mesh, services: services, snap: snap}
		if cur := p.snap.Load(); cur == nil || cur.Version() != snap.Version() {
			p.snap.Set(snap)
		}
	}
	s.opts.XDSMetrics.ObserveGeneration(dpconfig.TypeURL, float64(time.Since(start).Microseconds())/1000, failed)
}

func snapshotFor(ix *dpconfig.Index, dp *resource.Object) (*xds.Snapshot, error) {
	cfg, err := dpconfig.Generate(ix, dp)
	if err != nil {
		return nil, err
	}
	r, err := xds.NewResource(dp.Meta.Key().String(), cfg)
	if err != nil {
		return nil, err
	}
	return xds.NewSnapshot(dpconfig.TypeURL, []xds.Resource{r})
}
