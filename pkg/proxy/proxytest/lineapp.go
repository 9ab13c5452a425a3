// Package proxytest holds what the tests of the proxy and of the agent
// share: applications to proxy to.
package proxytest

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
)

// LineApp is a TCP application on 127.0.0.1 that answers every line with
// "<name>:<line>". It stops when stop is called or the test ends, closing
// its connections.
func LineApp(t testing.TB, name string) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("line application: %v", err)
	}
	return LineAppOn(t, ln, name)
}

// LineAppOn is LineApp serving ln (e.g. bound inside a network namespace).
func LineAppOn(t testing.TB, ln net.Listener, name string) (addr string, stop func()) {
	t.Helper()
	return Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, name+":"+line); err != nil {
				return
			}
		}
	})
}

// Serve serves ln, each connection on a goroutine of its own with serve,
// until stop is called or the test ends; stop closes the listener and the
// connections still open and waits for the goroutines.
func Serve(t testing.TB, ln net.Listener, serve func(net.Conn)) (addr string, stop func()) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = ln.Close()
			mu.Lock()
			for c := range conns {
				_ = c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
