// Package insight derives what the control plane tells about the live state
// of dataplanes from the store: a dataplane's online status from its
// DataplaneInsight and the heartbeats of the control planes
// (ControlPlaneInstance), per-service summaries, and which dataplanes have
// been offline long enough to be cleaned up. Everything here is pure; the
// writes are in package insight/record, the cleanup task in
// insight/cleanup (docs/2026-12-06-insights-in-the-store.md).
package insight

import (
	"sort"
	"time"

	"github.com/kumametrics/mesh/pkg/resource"
)

// Heartbeats of control-plane instances. An instance renews its
// ControlPlaneInstance record every HeartbeatInterval; once its heartbeat
// is older than HeartbeatTimeout the instance counts as dead, and the
// subscriptions it held as offline since that heartbeat.
const (
	HeartbeatInterval = 10 * time.Second
	HeartbeatTimeout  = 30 * time.Second
)

// MaxSubscriptions is how much history a DataplaneInsight keeps (the newest).
const MaxSubscriptions = 5

// Heartbeat is the last heartbeat of a control-plane instance.
type Heartbeat struct {
	Time time.Time
	// Stopped: the instance is known to be gone, whatever Time says.
	Stopped bool
}

// Instances are the heartbeats of control-plane instances, by instance id.
type Instances map[string]Heartbeat

// InstancesOf reads ControlPlaneInstance objects.
func InstancesOf(objs []*resource.Object) Instances {
	out := make(Instances, len(objs))
	for _, o := range objs {
		if s := o.ControlPlaneInstance(); s != nil {
			out[o.Meta.Name] = Heartbeat{Time: s.HeartbeatTime, Stopped: s.Stopped}
		}
	}
	return out
}

// Alive tells whether instance id runs at now: it is not stopped and its
// heartbeat is younger than HeartbeatTimeout.
func (in Instances) Alive(id string, now time.Time) bool {
	hb, ok := in[id]
	return ok && !hb.Stopped && now.Sub(hb.Time) < HeartbeatTimeout
}

// Online tells whether a subscription is connected at now: it has no
// disconnect time and the control plane holding it is alive.
func Online(sub *resource.Subscription, instances Instances, now time.Time) bool {
	return sub != nil && sub.DisconnectTime == nil && instances.Alive(sub.ControlPlaneInstanceID, now)
}

// Status of a DataplaneOverview.
const (
	StatusOnline  = "Online"
	StatusOffline = "Offline"
)

// Status is StatusOnline when the newest subscription of in (nil: none) is online.
func Status(in *resource.DataplaneInsightSpec, instances Instances, now time.Time) string {
	if Online(in.Latest(), instances, now) {
		return StatusOnline
	}
	return StatusOffline
}

// OfflineSince tells since when the dataplane of an insight has been
// offline at now: the disconnect time of its newest subscription, or, when
// the control plane holding it died without writing one, that control
// plane's last heartbeat (the insight's last write when even its record is
// gone). ok is false when it is online or never connected.
func OfflineSince(in *resource.Object, instances Instances, now time.Time) (since time.Time, ok bool) {
	sub := in.DataplaneInsight().Latest()
	switch {
	case sub == nil || Online(sub, instances, now):
		return time.Time{}, false
	case sub.DisconnectTime != nil:
		return *sub.DisconnectTime, true
	}
	if hb, known := instances[sub.ControlPlaneInstanceID]; known {
		return hb.Time, true
	}
	return in.Meta.ModificationTime, true
}

// Deletion is a dataplane the cleanup deletes.
type Deletion struct {
	Key resource.Key
	// Version is the Dataplane's version it was judged at: the deletion is
	// conditional on it.
	Version      int64
	OfflineSince time.Time
}

// Cleanup returns the dataplanes that have been offline for longer than
// age at now, sorted by key. A dataplane without an insight (created by
// hand, never connected) is never one; neither is one whose proxy is online.
// insights are by dataplane key.
func Cleanup(dataplanes []*resource.Object, insights map[resource.Key]*resource.Object, instances Instances, now time.Time, age time.Duration) []Deletion {
	var out []Deletion
	for _, dp := range dataplanes {
		in, ok := insights[dp.Meta.Key()]
		if !ok {
			continue
		}
		since, offline := OfflineSince(in, instances, now)
		if offline && now.Sub(since) > age {
			out = append(out, Deletion{Key: dp.Meta.Key(), Version: dp.Meta.Version, OfflineSince: since})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		return a.Mesh < b.Mesh || a.Mesh == b.Mesh && a.Name < b.Name
	})
	return out
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

// Merge returns the subscriptions of an insight with sub in place of the
// one of the same ID (appended when new), keeping the newest
// MaxSubscriptions by connect time, oldest first. subs is not modified.
func Merge(subs []resource.Subscription, sub resource.Subscription) []resource.Subscription {
	out := make([]resource.Subscription, 0, len(subs)+1)
	replaced := false
	for _, s := range subs {
		if s.ID == sub.ID {
			s, replaced = sub, true
		}
		out = append(out, s)
	}
	if !replaced {
		out = append(out, sub)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ConnectTime.Before(out[j].ConnectTime) })
	if len(out) > MaxSubscriptions {
		out = out[len(out)-MaxSubscriptions:]
	}
	return out
}

// Orphans returns the insights whose Dataplane is not among dataplanes.
func Orphans(insights, dataplanes []*resource.Object) []*resource.Object {
	have := make(map[resource.Key]bool, len(dataplanes))
	for _, dp := range dataplanes {
		have[dp.Meta.Key()] = true
	}
	var out []*resource.Object
	for _, in := range insights {
		if !have[in.Meta.Key()] {
			out = append(out, in)
		}
	}
	return out
}
