package resource

import "time"

// DataplaneInsightSpec is the body of a DataplaneInsight: the config-stream
// subscriptions of the Dataplane of the same mesh and name, oldest first
// (the reference system's shape). Control planes write it; it is read-only
// to users.
type DataplaneInsightSpec struct {
	Subscriptions []Subscription `json:"subscriptions"`
}

// Kind implements Spec.
func (*DataplaneInsightSpec) Kind() Kind { return KindDataplaneInsight }

// Subscription is one config stream of a dataplane to a control plane.
type Subscription struct {
	ID                     string     `json:"id"`
	ControlPlaneInstanceID string     `json:"controlPlaneInstanceId"`
	ConnectTime            time.Time  `json:"connectTime"`
	DisconnectTime         *time.Time `json:"disconnectTime,omitempty"`
	Status                 SubStatus  `json:"status"`
	// ConfigVersion is the last config version the proxy acknowledged.
	ConfigVersion string `json:"configVersion,omitempty"`
}

// SubStatus counts what was exchanged on a subscription.
type SubStatus struct {
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
func (d *DataplaneInsightSpec) Latest() *Subscription {
	if d == nil {
		return nil
	}
	var latest *Subscription
	for i := range d.Subscriptions {
		s := &d.Subscriptions[i]
		if latest == nil || !s.ConnectTime.Before(latest.ConnectTime) {
			latest = s
		}
	}
	return latest
}

// ControlPlaneInstanceSpec is the body of a ControlPlaneInstance: the
// heartbeat of one running control plane. While HeartbeatTime is fresh and
// Stopped is false, the subscriptions the instance holds are online.
type ControlPlaneInstanceSpec struct {
	StartTime     time.Time `json:"startTime"`
	HeartbeatTime time.Time `json:"heartbeatTime"`
	// Stopped marks an instance known to be gone (its successor on a
	// single-control-plane store found it at start) before its heartbeat
	// went stale.
	Stopped bool `json:"stopped,omitempty"`
}

// Kind implements Spec.
func (*ControlPlaneInstanceSpec) Kind() Kind { return KindControlPlaneInstance }
