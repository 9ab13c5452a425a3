package insight_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/resource"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { v := t0.Add(d); return &v }

func sub(id, cp string, connect time.Duration, disconnect *time.Time) resource.Subscription {
	return resource.Subscription{ID: id, ControlPlaneInstanceID: cp, ConnectTime: t0.Add(connect), DisconnectTime: disconnect}
}

func insightOf(name string, modified time.Duration, subs ...resource.Subscription) *resource.Object {
	o := resource.New("default", name, &resource.DataplaneInsightSpec{Subscriptions: subs})
	o.Meta.ModificationTime = t0.Add(modified)
	return o
}

func dataplane(name string, version int64) *resource.Object {
	o := resource.New("default", name, &resource.DataplaneSpec{})
	o.Meta.Version = version
	return o
}

func TestOnlineNeedsAnOpenSubscriptionOfALiveControlPlane(t *testing.T) {
	instances := insight.Instances{"cp-a": {Time: t0}, "cp-b": {Time: t0.Add(-time.Hour)}, "cp-stopped": {Time: t0, Stopped: true}}
	cases := []struct {
		name string
		sub  *resource.Subscription
		now  time.Time
		want bool
	}{
		{"open, fresh heartbeat", &resource.Subscription{ControlPlaneInstanceID: "cp-a"}, t0.Add(insight.HeartbeatTimeout - time.Nanosecond), true},
		{"open, heartbeat just stale", &resource.Subscription{ControlPlaneInstanceID: "cp-a"}, t0.Add(insight.HeartbeatTimeout), false},
		{"open, dead control plane", &resource.Subscription{ControlPlaneInstanceID: "cp-b"}, t0, false},
		{"open, unknown control plane", &resource.Subscription{ControlPlaneInstanceID: "cp-gone"}, t0, false},
		{"open, stopped control plane", &resource.Subscription{ControlPlaneInstanceID: "cp-stopped"}, t0, false},
		{"closed", &resource.Subscription{ControlPlaneInstanceID: "cp-a", DisconnectTime: at(0)}, t0, false},
		{"never connected", nil, t0, false},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, insight.Online(tc.sub, instances, tc.now), tc.name)
	}
	require.Equal(t, insight.StatusOnline, insight.Status(&resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{
		sub("old", "cp-a", -time.Hour, at(-time.Minute)), sub("new", "cp-a", -time.Second, nil),
	}}, instances, t0), "the newest subscription decides")
	require.Equal(t, insight.StatusOffline, insight.Status(nil, instances, t0))
}

func TestOfflineSince(t *testing.T) {
	instances := insight.Instances{"cp-live": {Time: t0}, "cp-dead": {Time: t0.Add(-2 * time.Hour)}}
	cases := []struct {
		name    string
		in      *resource.Object
		want    time.Time
		offline bool
	}{
		{"online", insightOf("a", 0, sub("s", "cp-live", -time.Hour, nil)), time.Time{}, false},
		{"never connected", insightOf("b", 0), time.Time{}, false},
		{"disconnected", insightOf("c", 0, sub("s", "cp-live", -3*time.Hour, at(-90*time.Minute))), t0.Add(-90 * time.Minute), true},
		{"its control plane died", insightOf("d", -3*time.Hour, sub("s", "cp-dead", -3*time.Hour, nil)), t0.Add(-2 * time.Hour), true},
		{"its control plane's record is gone", insightOf("e", -4*time.Hour, sub("s", "cp-gone", -5*time.Hour, nil)), t0.Add(-4 * time.Hour), true},
	}
	for _, tc := range cases {
		since, offline := insight.OfflineSince(tc.in, instances, t0)
		require.Equal(t, tc.offline, offline, tc.name)
		require.Equal(t, tc.want, since, tc.name)
	}
}

