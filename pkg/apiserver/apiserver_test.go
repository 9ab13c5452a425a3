package apiserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/pkg/apiserver"
	"github.com/kumametrics/mesh/pkg/insight"
	"github.com/kumametrics/mesh/pkg/manager"
	"github.com/kumametrics/mesh/pkg/resource"
	"github.com/kumametrics/mesh/pkg/store"
	"github.com/kumametrics/mesh/pkg/store/memory"
	"github.com/kumametrics/mesh/pkg/store/storetest"
)

type env struct {
	srv   *httptest.Server
	store store.Store
	reg   *prometheus.Registry
	// now is the API's clock.
	now atomic.Pointer[time.Time]
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith builds the API with options configure changes.
func newEnvWith(t *testing.T, configure func(*apiserver.Options)) *env {
	t.Helper()
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(context.Background()))
	reg := prometheus.NewRegistry()
	e := &env{store: st, reg: reg}
	now := time.Now()
	e.now.Store(&now)
	opts := apiserver.Options{Reader: st, Writer: mgr, Registerer: reg, Version: "1.2.3", InstanceID: "cp-1",
		Now: func() time.Time { return *e.now.Load() }}
	if configure != nil {
		configure(&opts)
	}
	api, err := apiserver.New(opts)
	require.NoError(t, err)
	e.srv = httptest.NewServer(api)
	t.Cleanup(e.srv.Close)
	return e
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t *testing.T, method, path, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(b, &v), string(b))
	return v
}

type errorBody struct {
	Title   string           `json:"title"`
	Details string           `json:"details"`
	Causes  []resource.Cause `json:"causes"`
}

// snapshot renders everything in the store, to prove a failed write changed nothing.
func (e *env) snapshot(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	for _, d := range resource.Descriptors() {
		res, err := e.store.List(context.Background(), d.Kind, store.ListOptions{})
		require.NoError(t, err)
		for _, o := range res.Items {
			js, err := json.Marshal(o)
			require.NoError(t, err)
			b.Write(js)
			b.WriteString(" v")
			b.WriteString(string(rune('0' + o.Meta.Version)))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

const meshWithMetrics = `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"prometheus-1","backends":[{"name":"prometheus-1","type":"prometheus"}]}}`

const dataplane = `{"type":"Dataplane","mesh":"default","name":"dp-1","networking":{"address":"127.0.0.2","inbound":[{"port":8080,"tags":{"kuma.io/service":"backend"}}]}}`

func TestIndexAndZones(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/", "")
	require.Equal(t, 200, r.status)
	idx := decode[map[string]string](t, r.body)
	require.Equal(t, "Kuma", idx["tagline"])
	require.Equal(t, "1.2.3", idx["version"])
	require.NotEmpty(t, idx["hostname"])

	z := decode[map[string]any](t, e.do(t, "GET", "/zones", "").body)
	require.EqualValues(t, 1, z["total"])
	require.Equal(t, "Standalone", z["items"].([]any)[0].(map[string]any)["name"])
}

func TestFirstStartHasTheDefaultMeshAndItsPermission(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "GET", "/meshes/default/traffic-permissions/allow-all-default", "")
	require.Equal(t, 200, r.status, string(r.body))
	tp := decode[map[string]any](t, r.body)
	require.Equal(t, []any{map[string]any{"match": map[string]any{"kuma.io/service": "*"}}}, tp["sources"])
}

func TestMeshLifecycle(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "PUT", "/meshes/default", meshWithMetrics)
	require.Equal(t, 200, r.status, string(r.body))
	require.Equal(t, `"2"`, r.header.Get("ETag"))

	got := decode[map[string]any](t, e.do(t, "GET", "/meshes/default", "").body)
	conf := got["metrics"].(map[string]any)["backends"].([]any)[0].(map[string]any)["conf"].(map[string]any)
	require.EqualValues(t, 5670, conf["port"])
	require.Equal(t, "/metrics", conf["path"])
	require.Equal(t, map[string]any{"kuma.io/service": "dataplane-metrics"}, conf["tags"])
	require.NotEmpty(t, got["creationTime"])

	r = e.do(t, "PUT", "/meshes/other", `{"type":"Mesh","name":"other"}`)
	require.Equal(t, 201, r.status, string(r.body))
	require.Equal(t, 200, e.do(t, "GET", "/meshes/other/traffic-permissions/allow-all-other", "").status)
	require.Equal(t, 201, e.do(t, "PUT", "/meshes/other/dataplanes/dp-1", strings.ReplaceAll(dataplane, `"default"`, `"other"`)).status)

	require.Equal(t, 200, e.do(t, "DELETE", "/meshes/other", "").status)
	require.Equal(t, 404, e.do(t, "GET", "/meshes/other", "").status)
	require.Equal(t, 404, e.do(t, "GET", "/meshes/other/dataplanes/dp-1", "").status)
	require.Equal(t, 404, e.do(t, "GET", "/meshes/other/traffic-permissions/allow-all-other", "").status)
}

func TestPutTakesMeshAndNameFromThePath(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "PUT", "/meshes/default/dataplanes/dp-9", `{"type":"Dataplane","networking":{"address":"127.0.0.2","inbound":[{"port":1,"tags":{"kuma.io/service":"a"}}]}}`)
	require.Equal(t, 201, r.status, string(r.body))
	got := decode[map[string]any](t, r.body)
	require.Equal(t, "default", got["mesh"])
	require.Equal(t, "dp-9", got["name"])
}

