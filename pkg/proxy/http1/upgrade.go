package http1

import (
	"io"
	"net"
	"time"
)

// tunnel copies raw bytes both ways between the client and uc after a 101
// Switching Protocols, until both directions ended. Bytes already buffered
// on either side go first. A direction that ends cleanly half-closes its
// destination so the peer sees the end; a failing one closes both
// connections. This is the only place where a session uses a second
// goroutine.
func (s *session) tunnel(uc *upConn) {
	_ = s.conn.SetReadDeadline(time.Time{})
	uc.setReadDeadline(time.Time{})
	s.stall.Disarm(s.conn)
	uc.stall.Disarm(uc.nc)
	done := make(chan struct{})
	panics := s.p.cfg.Load().Panics
	go func() {
		defer close(done)
		defer panics.Recover(bothConns{s.conn, uc.nc})
		var err error
		if n := s.br.Buffered(); n > 0 {
			b, _ := s.br.Peek(n)
			_, err = uc.Write(b)
			_, _ = s.br.Discard(n)
		}
		if err == nil {
			_, err = io.Copy(uc, s.conn)
		}
		endDirection(uc.nc, err, s.conn)
	}()
	_, err := io.Copy(s.conn, uc.br)
	endDirection(s.conn, err, uc.nc)
	<-done
}

// endDirection ends one direction of a tunnel: it half-closes dst after a
// clean end, and closes both connections after an error or when dst cannot
// half-close.
func endDirection(dst net.Conn, err error, src net.Conn) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// bothConns closes the two connections of a tunnel.
type bothConns [2]net.Conn

func (b bothConns) Close() error {
	_ = b[0].Close()
	_ = b[1].Close()
	return nil
}
