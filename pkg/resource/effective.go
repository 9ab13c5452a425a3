package resource

import "sort"

// EffectiveMetrics is the resolved metrics endpoint of one dataplane: every
// field has its final value.
type EffectiveMetrics struct {
	// Backend is the name of the mesh's enabled metrics backend.
	Backend string
	Port    uint32
	Path    string
	// Tags identify the endpoint as an inbound for TrafficPermission.
	Tags     map[string]string
	SkipMTLS bool
	// TLSMode is one of the TLSMode* constants.
	TLSMode     string
	FilterRegex string
	UsedOnly    bool
	// Aggregate lists the enabled application endpoints, sorted by name.
	Aggregate []AggregateEndpoint
}

// AggregateEndpoint is one enabled application metrics endpoint.
type AggregateEndpoint struct {
	Name    string
	Port    uint32
	Path    string
	Address string
}

// EffectiveMetricsConfig resolves the metrics endpoint of a dataplane in a
// mesh. It returns nil when the mesh has no enabled prometheus backend.
//
// Rules: the mesh's enabled backend (with defaults) is the base; every field
// the dataplane's `metrics.conf` sets explicitly wins, including false and
// empty values; tags merge key by key with the dataplane winning; aggregate
// entries are replaced whole by name; entries with `enabled: false` are
// dropped. The TLS mode follows the dataplane's `tls.mode`, else its
// `skipMTLS`, else the mesh's.
func EffectiveMetricsConfig(mesh *MeshSpec, dp *DataplaneSpec) *EffectiveMetrics {
	if mesh == nil || mesh.Metrics == nil || mesh.Metrics.EnabledBackend == "" {
		return nil
	}
	var base *MetricsBackend
	for i := range mesh.Metrics.Backends {
		if mesh.Metrics.Backends[i].Name == mesh.Metrics.EnabledBackend {
			base = &mesh.Metrics.Backends[i]
		}
	}
	if base == nil || base.Type != MetricsTypePrometheus {
		return nil
	}
	e := &EffectiveMetrics{
		Backend: base.Name,
		Port:    DefaultMetricsPort,
		Path:    DefaultMetricsPath,
		Tags:    map[string]string{},
	}
	aggregates := map[string]PrometheusAggregate{}
	meshMode := ""
	if c := base.Conf; c != nil {
		if c.Port != nil {
			e.Port = *c.Port
		}
		if c.Path != "" {
			e.Path = c.Path
		}
		for k, v := range c.Tags {
			e.Tags[k] = v
		}
		if c.SkipMTLS != nil {
			e.SkipMTLS = *c.SkipMTLS
		}
		if c.TLS != nil {
			meshMode = c.TLS.Mode
		}
		if c.Envoy != nil {
			if c.Envoy.FilterRegex != nil {
				e.FilterRegex = *c.Envoy.FilterRegex
			}
			if c.Envoy.UsedOnly != nil {
				e.UsedOnly = *c.Envoy.UsedOnly
			}
		}
		for _, a := range c.Aggregate {
			aggregates[a.Name] = a
		}
	}
	if meshMode == "" {
		meshMode = modeFor(e.SkipMTLS)
	}
	if len(e.Tags) == 0 {
		e.Tags[ServiceTag] = DefaultMetricsService
	}
	e.TLSMode = meshMode

	if dp != nil && dp.Metrics != nil && dp.Metrics.Conf != nil {
		c := dp.Metrics.Conf
		if c.Port != nil {
			e.Port = *c.Port
		}
		if c.Path != "" {
			e.Path = c.Path
		}
		for k, v := range c.Tags {
			e.Tags[k] = v
		}
		switch {
		case c.TLS != nil && c.TLS.Mode != "":
			e.TLSMode = c.TLS.Mode
		case c.SkipMTLS != nil && *c.SkipMTLS:
			e.TLSMode = TLSModeDisabled
		case c.SkipMTLS != nil && meshMode == TLSModeDisabled:
			e.TLSMode = TLSModeActiveMTLSBackend
		}
		if c.SkipMTLS != nil {
			e.SkipMTLS = *c.SkipMTLS
		} else if c.TLS != nil && c.TLS.Mode != "" {
			e.SkipMTLS = c.TLS.Mode == TLSModeDisabled
		}
		if c.Envoy != nil {
			if c.Envoy.FilterRegex != nil {
				e.FilterRegex = *c.Envoy.FilterRegex
			}
			if c.Envoy.UsedOnly != nil {
				e.UsedOnly = *c.Envoy.UsedOnly
			}
		}
		for _, a := range c.Aggregate {
			aggregates[a.Name] = a
		}
	}

	for _, a := range aggregates {
		if a.Enabled != nil && !*a.Enabled {
			continue
		}
		path := a.Path
		if path == "" {
			path = DefaultAggregatePath
		}
		e.Aggregate = append(e.Aggregate, AggregateEndpoint{Name: a.Name, Port: a.Port, Path: path, Address: a.Address})
	}
	sort.Slice(e.Aggregate, func(i, j int) bool { return e.Aggregate[i].Name < e.Aggregate[j].Name })
	return e
}

func modeFor(skipMTLS bool) string {
	if skipMTLS {
		return TLSModeDisabled
	}
	return TLSModeActiveMTLSBackend
}
