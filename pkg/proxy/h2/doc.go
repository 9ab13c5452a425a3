// Package h2 is the data plane proxy's HTTP/2 engine, for routes of
// protocol http2 and grpc (HTTP/2 with prior knowledge; the mesh's TLS, when
// on, is below it). The proxy core hands each downstream connection to
// Proxy.ServeConn; the engine forwards its streams to one upstream cluster
// over multiplexed upstream connections and records Envoy-compatible
// statistics (pkg/stats) for both sides.
//
// # Data path
//
// The engine forwards frames, not requests. A client connection is read by
// the goroutine that called ServeConn; an upstream connection by the
// goroutine that dialed it. A reader decodes a request's (or response's)
// header block, re-encodes it with the other connection's HPACK encoder and
// appends the frames to that connection's output under its mutex; DATA is
// copied once, from the reader's buffer into the output. When the reader
// has no whole frame left in its buffer it sends the output of every
// connection it wrote to, so the frames of one read leave in one write per
// connection (a unary gRPC call: one read and one write on each side of
// the proxy): on a plain TCP connection it writes the socket itself when
// nothing else is writing and the socket takes it all at once; what waits
// (the socket full, TLS, a write under way) goes to the connection's
// writer goroutine, which it kicks. Nothing is allocated per DATA frame; a
// stream costs one small object and its HEADERS frames' structs: header
// blocks are decoded into fields a connection's reader reuses (headerBlock;
// what must wait, a head for its dial or trailers for a window, is copied),
// whose strings the HPACK tables hold once a peer's fields repeat.
//
// # Flow control
//
// Credit is passed through: the proxy grants each peer a stream window
// (128 KiB) and a connection window (1 MiB to clients, 4 MiB to
// upstreams), and gives credit back for bytes only once they left toward
// the other peer. What a peer's windows (or a connection's output room,
// 256 KiB, when its peer does not read) do not let leave yet waits in the
// stream, in order, with its end and trailers, and goes on at the
// WINDOW_UPDATE (or when the writer took the output). So a slow reader
// slows its writer, and what the proxy holds per stream is bounded by the
// window it granted, never by the body's size.
//
// # Protocol decisions
//
//   - Requests are validated as RFC 9113 §8 asks: the pseudo-header fields
//     (:method, :scheme, :path, or :authority alone for CONNECT), no
//     connection-specific fields, TE only "trailers", content-length equal
//     to the DATA received, trailers that end the stream; a malformed
//     request is reset (PROTOCOL_ERROR), a connection error answered with
//     GOAWAY. A header list over MaxHeaderBytes gets 431.
//   - Header blocks are forwarded as they came (connection-specific fields
//     dropped from responses), :authority and :scheme included.
//   - One upstream connection per endpoint while its streams fit in the
//     endpoint's SETTINGS_MAX_CONCURRENT_STREAMS; then another. A stream
//     given to a connection still being dialed waits for it (its body too,
//     within its window); a failed dial answers 503 "upstream connect error
//     or disconnect/reset before headers" (the cluster's dial already
//     tried the other endpoints).
//   - An upstream's RST_STREAM or lost connection before the response head
//     is a 503; REFUSED_STREAM (and streams above an upstream's GOAWAY) is
//     passed on as REFUSED_STREAM, which clients retry safely; after the
//     head the client's stream is reset. A client's RST_STREAM or lost
//     connection cancels the upstream stream (upstream_rq_tx_reset).
//   - A connection without streams closes after IdleTimeout (GOAWAY to a
//     client); a write blocked on a peer that stopped reading for as long
//     ends that connection. Drain sends GOAWAY and waits for the streams in
//     flight; an upstream connection that may no longer be reused (the
//     mesh's TLS mode changed) or whose endpoint left takes no new streams
//     and closes with its last.
//   - A peer whose unread output passes 1 MiB (PING or SETTINGS floods) is
//     cut off (ENHANCE_YOUR_CALM).
package h2
