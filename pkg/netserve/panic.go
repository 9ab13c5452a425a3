package netserve

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
)

// Panics reports the panics recovered in connection goroutines: each is
// logged with its stack and counted. The zero value only discards them; a
// nil *Panics is valid too.
type Panics struct {
	// Name identifies the server or listener in logs.
	Name  string
	Log   *slog.Logger
	Count Counter
}

// Recover, deferred directly in the goroutine serving c, ends a panic of
// that goroutine: it is reported and c is closed, so only that connection
// ends. http.ErrAbortHandler, a deliberate abort, is not reported.
//
//	go func() {
//		defer panics.Recover(conn)
//		serve(conn)
//	}()
func (p *Panics) Recover(c io.Closer) {
	v := recover()
	if v == nil {
		return
	}
	if v != http.ErrAbortHandler { // the value panicked with, not a wrapped error
		p.report(v, debug.Stack())
	}
	if c != nil {
		_ = c.Close()
	}
}

// RecoverHTTP, deferred directly in an http.Handler, reports a panic of the
// handler and then aborts the request with http.ErrAbortHandler, which
// net/http turns into a closed connection (HTTP/1.1) or a reset stream
// (HTTP/2) without logging it again: the client sees the request fail, not
// a response cut short that looks complete.
func (p *Panics) RecoverHTTP() {
	v := recover()
	if v == nil {
		return
	}
	if v != http.ErrAbortHandler { // the value panicked with, not a wrapped error
		p.report(v, debug.Stack())
	}
	panic(http.ErrAbortHandler)
}

// RecoverAsError, deferred directly in a function with a named error
// result, turns a panic of that function into an error in *err (reported as
// Recover reports it), for work done on a goroutine the caller does not own
// (a dial run by net/http's transport).
func (p *Panics) RecoverAsError(err *error) {
	v := recover()
	if v == nil {
		return
	}
	p.report(v, debug.Stack())
	*err = fmt.Errorf("panic: %v", v)
}

func (p *Panics) report(v any, stack []byte) {
	if p == nil {
		return
	}
	if p.Count != nil {
		p.Count.Inc()
	}
	if p.Log != nil {
		p.Log.Error("recovered a panic while serving a connection; only that connection ended",
			"listener", p.Name, "panic", fmt.Sprint(v), "stack", string(stack))
	}
}
