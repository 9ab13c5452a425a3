// Package insight keeps what the control plane knows about the live state of
// dataplanes (their config-stream subscriptions) and derives their online
// status and per-service summaries. Insights live in memory, not in the
// store: a status change must not look like a resource change to the
// reconcilers (docs/2026-11-25-insights-in-memory.md).
package insight

import (
	"sort"
	"sync"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
)

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

// DataplaneInsight is the subscription history of one dataplane, oldest first.
type DataplaneInsight struct {
	Subscriptions []Subscription `json:"subscriptions"`
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

// Online tells whether the newest subscription is still connected.
func (d DataplaneInsight) Online() bool {
	l := d.Latest()
	return l != nil && l.DisconnectTime == nil
}

// Status is "Online" or "Offline".
func (d DataplaneInsight) Status() string {
	if d.Online() {
		return "Online"
	}
	return "Offline"
}

// maxSubscriptions is how much history is kept per dataplane.
const maxSubscriptions = 5

// Registry holds the insights of every dataplane. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	insights map[resource.Key]*DataplaneInsight
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{insights: map[resource.Key]*DataplaneInsight{}}
}

// Get returns a copy of a dataplane's insight (empty when it never connected).
func (r *Registry) Get(key resource.Key) DataplaneInsight {
	r.mu.RLock()
	defer r.mu.RUnlock()
	in, ok := r.insights[key]
	if !ok {
		return DataplaneInsight{}
	}
	out := DataplaneInsight{Subscriptions: append([]Subscription(nil), in.Subscriptions...)}
	return out
}

// Connect records a new subscription of a dataplane.
func (r *Registry) Connect(key resource.Key, sub Subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in, ok := r.insights[key]
	if !ok {
		in = &DataplaneInsight{}
		r.insights[key] = in
	}
	in.Subscriptions = append(in.Subscriptions, sub)
	if len(in.Subscriptions) > maxSubscriptions {
		in.Subscriptions = append([]Subscription(nil), in.Subscriptions[len(in.Subscriptions)-maxSubscriptions:]...)
	}
}

// Update changes a subscription in place, found by its ID.
func (r *Registry) Update(key resource.Key, id string, change func(*Subscription)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in, ok := r.insights[key]
	if !ok {
		return
	}
	for i := range in.Subscriptions {
		if in.Subscriptions[i].ID == id {
			change(&in.Subscriptions[i])
		}
	}
}

// Disconnect marks a subscription closed.
func (r *Registry) Disconnect(key resource.Key, id string, at time.Time) {
	r.Update(key, id, func(s *Subscription) { s.DisconnectTime = &at })
}

// Forget drops a dataplane's insight (when the dataplane is deleted).
func (r *Registry) Forget(key resource.Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.insights, key)
}

// Service status values of a ServiceInsight.
const (
	ServiceOnline            = "online"
	ServiceOffline           = "offline"
	ServicePartiallyDegraded = "partially_degraded"
)

// ServiceInsight summarizes the dataplanes of one service.
type ServiceInsight struct {
	Name       string
	Status     string
	Online     int
	Offline    int
	Total      int
	Dataplanes []string
}

// Services summarizes dataplanes by their kuma.io/service values (a
// dataplane with several services counts in each). online reports whether a
// dataplane is online. The result is sorted by service name.
func Services(dataplanes []*resource.Object, online func(resource.Key) bool) []ServiceInsight {
	byName := map[string]*ServiceInsight{}
	for _, dp := range dataplanes {
		spec := dp.Dataplane()
		if spec == nil {
			continue
		}
		up := online(dp.Meta.Key())
		for _, svc := range spec.Services() {
			si, ok := byName[svc]
			if !ok {
				si = &ServiceInsight{Name: svc}
				byName[svc] = si
			}
			si.Total++
			if up {
				si.Online++
			} else {
				si.Offline++
			}
			si.Dataplanes = append(si.Dataplanes, dp.Meta.Name)
		}
	}
	out := make([]ServiceInsight, 0, len(byName))
	for _, si := range byName {
		switch {
		case si.Online == si.Total:
			si.Status = ServiceOnline
		case si.Online == 0:
			si.Status = ServiceOffline
		default:
			si.Status = ServicePartiallyDegraded
		}
		out = append(out, *si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
