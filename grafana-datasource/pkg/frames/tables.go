package frames

import (
	"github.com/grafana/grafana-plugin-sdk-go/data"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/kumaapi"
)

// The table frames' names. Their first field is "name": a variable's values.
const (
	MeshesFrame   = "meshes"
	ZonesFrame    = "zones"
	ServicesFrame = "services"
)

func table(name string, fields ...*data.Field) *data.Frame {
	f := data.NewFrame(name, fields...)
	f.SetMeta(&data.FrameMeta{PreferredVisualization: data.VisTypeTable})
	return f
}

// Meshes is the table of meshes: name, mtls and metrics (the enabled
// backend as `type/name`, or `off`, as kumactl get meshes shows them).
func Meshes(ms []kumaapi.Mesh) *data.Frame {
	name, mtls, metrics := make([]string, len(ms)), make([]string, len(ms)), make([]string, len(ms))
	for i, m := range ms {
		name[i], mtls[i], metrics[i] = m.Name, m.MTLS.Enabled(), m.Metrics.Enabled()
	}
	return table(MeshesFrame,
		data.NewField("name", nil, name),
		data.NewField("mtls", nil, mtls).SetConfig(unit("", "mTLS")),
		data.NewField("metrics", nil, metrics).SetConfig(unit("", "Metrics")),
	)
}

// Zones is the table of zones: name, enabled.
func Zones(zs []kumaapi.Zone) *data.Frame {
	name, enabled := make([]string, len(zs)), make([]bool, len(zs))
	for i, z := range zs {
		name[i], enabled[i] = z.Name, z.Enabled
	}
	return table(ZonesFrame, data.NewField("name", nil, name), data.NewField("enabled", nil, enabled))
}

// Services is the table of services: name, mesh, status and the dataplanes
// online, offline and in total.
func Services(ss []kumaapi.ServiceInsight) *data.Frame {
	n := len(ss)
	name, mesh, status := make([]string, n), make([]string, n), make([]string, n)
	online, offline, total := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, s := range ss {
		name[i], mesh[i], status[i] = s.Name, s.Mesh, s.Status
		online[i], offline[i], total[i] = int64(s.Dataplanes.Online), int64(s.Dataplanes.Offline), int64(s.Dataplanes.Total)
	}
	return table(ServicesFrame,
		data.NewField("name", nil, name),
		data.NewField("mesh", nil, mesh),
		data.NewField("status", nil, status),
		data.NewField("online", nil, online).SetConfig(unit("none", "Online")),
		data.NewField("offline", nil, offline).SetConfig(unit("none", "Offline")),
		data.NewField("total", nil, total).SetConfig(unit("none", "Dataplanes")),
	)
}
