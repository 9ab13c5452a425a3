package proxy

func newHTTP2(p *Proxy, rt route) connHandler { return &tcpProxy{c: rt.cluster, log: p.log} }