func TestCleanupSelectsOnlyDataplanesOfflineLongerThanTheAge(t *testing.T) {
	const age = 72 * time.Hour
	instances := insight.Instances{"cp-live": {Time: t0}, "cp-dead": {Time: t0.Add(-73 * time.Hour)}}
	dataplanes := []*resource.Object{
		dataplane("z-gone-long", 3), dataplane("online", 1), dataplane("never-connected", 1),
		dataplane("gone-recently", 1), dataplane("gone-exactly-age", 1), dataplane("dead-cp", 2),
		dataplane("dead-cp-recent", 1), dataplane("reconnected", 1),
	}
	insights := map[resource.Key]*resource.Object{}
	for _, in := range []*resource.Object{
		insightOf("z-gone-long", 0, sub("s", "cp-live", -100*time.Hour, at(-80*time.Hour))),
		insightOf("online", 0, sub("s", "cp-live", -100*time.Hour, nil)),
		insightOf("gone-recently", 0, sub("s", "cp-live", -100*time.Hour, at(-time.Hour))),
		insightOf("gone-exactly-age", 0, sub("s", "cp-live", -100*time.Hour, at(-age))),
		insightOf("dead-cp", 0, sub("s", "cp-dead", -100*time.Hour, nil)),
		insightOf("dead-cp-recent", 0, sub("s", "cp-dead", -100*time.Hour, at(-time.Hour))),
		insightOf("reconnected", 0, sub("old", "cp-dead", -100*time.Hour, at(-90*time.Hour)), sub("new", "cp-live", -time.Minute, nil)),
		insightOf("no-dataplane", 0, sub("s", "cp-live", -100*time.Hour, at(-80*time.Hour))),
	} {
		insights[in.Meta.Key()] = in
	}
	got := insight.Cleanup(dataplanes, insights, instances, t0, age)
	require.Equal(t, []insight.Deletion{
		{Key: resource.Key{Mesh: "default", Name: "dead-cp"}, Version: 2, OfflineSince: t0.Add(-73 * time.Hour)},
		{Key: resource.Key{Mesh: "default", Name: "z-gone-long"}, Version: 3, OfflineSince: t0.Add(-80 * time.Hour)},
	}, got)
	require.Empty(t, insight.Cleanup(dataplanes, insights, instances, t0, 1000*time.Hour))
}

func TestMergeKeepsTheNewestHistory(t *testing.T) {
	var subs []resource.Subscription
	for i := range 7 {
		subs = insight.Merge(subs, sub(string(rune('a'+i)), "cp", time.Duration(i)*time.Minute, nil))
	}
	require.Len(t, subs, insight.MaxSubscriptions)
	require.Equal(t, "c", subs[0].ID, "the oldest dropped")
	require.Equal(t, "g", subs[4].ID)
	closed := sub("e", "cp", 4*time.Minute, at(time.Hour))
	merged := insight.Merge(subs, closed)
	require.Equal(t, closed, merged[2], "replaced in place")
	require.Nil(t, subs[2].DisconnectTime, "the input is not modified")
}

func TestOrphans(t *testing.T) {
	ins := []*resource.Object{insightOf("a", 0), insightOf("b", 0)}
	require.Equal(t, []*resource.Object{ins[1]}, insight.Orphans(ins, []*resource.Object{dataplane("a", 1), dataplane("c", 1)}))
}

func TestServices(t *testing.T) {
	svc := func(name string, services ...string) *resource.Object {
		var in []resource.Inbound
		for _, s := range services {
			in = append(in, resource.Inbound{Port: 1, Tags: map[string]string{resource.ServiceTag: s}})
		}
		return resource.New("default", name, &resource.DataplaneSpec{Networking: &resource.Networking{Inbound: in}})
	}
	up := map[string]bool{"b1": true, "w1": true}
	got := insight.Services([]*resource.Object{svc("b1", "backend"), svc("b2", "backend"), svc("w1", "web", "backend")},
		func(k resource.Key) bool { return up[k.Name] })
	require.Equal(t, []insight.ServiceInsight{
		{Name: "backend", Status: insight.ServicePartiallyDegraded, Online: 2, Offline: 1, Total: 3, Dataplanes: []string{"b1", "b2", "w1"}},
		{Name: "web", Status: insight.ServiceOnline, Online: 1, Total: 1, Dataplanes: []string{"w1"}},
	}, got)
}
