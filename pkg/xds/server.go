package xds

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SotWStream is the server side of a state-of-the-world xDS stream.
type SotWStream interface {
	Context() context.Context
	Send(*discoveryv3.DiscoveryResponse) error
	Recv() (*discoveryv3.DiscoveryRequest, error)
}

// DeltaStream is the server side of an incremental xDS stream.
type DeltaStream interface {
	Context() context.Context
	Send(*discoveryv3.DeltaDiscoveryResponse) error
	Recv() (*discoveryv3.DeltaDiscoveryRequest, error)
}

// Callbacks observe one stream; every field is optional. They run on the
// stream's goroutine and must not block.
type Callbacks struct {
	// OnOpen runs with the first request's node, before anything is sent;
	// an error ends the stream with it (return a gRPC status error to
	// choose its code).
	OnOpen func(node *corev3.Node) error
	// OnClose runs when a stream whose OnOpen succeeded ends.
	OnClose func()
	// OnResponse runs after a response of version was sent.
	OnResponse func(version string)
	// OnAck runs when the client accepted version.
	OnAck func(version string)
	// OnNack runs when the client rejected the response of version.
	OnNack func(version, detail string)
}

// Server serves snapshots of one resource type.
type Server struct {
	typeURL string
	source  Source
	metrics *Metrics
	log     *slog.Logger
	nonce   atomic.Uint64
}

// NewServer returns a server of typeURL resources taken from source. metrics
// and log may be nil.
func NewServer(typeURL string, source Source, metrics *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	metrics.initType(typeURL)
	return &Server{typeURL: typeURL, source: source, metrics: metrics, log: log}
}

// TypeURL served.
func (s *Server) TypeURL() string { return s.typeURL }

func (s *Server) nextNonce() string { return strconv.FormatUint(s.nonce.Add(1), 10) }

// checkType accepts the served type URL, or none.
func (s *Server) checkType(typeURL string) error {
	if typeURL != "" && typeURL != s.typeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q is not served here; this stream serves %s", typeURL, s.typeURL)
	}
	return nil
}

// received delivers what a stream's Recv returned to the serving loop.
type received[T any] struct {
	req T
	err error
}

