// Package http1 is the data plane proxy's HTTP/1.1 reverse-proxy engine. The
// proxy core accepts downstream connections and hands each one to
// Proxy.ServeConn; the engine forwards the requests to one upstream cluster
// over pooled keep-alive connections and records Envoy-compatible statistics
// (pkg/stats) for both sides.
//
// # Data path
//
// One goroutine serves one downstream connection: it parses a request head
// from a pooled bufio.Reader into reusable byte ranges (no http.Header, no
// per-request allocation), takes an idle upstream connection to the endpoint
// Config.Pick names (or dials one through Config.Dial), writes the head with the hop-by-hop fields removed,
// streams the body (Content-Length, chunked, or none), reads the response
// head and streams the response back in the same goroutine. Bodies are never
// buffered whole. Only an upgraded connection (101, e.g. WebSocket) uses a
// second goroutine, for the second direction of its raw byte copy.
//
// # Protocol decisions
//
//   - Malformed requests get 400 and the connection closes; a head over
//     MaxHeaderBytes gets 431, a transfer coding other than chunked 501, an
//     HTTP version other than 1.0/1.1 505, a head that does not arrive within
//     RequestHeaderTimeout 408. Content-Length together with
//     Transfer-Encoding, Transfer-Encoding in HTTP/1.0, differing
//     Content-Length values, a missing or repeated Host in HTTP/1.1 and
//     obs-fold lines are rejected (400) as request smuggling vectors.
//   - Chunked bodies are re-encoded chunk by chunk (extensions dropped,
//     trailers passed on), so the upstream always sees canonical framing.
//   - Messages are forwarded as HTTP/1.1. Connection, Keep-Alive,
//     Proxy-Connection, TE, Trailer, Upgrade (unless upgrading) and the fields
//     named in Connection are not forwarded; Host, Content-Length and
//     Transfer-Encoding are kept even when Connection names them.
//   - An HTTP/1.0 client gets keep-alive only when it asked for it; a chunked
//     response is de-chunked for it and its connection closed. A response
//     without length is re-chunked for an HTTP/1.1 client, so its connection
//     stays open; the upstream connection is not reused.
//   - Expect: 100-continue is passed through: the head goes first, the body
//     after the upstream's 100 (forwarded to the client) or after one second
//     without an answer. A final answer instead of 100 is forwarded and both
//     connections close, since the body was never sent.
//   - A pooled connection that fails before any response byte is retried once
//     on a new connection when the request has no body, or is idempotent and
//     its body is still in the read buffer (bodies up to 16 KiB are sent
//     from the buffer and consumed only once a response head arrived).
//   - Failures are answered as Envoy does: 503 "upstream connect error or
//     disconnect/reset before headers" for no upstream, a connect failure, a
//     reset or a malformed response before the head; 504 "upstream request
//     timeout" after ResponseHeaderTimeout. A reset after the head closes the
//     client connection (upstream_rq_rx_reset).
//   - A peer that stops reading (a client during its response, an upstream
//     during its request body) is given up once a write has been blocked
//     for IdleTimeout: its connection closes, and so does the other side's.
//     A 101 tunnel is not bounded this way.
package http1
