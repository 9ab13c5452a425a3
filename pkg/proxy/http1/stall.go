package http1

import (
	"net"
	"time"
)

// stallGuard bounds how long a write to a peer that stopped reading may
// block: once the connection's write deadline passes, the write fails and
// the connection is given up, instead of holding a goroutine (and, through
// it, the other side's connection) for as long as the peer likes. The
// deadline is moved only when less than half of the timeout is left, so
// most writes cost one clock read and no deadline update.
type stallGuard struct {
	timeout  time.Duration // 0: writes are not bounded
	deadline time.Time     // the write deadline set on the connection
}

// arm makes sure the next write to c has at least half the timeout.
func (g *stallGuard) arm(c net.Conn) {
	if g.timeout <= 0 {
		return
	}
	now := time.Now()
	if g.deadline.Sub(now) >= g.timeout/2 {
		return
	}
	g.deadline = now.Add(g.timeout)
	_ = c.SetWriteDeadline(g.deadline)
}

// disarm stops bounding writes to c and clears any deadline set (a tunnel
// after an upgrade carries long-lived traffic at its peers' pace).
func (g *stallGuard) disarm(c net.Conn) {
	g.timeout = 0
	if !g.deadline.IsZero() {
		g.deadline = time.Time{}
		_ = c.SetWriteDeadline(time.Time{})
	}
}
