// Package netserve is how the project's servers meet the network so that
// faults and bad clients cannot stop them: an accept loop that rides out
// temporary failures (file descriptors exhausted, a connection aborted
// before it was accepted) with backoff instead of ending, the recovery of a
// panic in one connection's goroutine, and the bounds every HTTP and gRPC
// server is built with (timeouts, header size, streams per connection,
// keepalive enforcement).
package netserve

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// Counter counts events (a stats.Counter, a prometheus.Counter).
type Counter interface{ Inc() }

// AcceptOptions configure an accept loop; every field is optional.
type AcceptOptions struct {
	// Name identifies the listener in logs.
	Name string
	Log  *slog.Logger
	// Errors counts the accepts that failed temporarily and were retried.
	Errors Counter
}

// Backoff of a failing accept, as net/http's: the first retry after
// minBackoff, each next one after twice as long, at most maxBackoff.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Listen wraps ln so that its Accept rides out temporary failures: it
// retries them with backoff (5 ms doubling to 1 s), logs each episode once
// (when it begins and when accepting works again) and counts every failed
// attempt. Accept returns a connection, an error wrapping net.ErrClosed once
// the listener is closed (also while it waits to retry), or a permanent
// error. Give the result to net/http or gRPC, which then never see a
// temporary failure, or loop over it with Serve.
func Listen(ln net.Listener, opts AcceptOptions) net.Listener {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &listener{Listener: ln, opts: opts, done: make(chan struct{})}
}

type listener struct {
	net.Listener
	opts AcceptOptions
	done chan struct{}
	once sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	var (
		delay    time.Duration
		failures int
		since    time.Time
	)
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if failures > 0 {
				l.opts.Log.Info("accepting connections again", "listener", l.opts.Name, "failed_attempts", failures, "after", time.Since(since).Round(time.Millisecond).String())
			}
			return c, nil
		}
		if !Temporary(err) {
			return nil, err
		}
		if l.opts.Errors != nil {
			l.opts.Errors.Inc()
		}
		if failures == 0 {
			since = time.Now()
			l.opts.Log.Warn("accepting connections fails, retrying with backoff until it works again", "listener", l.opts.Name, "err", err)
		}
		failures++
		delay = min(max(2*delay, minBackoff), maxBackoff)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, fmt.Errorf("accept on %s: %w", l.Addr(), net.ErrClosed)
		}
	}
}

// Close closes the listener and ends a wait to retry.
func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// Temporary tells whether an accept error is a passing condition worth
// retrying: the process or the system is out of file descriptors or memory
// for sockets, a connection failed between the handshake and accept (Linux
// reports a pending network error of the new socket from accept, see
// accept(2)), or a deadline passed.
func Temporary(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
			syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
			syscall.EPROTO, syscall.ENOPROTOOPT, syscall.ENETDOWN, syscall.ENETUNREACH,
			syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.ENONET, syscall.EOPNOTSUPP:
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Serve accepts connections from ln (through Listen) and hands each to
// handle, which must not block for long (serve the connection in a goroutine
// of its own), until ln is closed (nil) or accepting fails permanently (the
// error). The owner must act on such an error: the listener is dead.
func Serve(ln net.Listener, opts AcceptOptions, handle func(net.Conn)) error {
	l := Listen(ln, opts)
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		handle(c)
	}
}