func TestListPaging(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"c", "a", "e", "b", "d"} {
		body := strings.Replace(dataplane, `"dp-1"`, `"`+n+`"`, 1)
		require.Equal(t, 201, e.do(t, "PUT", "/meshes/default/dataplanes/"+n, body).status)
	}
	type list struct {
		Total int              `json:"total"`
		Items []map[string]any `json:"items"`
		Next  *string          `json:"next"`
	}
	var names []string
	path := "/meshes/default/dataplanes?size=2"
	for pages := 0; path != ""; pages++ {
		require.Less(t, pages, 5)
		l := decode[list](t, e.do(t, "GET", path, "").body)
		require.Equal(t, 5, l.Total)
		for _, it := range l.Items {
			names = append(names, it["name"].(string))
		}
		path = ""
		if l.Next != nil {
			path = strings.TrimPrefix(*l.Next, e.srv.URL)
		}
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, names)

	all := decode[list](t, e.do(t, "GET", "/dataplanes", "").body)
	require.Equal(t, 5, all.Total)
	require.Nil(t, all.Next)

	require.Equal(t, 400, e.do(t, "GET", "/dataplanes?size=0", "").status)
	require.Equal(t, 400, e.do(t, "GET", "/dataplanes?offset=-1", "").status)
	require.Equal(t, 404, e.do(t, "GET", "/meshes/nope/dataplanes", "").status)
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	mesh := func(conf string) string {
		return `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"p","backends":[{"name":"p","type":"prometheus","conf":` + conf + `}]}}`
	}
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		header []string
		status int
		field  string
		msg    string
	}{
		{name: "unknown backend type", path: "/meshes/default", status: 400,
			body:  `{"type":"Mesh","name":"default","metrics":{"backends":[{"name":"p","type":"statsd"}]}}`,
			field: "metrics.backends[0].type", msg: "available types: prometheus"},
		{name: "duplicate backend names", path: "/meshes/default", status: 400,
			body:  `{"type":"Mesh","name":"default","metrics":{"backends":[{"name":"p","type":"prometheus"},{"name":"p","type":"prometheus"}]}}`,
			field: "metrics.backends[1].name", msg: "already used"},
		{name: "enabledBackend naming no backend", path: "/meshes/default", status: 400,
			body:  `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"x","backends":[{"name":"p","type":"prometheus"}]}}`,
			field: "metrics.enabledBackend", msg: "names no backend"},
		{name: "port 0", path: "/meshes/default", status: 400, body: mesh(`{"port":0}`),
			field: "metrics.backends[0].conf.port", msg: "must be in the range 1-65535"},
		{name: "port 70000", path: "/meshes/default", status: 400, body: mesh(`{"port":70000}`),
			field: "metrics.backends[0].conf.port", msg: "must be in the range 1-65535"},
		{name: "invalid filterRegex", path: "/meshes/default", status: 400, body: mesh(`{"envoy":{"filterRegex":"a(b"}}`),
			field: "metrics.backends[0].conf.envoy.filterRegex", msg: "not a valid regular expression"},
		{name: "unknown field", path: "/meshes/default", status: 400, body: mesh(`{"prot":1}`),
			field: "metrics.backends[0].conf.prot", msg: "unknown field"},
		{name: "JSON syntax error", path: "/meshes/default", status: 400, body: "{\n\"type\": \"Mesh\",\n\"name\": }",
			msg: "line 3"},
		{name: "dataplane in a missing mesh", path: "/meshes/nope/dataplanes/dp-1", status: 400,
			body: strings.ReplaceAll(dataplane, `"default"`, `"nope"`), field: "mesh", msg: `mesh "nope" does not exist`},
		{name: "name differs from the path", path: "/meshes/default/dataplanes/dp-2", status: 400, body: dataplane,
			field: "name", msg: "does not match"},
		{name: "type differs from the path", path: "/meshes/default/traffic-permissions/dp-1", status: 400, body: dataplane,
			field: "type", msg: "must be TrafficPermission"},
		{name: "stale version", path: "/meshes/default/dataplanes/dp-1", status: 409, body: strings.Replace(dataplane, "8080", "9090", 1),
			header: []string{"If-Match", `"7"`}, msg: "stale version"},
		{name: "stale version on delete", method: "DELETE", path: "/meshes/default/dataplanes/dp-1", status: 409,
			header: []string{"If-Match", `"7"`}, msg: "stale version"},
		{name: "bad If-Match", path: "/meshes/default/dataplanes/dp-1", status: 400, body: dataplane,
			header: []string{"If-Match", "yesterday"}, msg: "If-Match"},
		{name: "delete of a missing resource", method: "DELETE", path: "/meshes/default/dataplanes/nope", status: 404, msg: "not found"},
		{name: "unknown path", method: "GET", path: "/meshes/default/gateways", status: 404, msg: "no endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			require.Equal(t, 200, e.do(t, "PUT", "/meshes/default", meshWithMetrics).status)
			require.Equal(t, 201, e.do(t, "PUT", "/meshes/default/dataplanes/dp-1", dataplane).status)
			before := e.snapshot(t)
			method := tc.method
			if method == "" {
				method = "PUT"
			}
			r := e.do(t, method, tc.path, tc.body, tc.header...)
			require.Equal(t, tc.status, r.status, string(r.body))
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			eb := decode[errorBody](t, r.body)
			require.NotEmpty(t, eb.Title)
			text := eb.Details
			for _, c := range eb.Causes {
				text += " | " + c.Field + ": " + c.Message
			}
			if tc.field != "" {
				require.Contains(t, text, tc.field+": ")
			}
			require.Contains(t, text, tc.msg)
			require.Equal(t, before, e.snapshot(t), "a refused write must not change the store")
		})
	}
}

