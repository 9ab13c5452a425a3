//go:build !linux

package proxy

import "net"

// fastPipe: no fast path here; the user-space copy moves every byte.
func fastPipe(dst, src net.Conn, paths *pipePaths) (applied, failed bool) { return false, false }
