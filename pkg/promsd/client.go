package promsd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

// TypeURL is the xDS type of monitoring assignments.
const TypeURL = "type.googleapis.com/kuma.observability.v1.MonitoringAssignment"

// maxRecvMsgSize bounds one response: every assignment of every mesh comes in
// one message, which outgrows gRPC's 4 MiB default at some ten thousand
// dataplanes.
const maxRecvMsgSize = 64 << 20

// Option configures a Client.
type Option func(*options)

type options struct {
	log     *slog.Logger
	backoff Backoff
}

// WithLogger sets the logger; the default discards everything.
func WithLogger(log *slog.Logger) Option {
	return func(o *options) {
		if log != nil {
			o.log = log
		}
	}
}

// WithBackoff sets the reconnection schedule; the default is DefaultBackoff.
// Fields left zero take the default's value.
func WithBackoff(b Backoff) Option {
	return func(o *options) { o.backoff = b }
}

// Client keeps a Prometheus file_sd file in step with the control plane's
// monitoring assignments, over a state-of-the-world MADS gRPC stream.
type Client struct {
	cfg     Config
	ep      endpoint
	creds   credentials.TransportCredentials
	writer  *FileWriter
	log     *slog.Logger
	backoff Backoff
}

// NewClient validates cfg and returns a client. A grpcs:// control plane is
// verified against CACertFile, else the system's roots, unless
// InsecureSkipVerify. Nothing is dialed before Run.
func NewClient(cfg Config, opts ...Option) (*Client, error) {
	o := options{log: slog.New(slog.DiscardHandler), backoff: DefaultBackoff()}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ep, err := parseCPAddress(cfg.CPAddress)
	if err != nil {
		return nil, flagError(FlagCPAddress, err)
	}
	creds, err := cfg.transportCredentials(ep)
	if err != nil {
		return nil, err
	}
	return &Client{
		cfg:     cfg,
		ep:      ep,
		creds:   creds,
		writer:  NewFileWriter(cfg.OutputFile),
		log:     o.log,
		backoff: o.backoff.normalized(),
	}, nil
}

// Run follows the control plane until ctx is done, then returns nil. Every
// accepted response rewrites the output file (when its content changes) and
// is ACKed; a response with a bad resource is NACKed and leaves the file
// alone. Any stream error makes Run reconnect after a backoff delay; the file
// keeps its content meanwhile.
func (c *Client) Run(ctx context.Context) error {
	b := newBackoffState(c.backoff, nil)
	for {
		res, err := c.session(ctx)
		if ctx.Err() != nil {
			c.log.Info("stopped", "address", c.cfg.CPAddress)
			return nil
		}
		if res.handled {
			b.reset()
		}
		delay := b.next()
		msg := "cannot connect to the control plane"
		switch {
		case res.applyFailed:
			msg = "cannot apply an update, reconnecting to the control plane"
		case res.connected:
			msg = "disconnected from the control plane"
		}
		c.log.Warn(msg, "address", c.cfg.CPAddress, "err", err, "retry_in", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			c.log.Info("stopped", "address", c.cfg.CPAddress)
			return nil
		case <-timer.C:
		}
	}
}

// sessionResult tells Run how far a session got.
type sessionResult struct {
	connected   bool // the stream was opened
	handled     bool // at least one response was ACKed or NACKed
	applyFailed bool // the session ended because a response could not be applied
}

