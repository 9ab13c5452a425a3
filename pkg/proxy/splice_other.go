//go:build !linux

package proxy

import "net"

// splicePipe: no splice(2) here; the user-space copy moves every byte.
func splicePipe(dst, src net.Conn, paths *pipePaths) bool { return false }