func receive[T any](ctx context.Context, recv func() (T, error)) <-chan received[T] {
	ch := make(chan received[T])
	go func() {
		for {
			r, err := recv()
			select {
			case ch <- received[T]{r, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func endOfStream(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// open takes a stream's node (an empty one when the client sent none) and
// runs OnOpen.
func (cb Callbacks) open(node *corev3.Node) (*corev3.Node, error) {
	if node == nil {
		node = &corev3.Node{}
	}
	if cb.OnOpen != nil {
		if err := cb.OnOpen(node); err != nil {
			return nil, err
		}
	}
	return node, nil
}

func (s *Server) ack(version string, cb Callbacks) {
	s.metrics.request(s.typeURL, ACK)
	if cb.OnAck != nil {
		cb.OnAck(version)
	}
}

func (s *Server) nack(node *corev3.Node, version, detail string, cb Callbacks) {
	s.metrics.request(s.typeURL, NACK)
	s.log.Warn("client rejected a response", "node", node.GetId(), "version", version, "err", detail)
	if cb.OnNack != nil {
		cb.OnNack(version, detail)
	}
}

// StreamSotW serves a state-of-the-world stream until the client leaves or
// its context ends. Every response holds the whole snapshot; one is sent
// whenever the snapshot's version differs from what the client has.
func (s *Server) StreamSotW(stream SotWStream, cb Callbacks) error {
	ctx := stream.Context()
	defer s.metrics.streamOpened(s.typeURL)()
	reqs := receive(ctx, stream.Recv)
	var (
		node      *corev3.Node
		snap      *Snapshot
		changed   <-chan struct{}
		clientHas string // version the client has
		lastNonce string
		lastSentV string
		err       error
	)
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case r := <-reqs:
			if r.err != nil {
				return endOfStream(r.err)
			}
			req := r.req
			if err := s.checkType(req.GetTypeUrl()); err != nil {
				return err
			}
			if node == nil {
				if node, err = cb.open(req.GetNode()); err != nil {
					return err
				}
				if cb.OnClose != nil {
					defer cb.OnClose()
				}
				clientHas = req.GetVersionInfo()
				if snap, changed, err = s.source.Watch(ctx, node); err != nil {
					return err
				}
				break
			}
			switch nonce := req.GetResponseNonce(); {
			case nonce == "":
				// A repeated initial request: answer unless it has the current version.
				clientHas = req.GetVersionInfo()
			case nonce != lastNonce:
				// An answer to an older response; the newer one is in flight.
				continue
			case req.GetErrorDetail() != nil:
				s.nack(node, lastSentV, req.GetErrorDetail().GetMessage(), cb)
			default:
				s.ack(req.GetVersionInfo(), cb)
			}
		case <-changed:
			if snap, changed, err = s.source.Watch(ctx, node); err != nil {
				return err
			}
		}
		if snap == nil || snap.Version() == clientHas {
			continue
		}
		lastNonce = s.nextNonce()
		resp := &discoveryv3.DiscoveryResponse{
			VersionInfo: snap.Version(),
			Resources:   snap.Bodies(),
			TypeUrl:     s.typeURL,
			Nonce:       lastNonce,
		}
		if err := stream.Send(resp); err != nil {
			return endOfStream(err)
		}
		clientHas, lastSentV = snap.Version(), snap.Version()
		s.metrics.response(s.typeURL)
		if cb.OnResponse != nil {
			cb.OnResponse(lastSentV)
		}
	}
}

// deltaState is what an incremental stream knows of its client.
//
// A client is subscribed only to names that exist: a name that is not in
// the snapshot when its subscription is processed, or that leaves it, is
// reported removed and forgotten (subscribe again to get it back). So a
// client cannot grow the server's memory by subscribing to invented names:
// between responses a stream keeps at most the snapshot's names.
type deltaState struct {
	wildcard   bool
	subscribed map[string]bool
	// known maps each resource the client has to its version.
	known map[string]string
}

func (d *deltaState) wants(name string) bool { return d.wildcard || d.subscribed[name] }

func (d *deltaState) subscribe(names []string) {
	for _, n := range names {
		if n == "*" {
			d.wildcard = true
			continue
		}
		d.subscribed[n] = true
	}
}

func (d *deltaState) unsubscribe(names []string) {
	for _, n := range names {
		if n == "*" {
			d.wildcard = false
			continue
		}
		delete(d.subscribed, n)
		delete(d.known, n)
	}
}

// diff returns what changed since the client's known versions and updates
// them; subscriptions to names the snapshot does not hold end.
func (d *deltaState) diff(snap *Snapshot) (changed []*discoveryv3.Resource, removed []string) {
	for name := range d.subscribed {
		if _, ok := snap.Get(name); !ok {
			delete(d.subscribed, name)
			delete(d.known, name)
			removed = append(removed, name)
		}
	}
	for _, r := range snap.Resources() {
		if !d.wants(r.Name) || d.known[r.Name] == r.Version {
			continue
		}
		d.known[r.Name] = r.Version
		changed = append(changed, &discoveryv3.Resource{Name: r.Name, Version: r.Version, Resource: r.Body})
	}
	for name := range d.known {
		if _, ok := snap.Get(name); !ok || !d.wants(name) {
			delete(d.known, name)
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	return changed, removed
}

// StreamDelta serves an incremental stream: responses carry only the
// resources whose version changed for the client, and the names of those
// that went away. A client subscribes to everything ("*" or no names on the
// first request) or to names.
func (s *Server) StreamDelta(stream DeltaStream, cb Callbacks) error {
	ctx := stream.Context()
	defer s.metrics.streamOpened(s.typeURL)()
	reqs := receive(ctx, stream.Recv)
	var (
		node      *corev3.Node
		snap      *Snapshot
		changed   <-chan struct{}
		err       error
		lastNonce string
		lastSentV string
		state     = &deltaState{subscribed: map[string]bool{}, known: map[string]string{}}
		mustReply bool
	)
	for {
		// Until there is a snapshot to check subscriptions against, no
		// request after the first is read: names cannot pile up unchecked.
		in := reqs
		if node != nil && snap == nil {
			in = nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case r := <-in:
			if r.err != nil {
				return endOfStream(r.err)
			}
			req := r.req
			if err := s.checkType(req.GetTypeUrl()); err != nil {
				return err
			}
			if node == nil {
				if node, err = cb.open(req.GetNode()); err != nil {
					return err
				}
				if cb.OnClose != nil {
					defer cb.OnClose()
				}
				for name, v := range req.GetInitialResourceVersions() {
					state.known[name] = v
				}
				subs := req.GetResourceNamesSubscribe()
				if len(subs) == 0 {
					state.wildcard = true
				}
				state.subscribe(subs)
				mustReply = true
				if snap, changed, err = s.source.Watch(ctx, node); err != nil {
					return err
				}
				break
			}
			state.subscribe(req.GetResourceNamesSubscribe())
			state.unsubscribe(req.GetResourceNamesUnsubscribe())
			switch nonce := req.GetResponseNonce(); {
			case nonce == "" || nonce != lastNonce:
			case req.GetErrorDetail() != nil:
				s.nack(node, lastSentV, req.GetErrorDetail().GetMessage(), cb)
			default:
				s.ack(lastSentV, cb)
			}
		case <-changed:
			if snap, changed, err = s.source.Watch(ctx, node); err != nil {
				return err
			}
		}
		if snap == nil {
			continue
		}
		resources, removed := state.diff(snap)
		if len(resources) == 0 && len(removed) == 0 && !mustReply {
			continue
		}
		mustReply = false
		lastNonce = s.nextNonce()
		resp := &discoveryv3.DeltaDiscoveryResponse{
			SystemVersionInfo: snap.Version(),
			Resources:         resources,
			RemovedResources:  removed,
			TypeUrl:           s.typeURL,
			Nonce:             lastNonce,
		}
		if err := stream.Send(resp); err != nil {
			return endOfStream(err)
		}
		lastSentV = snap.Version()
		s.metrics.response(s.typeURL)
		if cb.OnResponse != nil {
			cb.OnResponse(lastSentV)
		}
	}
}
