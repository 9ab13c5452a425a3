package netserve

import (
	"log/slog"
	"net/http"
	"time"
)

// HTTPLimits bound what one client can hold of an HTTP server.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's head.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, head and body. It ends
	// once the body was read to its end: a handler may then wait longer (a
	// long poll) without its request being cancelled.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the response, from the end of the
	// request's head; zero for none (servers holding long polls).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head (431 beyond it; net/http
	// allows 4 KiB of slack).
	MaxHeaderBytes int
}

// DefaultHTTPLimits are safe for every server of the project: a head in 10 s
// and a whole request (bodies are at most 1 MiB) in a minute even over a slow
// link, idle keep-alive connections kept 2 minutes (longer than Prometheus'
// and kumactl's clients keep theirs idle), heads up to 64 KiB (as the proxy's
// HTTP engine; net/http's own default is 1 MiB).
var DefaultHTTPLimits = HTTPLimits{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       time.Minute,
	IdleTimeout:       2 * time.Minute,
	MaxHeaderBytes:    64 << 10,
}

// WithDefaults takes DefaultHTTPLimits' value for every zero field except
// WriteTimeout.
func (l HTTPLimits) WithDefaults() HTTPLimits {
	d := DefaultHTTPLimits
	l.ReadHeaderTimeout = orDefault(l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	l.ReadTimeout = orDefault(l.ReadTimeout, d.ReadTimeout)
	l.IdleTimeout = orDefault(l.IdleTimeout, d.IdleTimeout)
	l.MaxHeaderBytes = orDefault(l.MaxHeaderBytes, d.MaxHeaderBytes)
	return l
}

// orDefault is v, or d when v is not positive.
func orDefault[T int | uint32 | time.Duration](v, d T) T {
	if v <= 0 {
		return d
	}
	return v
}

// HTTPServer returns a server of h bounded by limits (zero fields take
// DefaultHTTPLimits', except WriteTimeout), logging its errors (a failed TLS
// handshake, a malformed request) to log at warning level.
func HTTPServer(h http.Handler, limits HTTPLimits, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := limits.WithDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
