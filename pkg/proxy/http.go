package proxy

// newHTTP1 returns the HTTP/1.1 handler of a route, or nil to carry it as TCP.
func (p *Proxy) newHTTP1(rt route) connHandler { return nil }