func TestEveryFailingFieldIsListed(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "PUT", "/meshes/default", `{"type":"Mesh","name":"default","metrics":{"enabledBackend":"x","backends":[{"name":"p","type":"statsd","conf":{"port":0}}]}}`)
	require.Equal(t, 400, r.status)
	eb := decode[errorBody](t, r.body)
	var fields []string
	for _, c := range eb.Causes {
		fields = append(fields, c.Field)
	}
	require.ElementsMatch(t, []string{"metrics.backends[0].type", "metrics.backends[0].conf.port", "metrics.enabledBackend"}, fields)
}

func TestConditionalWrites(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, "PUT", "/meshes/default/dataplanes/dp-1", dataplane)
	require.Equal(t, `"1"`, r.header.Get("ETag"))
	r = e.do(t, "PUT", "/meshes/default/dataplanes/dp-1", strings.Replace(dataplane, "8080", "9090", 1), "If-Match", `"1"`)
	require.Equal(t, 200, r.status, string(r.body))
	require.Equal(t, `"2"`, r.header.Get("ETag"))
	require.Equal(t, 409, e.do(t, "PUT", "/meshes/default/dataplanes/dp-1", dataplane, "If-Match", `"1"`).status)
	require.Equal(t, 200, e.do(t, "DELETE", "/meshes/default/dataplanes/dp-1", "", "If-Match", `"2"`).status)
}

