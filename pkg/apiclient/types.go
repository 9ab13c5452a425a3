package apiclient

import (
	"time"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
)

// Index is the control plane's answer to `GET /`.
type Index struct {
	Hostname   string `json:"hostname"`
	Tagline    string `json:"tagline"`
	Version    string `json:"version"`
	InstanceID string `json:"instanceId"`
}

// Dataplane status values of a DataplaneOverview.
const (
	StatusOnline  = "Online"
	StatusOffline = "Offline"
)

// DataplaneOverview is a Dataplane with what the control plane knows of its
// config streams (`GET /meshes/{mesh}/dataplanes+insights`).
type DataplaneOverview struct {
	Mesh             string                 `json:"mesh"`
	Name             string                 `json:"name"`
	CreationTime     time.Time              `json:"creationTime"`
	ModificationTime time.Time              `json:"modificationTime"`
	Dataplane        resource.DataplaneSpec `json:"dataplane"`
	DataplaneInsight DataplaneInsight       `json:"dataplaneInsight"`
	// Status is StatusOnline or StatusOffline.
	Status string `json:"status"`
}

// The insight types are the control plane's own (package resource).
type (
	DataplaneInsight   = resource.DataplaneInsightSpec
	Subscription       = resource.Subscription
	SubscriptionStatus = resource.SubStatus
	Totals             = resource.Totals
)

// Service status values of a ServiceInsight.
const (
	ServiceOnline            = insight.ServiceOnline
	ServiceOffline           = insight.ServiceOffline
	ServicePartiallyDegraded = insight.ServicePartiallyDegraded
)

// ServiceInsight summarizes the dataplanes of one service
// (`GET /meshes/{mesh}/service-insights`).
type ServiceInsight struct {
	Mesh string `json:"mesh"`
	// Name is the kuma.io/service value.
	Name string `json:"name"`
	// Status is ServiceOnline, ServiceOffline or ServicePartiallyDegraded.
	Status     string          `json:"status"`
	Dataplanes DataplaneCounts `json:"dataplanes"`
}

// DataplaneCounts counts the dataplanes of a service by status.
type DataplaneCounts struct {
	Online  int `json:"online"`
	Offline int `json:"offline"`
	Total   int `json:"total"`
}

// Zone is one zone of the control plane (`GET /zones`).
type Zone struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
}