// session runs one stream on a fresh connection until it fails. The error is
// never nil unless ctx is done.
func (c *Client) session(ctx context.Context) (sessionResult, error) {
	var res sessionResult
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(c.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	}
	if c.cfg.AuthTokenFile != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(tokenCredentials{path: c.cfg.AuthTokenFile, secure: c.ep.secure}))
	}
	conn, err := grpc.NewClient(c.ep.target, dialOpts...)
	if err != nil {
		return res, fmt.Errorf("creating the gRPC client of %s: %w", c.cfg.CPAddress, err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := observabilityv1.NewMonitoringAssignmentDiscoveryServiceClient(conn).StreamMonitoringAssignments(ctx)
	if err != nil {
		return res, fmt.Errorf("opening the MADS stream: %w", err)
	}
	res.connected = true
	c.log.Info("connected to the control plane", "address", c.cfg.CPAddress, "node", c.cfg.Name)

	first := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: c.cfg.Name}, TypeUrl: TypeURL}
	if err := send(stream, first); err != nil {
		return res, err
	}
	accepted := "" // version of the last ACKed response on this stream
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res, errClosedByServer
		}
		if err != nil {
			return res, fmt.Errorf("receiving from the MADS stream: %w", err)
		}
		reply, err := c.handle(resp, accepted)
		if err != nil {
			res.applyFailed = true
			return res, err
		}
		res.handled = true
		if reply.ErrorDetail == nil {
			accepted = resp.GetVersionInfo()
		}
		if err := send(stream, reply); err != nil {
			return res, err
		}
	}
}

// errClosedByServer reports a stream the control plane ended with an OK status.
var errClosedByServer = errors.New("the control plane closed the stream")

// send sends req; when the stream has already ended, it returns the stream's
// status rather than gRPC's bare io.EOF.
func send(stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse], req *discoveryv3.DiscoveryRequest) error {
	err := stream.Send(req)
	if errors.Is(err, io.EOF) {
		// The server ended the stream; its status is what Recv returns.
		_, rerr := stream.Recv()
		switch {
		case errors.Is(rerr, io.EOF):
			return errClosedByServer
		case rerr != nil:
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("sending to the MADS stream: %w", err)
	}
	return nil
}

// handle applies one response and returns the ACK or NACK to send. An error
// means the response could not be applied locally (e.g. the file could not
// be written); it is neither ACKed nor NACKed, and the stream is restarted
// so that a fresh copy of the state is retried.
func (c *Client) handle(resp *discoveryv3.DiscoveryResponse, accepted string) (*discoveryv3.DiscoveryRequest, error) {
	version, nonce := resp.GetVersionInfo(), resp.GetNonce()
	assignments, err := decodeResponse(resp)
	if err != nil {
		c.log.Warn("rejected an update (NACK)", "version", version, "nonce", nonce, "accepted_version", accepted, "err", err)
		return &discoveryv3.DiscoveryRequest{
			VersionInfo:   accepted,
			ResponseNonce: nonce,
			TypeUrl:       TypeURL,
			ErrorDetail:   status.New(codes.InvalidArgument, err.Error()).Proto(),
		}, nil
	}
	groups := Convert(assignments)
	data, err := encodeGroups(groups)
	if err != nil {
		return nil, err
	}
	written, err := c.writer.Write(data)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", version, err)
	}
	c.log.Info("accepted an update", "version", version, "targets", len(groups), "file", c.writer.Path(), "changed", written)
	return &discoveryv3.DiscoveryRequest{VersionInfo: version, ResponseNonce: nonce, TypeUrl: TypeURL}, nil
}

// decodeResponse unmarshals every resource of resp; the first bad one fails
// the whole response, which names it by its index.
func decodeResponse(resp *discoveryv3.DiscoveryResponse) ([]*observabilityv1.MonitoringAssignment, error) {
	if u := resp.GetTypeUrl(); u != "" && u != TypeURL {
		return nil, fmt.Errorf("response type URL %q, want %q", u, TypeURL)
	}
	out := make([]*observabilityv1.MonitoringAssignment, 0, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		if r == nil {
			return nil, fmt.Errorf("resource[%d]: missing", i)
		}
		if r.GetTypeUrl() != TypeURL {
			return nil, fmt.Errorf("resource[%d]: type URL %q, want %q", i, r.GetTypeUrl(), TypeURL)
		}
		a := &observabilityv1.MonitoringAssignment{}
		if err := r.UnmarshalTo(a); err != nil {
			return nil, fmt.Errorf("resource[%d]: decoding %s: %w", i, TypeURL, err)
		}
		out = append(out, a)
	}
	return out, nil
}