func TestInsights(t *testing.T) {
	e := newEnv(t)
	for i, svc := range []string{"backend", "backend", "frontend"} {
		name := []string{"b1", "b2", "f1"}[i]
		body := strings.NewReplacer(`"dp-1"`, `"`+name+`"`, `"backend"`, `"`+svc+`"`).Replace(dataplane)
		require.Equal(t, 201, e.do(t, "PUT", "/meshes/default/dataplanes/"+name, body).status)
	}
	type overview struct {
		Name             string                        `json:"name"`
		Status           string                        `json:"status"`
		Dataplane        resource.DataplaneSpec        `json:"dataplane"`
		DataplaneInsight resource.DataplaneInsightSpec `json:"dataplaneInsight"`
	}
	type list[T any] struct {
		Total int `json:"total"`
		Items []T `json:"items"`
	}
	ov := decode[list[overview]](t, e.do(t, "GET", "/meshes/default/dataplanes+insights", "").body)
	require.Equal(t, 3, ov.Total)
	for _, o := range ov.Items {
		require.Equal(t, "Offline", o.Status, "no proxy has connected")
		require.Equal(t, "127.0.0.2", o.Dataplane.Networking.Address)
	}

	// b1's proxy connects to control plane cp-1, whose heartbeat is fresh.
	now := *e.now.Load()
	storetest.MustUpsert(t, e.store, resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{StartTime: now, HeartbeatTime: now}))
	storetest.MustUpsert(t, e.store, resource.New("default", "b1", &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{
		{ID: "s1", ControlPlaneInstanceID: "cp-1", ConnectTime: now.Add(-time.Minute).UTC()},
	}}))
	ov = decode[list[overview]](t, e.do(t, "GET", "/meshes/default/dataplanes+insights", "").body)
	require.Equal(t, "Online", ov.Items[0].Status)
	require.Len(t, ov.Items[0].DataplaneInsight.Subscriptions, 1)
	one := decode[overview](t, e.do(t, "GET", "/meshes/default/dataplanes+insights/b1", "").body)
	require.Equal(t, "Online", one.Status)

	type svc struct {
		Name       string         `json:"name"`
		Status     string         `json:"status"`
		Dataplanes map[string]int `json:"dataplanes"`
	}
	si := decode[list[svc]](t, e.do(t, "GET", "/meshes/default/service-insights", "").body)
	require.Equal(t, []svc{
		{Name: "backend", Status: "partially_degraded", Dataplanes: map[string]int{"online": 1, "offline": 1, "total": 2}},
		{Name: "frontend", Status: "offline", Dataplanes: map[string]int{"online": 0, "offline": 1, "total": 1}},
	}, si.Items)

	// cp-1 stops renewing its heartbeat (it was killed): once the heartbeat
	// is older than the timeout its proxies read offline, though nobody
	// wrote a disconnect.
	later := now.Add(insight.HeartbeatTimeout - time.Second)
	e.now.Store(&later)
	require.Equal(t, "Online", decode[overview](t, e.do(t, "GET", "/meshes/default/dataplanes+insights/b1", "").body).Status)
	later = now.Add(insight.HeartbeatTimeout)
	e.now.Store(&later)
	require.Equal(t, "Offline", decode[overview](t, e.do(t, "GET", "/meshes/default/dataplanes+insights/b1", "").body).Status)
	si = decode[list[svc]](t, e.do(t, "GET", "/meshes/default/service-insights", "").body)
	require.Equal(t, map[string]int{"online": 0, "offline": 2, "total": 2}, si.Items[0].Dataplanes)
}

