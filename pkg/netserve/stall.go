package netserve

import (
	"net"
	"time"
)

// StallGuard bounds how long a write to a peer that stopped reading may
// block: once the connection's write deadline passes, the write fails and
// the connection is given up, instead of holding a goroutine (and, through
// it, the other side's connection) for as long as the peer likes. The
// deadline is moved only when less than half of the timeout is left, so
// most writes cost one clock read and no deadline update.
type StallGuard struct {
	Timeout  time.Duration // 0: writes are not bounded
	deadline time.Time     // the write deadline set on the connection
}

// Arm makes sure the next write to c has at least half the timeout.
func (g *StallGuard) Arm(c net.Conn) {
	if g.Timeout <= 0 {
		return
	}
	now := time.Now()
	if g.deadline.Sub(now) >= g.Timeout/2 {
		return
	}
	g.deadline = now.Add(g.Timeout)
	_ = c.SetWriteDeadline(g.deadline)
}

// Disarm stops bounding writes to c and clears any deadline set (a tunnel
// after an upgrade carries long-lived traffic at its peers' pace).
func (g *StallGuard) Disarm(c net.Conn) {
	g.Timeout = 0
	if !g.deadline.IsZero() {
		g.deadline = time.Time{}
		_ = c.SetWriteDeadline(time.Time{})
	}
}
