package apiclient

import (
	"time"

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

// DataplaneInsight is the subscription history of a dataplane, oldest first.
type DataplaneInsight struct {
	Subscriptions []Subscription `json:"subscriptions"`
}

// Subscription is one config stream of a dataplane to a control plane.
type Subscription struct {
	ID                     string    `json:"id"`
	ControlPlaneInstanceID string    `json:"controlPlaneInstanceId"`
	ConnectTime            time.Time `json:"connectTime"`
	// DisconnectTime is nil while the stream is connected.
	DisconnectTime *time.Time         `json:"disconnectTime,omitempty"`
	Status         SubscriptionStatus `json:"status"`
	ConfigVersion  string             `json:"configVersion,omitempty"`
}

// SubscriptionStatus counts the config responses of a subscription.
type SubscriptionStatus struct {
	LastUpdateTime *time.Time `json:"lastUpdateTime,omitempty"`
	Total          Totals     `json:"total"`
}

// Totals are the config responses of a subscription.
type Totals struct {
	ResponsesSent         uint64 `json:"responsesSent"`
	ResponsesAcknowledged uint64 `json:"responsesAcknowledged"`
	ResponsesRejected     uint64 `json:"responsesRejected"`
}

// Latest returns the newest subscription (the one connected last), or nil.
func (d DataplaneInsight) Latest() *Subscription {
	var latest *Subscription
	for i := range d.Subscriptions {
		s := &d.Subscriptions[i]
		if latest == nil || !s.ConnectTime.Before(latest.ConnectTime) {
			latest = s
		}
	}
	return latest
}

// Service status values of a ServiceInsight.
const (
	ServiceOnline            = "online"
	ServiceOffline           = "offline"
	ServicePartiallyDegraded = "partially_degraded"
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