func TestInsightKindsAreReadOnly(t *testing.T) {
	e := newEnv(t)
	require.Equal(t, 201, e.do(t, "PUT", "/meshes/default/dataplanes/dp-1", dataplane).status)
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	storetest.MustUpsert(t, e.store, resource.New("default", "dp-1", &resource.DataplaneInsightSpec{Subscriptions: []resource.Subscription{
		{ID: "s1", ControlPlaneInstanceID: "cp-1", ConnectTime: at, Status: resource.SubStatus{Total: resource.Totals{ResponsesSent: 3, ResponsesAcknowledged: 2}}},
	}}))
	storetest.MustUpsert(t, e.store, resource.New("", "cp-1", &resource.ControlPlaneInstanceSpec{StartTime: at, HeartbeatTime: at}))

	r := e.do(t, "GET", "/meshes/default/dataplane-insights/dp-1", "")
	require.Equal(t, 200, r.status, string(r.body))
	var got map[string]any
	require.NoError(t, json.Unmarshal(r.body, &got))
	require.Equal(t, "DataplaneInsight", got["type"])
	require.Equal(t, "default", got["mesh"])
	require.Equal(t, "dp-1", got["name"])
	require.Equal(t, []any{map[string]any{
		"id": "s1", "controlPlaneInstanceId": "cp-1", "connectTime": "2026-12-06T10:00:00Z",
		"status": map[string]any{"total": map[string]any{"responsesSent": 3.0, "responsesAcknowledged": 2.0, "responsesRejected": 0.0}},
	}}, got["subscriptions"])
	require.Equal(t, 1, decode[struct {
		Total int `json:"total"`
	}](t, e.do(t, "GET", "/meshes/default/dataplane-insights", "").body).Total)
	require.Equal(t, 200, e.do(t, "GET", "/control-plane-instances/cp-1", "").status)

	// Nobody writes them through the API, admins included.
	for _, req := range [][2]string{
		{"PUT", "/meshes/default/dataplane-insights/dp-1"}, {"DELETE", "/meshes/default/dataplane-insights/dp-1"},
		{"PUT", "/meshes/default/dataplane-insights/new"}, {"PUT", "/control-plane-instances/cp-1"}, {"DELETE", "/control-plane-instances/cp-1"},
	} {
		r := e.do(t, req[0], req[1], `{"type":"DataplaneInsight","mesh":"default","name":"new","subscriptions":[]}`)
		require.Equal(t, 405, r.status, "%s %s", req[0], req[1])
		require.Contains(t, decode[errorBody](t, r.body).Details, "written by the control plane only")
	}
	stored, err := e.store.Get(t.Context(), resource.KindDataplaneInsight, resource.Key{Mesh: "default", Name: "dp-1"})
	require.NoError(t, err)
	require.Equal(t, int64(1), stored.Meta.Version, "untouched")

	// Deleting the Dataplane deletes its insight.
	require.Equal(t, 200, e.do(t, "DELETE", "/meshes/default/dataplanes/dp-1", "").status)
	require.Equal(t, 404, e.do(t, "GET", "/meshes/default/dataplane-insights/dp-1", "").status)
}

func TestRequestDurationMetric(t *testing.T) {
	e := newEnv(t)
	e.do(t, "GET", "/meshes/default", "")
	e.do(t, "GET", "/meshes/nope", "")
	n, err := testutil.GatherAndCount(e.reg, "api_server_http_request_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 2, n, "one series per handler, method and code")
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	codes := map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			codes[l["code"]] = l["handler"] + " " + l["method"]
		}
	}
	require.Equal(t, map[string]string{"200": "/meshes/{name} GET", "404": "/meshes/{name} GET"}, codes)
}

// TestKubernetesKindsAreWrittenWithKubectl: in Kubernetes mode the API
// reads the custom resource kinds and refuses to write them, saying to use
// kubectl; other kinds (secrets) are written as before.
func TestKubernetesKindsAreWrittenWithKubectl(t *testing.T) {
	st := memory.New()
	mgr := manager.New(st, nil)
	require.NoError(t, mgr.EnsureDefaultMesh(t.Context()))
	api, err := apiserver.New(apiserver.Options{Reader: st, Writer: mgr, Version: "1.2.3", InstanceID: "cp-1",
		KubernetesKinds: []resource.Kind{resource.KindMesh, resource.KindDataplane, resource.KindTrafficPermission}})
	require.NoError(t, err)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	e := &env{srv: srv, store: st}
	for _, req := range [][2]string{
		{"PUT", "/meshes/default"}, {"DELETE", "/meshes/default"},
		{"PUT", "/meshes/default/dataplanes/dp-1"}, {"DELETE", "/meshes/default/traffic-permissions/allow-all-default"},
	} {
		r := e.do(t, req[0], req[1], `{"type":"Mesh","name":"default"}`)
		require.Equal(t, http.StatusMethodNotAllowed, r.status, "%s %s", req[0], req[1])
		require.Contains(t, string(r.body), "you should always be using 'kubectl apply' instead")
		require.Equal(t, "GET", r.header.Get("Allow"))
	}
	require.Equal(t, http.StatusOK, e.do(t, "GET", "/meshes/default", "").status)
	require.Equal(t, http.StatusOK, e.do(t, "GET", "/meshes/default/traffic-permissions/allow-all-default", "").status)
	r := e.do(t, "PUT", "/meshes/default/secrets/s1", `{"type":"Secret","name":"s1","mesh":"default","data":"YWJj"}`)
	require.Equal(t, http.StatusCreated, r.status, string(r.body))
}
