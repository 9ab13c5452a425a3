package resource

// Defaults of the metrics and mTLS configuration (compat.md §1).
const (
	DefaultMetricsPort      uint32 = 5670
	DefaultMetricsPath             = "/metrics"
	DefaultMetricsService          = "dataplane-metrics"
	DefaultAggregatePath           = "/metrics"
	DefaultDpCertExpiration        = "24h"
	DefaultCARSABits        uint32 = 2048
	DefaultCAExpiration            = "10y"
)

// ApplyDefaults fills in the defaults that are stored with a resource, in place.
// It expects a valid spec.
func ApplyDefaults(o *Object) {
	switch s := o.Spec.(type) {
	case *MeshSpec:
		defaultMesh(s)
	case *DataplaneSpec:
		if s.Metrics != nil && s.Metrics.Conf != nil {
			defaultAggregate(s.Metrics.Conf.Aggregate)
		}
		if s.Networking != nil && s.Networking.TransparentProxying != nil {
			tp := s.Networking.TransparentProxying
			tp.RedirectPortInbound, tp.RedirectPortOutbound = tp.InboundPort(), tp.OutboundPort()
		}
	}
}

func defaultMesh(s *MeshSpec) {
	if s.Metrics != nil {
		for i := range s.Metrics.Backends {
			b := &s.Metrics.Backends[i]
			if b.Type != MetricsTypePrometheus {
				continue
			}
			if b.Conf == nil {
				b.Conf = &PrometheusConf{}
			}
			defaultPrometheusConf(b.Conf)
		}
	}
	if s.MTLS != nil {
		for i := range s.MTLS.Backends {
			b := &s.MTLS.Backends[i]
			if b.Type != CATypeBuiltin {
				continue
			}
			if b.DpCert == nil {
				b.DpCert = &DpCert{}
			}
			if b.DpCert.Rotation == nil {
				b.DpCert.Rotation = &DpCertRotation{}
			}
			if b.DpCert.Rotation.Expiration == "" {
				b.DpCert.Rotation.Expiration = DefaultDpCertExpiration
			}
			if b.Conf == nil {
				b.Conf = &BuiltinCAConf{}
			}
			if b.Conf.CACert == nil {
				b.Conf.CACert = &BuiltinCACert{}
			}
			if b.Conf.CACert.RSAbits == 0 {
				b.Conf.CACert.RSAbits = DefaultCARSABits
			}
			if b.Conf.CACert.Expiration == "" {
				b.Conf.CACert.Expiration = DefaultCAExpiration
			}
		}
	}
}

func defaultPrometheusConf(c *PrometheusConf) {
	if c.Port == nil {
		p := DefaultMetricsPort
		c.Port = &p
	}
	if c.Path == "" {
		c.Path = DefaultMetricsPath
	}
	if len(c.Tags) == 0 {
		c.Tags = map[string]string{ServiceTag: DefaultMetricsService}
	}
	if c.TLS == nil {
		c.TLS = &PrometheusTLS{}
	}
	if c.TLS.Mode == "" {
		c.TLS.Mode = TLSModeActiveMTLSBackend
		if c.SkipMTLS != nil && *c.SkipMTLS {
			c.TLS.Mode = TLSModeDisabled
		}
	}
	defaultAggregate(c.Aggregate)
}

func defaultAggregate(list []PrometheusAggregate) {
	for i := range list {
		if list[i].Path == "" {
			list[i].Path = DefaultAggregatePath
		}
	}
}
