// Package plugin is the Kuma datasource as Grafana's plugin SDK serves it:
// one Datasource per configured Grafana datasource, answering QueryData
// (mesh-graph, meshes, zones, services), CheckHealth (the control plane and
// Prometheus) and CallResource (the editors' drop-downs). What it computes
// comes from pkg/meshgraph and pkg/frames; here is the I/O.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/grafana/grafana-plugin-sdk-go/backend"
	"github.com/grafana/grafana-plugin-sdk-go/backend/instancemgmt"
	"github.com/grafana/grafana-plugin-sdk-go/backend/resource/httpadapter"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/kumaapi"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/promapi"
	"github.com/kumametrics/mesh/grafana-datasource/pkg/settings"
)

// ID is the plugin's id, as in plugin.json.
const ID = "kumahq-kuma-datasource"

// maxParallel bounds the calls one request makes at once (queries of a
// request, PromQL queries of a graph, meshes of a services query).
const maxParallel = 4

// Datasource is one configured Kuma datasource.
type Datasource struct {
	// settingsErr, when not nil, fails every call: the settings are wrong.
	settingsErr error
	settings    settings.Settings
	cp          *kumaapi.Client
	prom        *promapi.Client
	clients     []*http.Client
	resources   backend.CallResourceHandler
	now         func() time.Time
}

var (
	_ backend.QueryDataHandler      = (*Datasource)(nil)
	_ backend.CheckHealthHandler    = (*Datasource)(nil)
	_ backend.CallResourceHandler   = (*Datasource)(nil)
	_ instancemgmt.InstanceDisposer = (*Datasource)(nil)
)

// NewDatasource is the SDK's instance factory: a Datasource for the
// settings. Wrong settings are no error here: Grafana would not say why;
// CheckHealth ("Save & test") and every query report them instead.
func NewDatasource(ctx context.Context, s backend.DataSourceInstanceSettings) (instancemgmt.Instance, error) {
	appURL, _ := backend.GrafanaConfigFromContext(ctx).AppURL()
	return newDatasource(settings.Input{
		URL: s.URL, JSONData: s.JSONData, SecureJSONData: s.DecryptedSecureJSONData, GrafanaAppURL: appURL,
	}), nil
}

func newDatasource(in settings.Input) *Datasource {
	d := &Datasource{now: time.Now}
	d.settings, d.settingsErr = settings.Parse(in)
	if d.settingsErr != nil {
		return d
	}
	s := d.settings
	cpHTTP := settings.HTTPClient(s.ControlPlaneTLS, s.Timeout)
	promHTTP := settings.HTTPClient(s.PrometheusTLS, s.Timeout)
	d.clients = []*http.Client{cpHTTP, promHTTP}
	d.cp = kumaapi.New(s.ControlPlane, cpHTTP, s.ControlPlaneToken)
	d.prom = promapi.New(s.Prometheus, promHTTP, s.PrometheusAuthorization)
	d.resources = httpadapter.New(d.resourceMux())
	return d
}

// Dispose closes the idle connections when Grafana replaces the instance
// (the settings changed).
func (d *Datasource) Dispose() {
	for _, c := range d.clients {
		c.CloseIdleConnections()
	}
}

// settingsError is the error of every call when the settings are wrong.
func (d *Datasource) settingsError() error {
	return fmt.Errorf("the datasource's settings are wrong: %w", d.settingsErr)
}

// parallel runs f(0) … f(n-1), at most maxParallel at once, and waits.
func parallel(n int, f func(i int)) {
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// CheckHealth tells whether the control plane and Prometheus answer, with
// the control plane's version and Prometheus', or what is wrong with each.
func (d *Datasource) CheckHealth(ctx context.Context, _ *backend.CheckHealthRequest) (*backend.CheckHealthResult, error) {
	if d.settingsErr != nil {
		return &backend.CheckHealthResult{Status: backend.HealthStatusError, Message: d.settingsError().Error()}, nil
	}
	var (
		index   kumaapi.Index
		build   promapi.BuildInfo
		cpErr   error
		promErr error
	)
	parallel(2, func(i int) {
		if i == 0 {
			index, cpErr = d.cp.Index(ctx)
		} else {
			build, promErr = d.prom.BuildInfo(ctx)
		}
	})
	cpMsg := fmt.Sprintf("Control plane %s: version %s (%s).", d.settings.ControlPlane.Redacted(), index.Version, index.Hostname)
	if cpErr != nil {
		cpMsg = fmt.Sprintf("Control plane %s: %v.", d.settings.ControlPlane.Redacted(), cpErr)
	}
	where := d.settings.Prometheus.Redacted()
	if d.settings.PrometheusDatasourceUID != "" {
		where = "datasource " + d.settings.PrometheusDatasourceUID + " through " + where
	}
	promMsg := fmt.Sprintf("Prometheus %s: version %s.", where, build.Version)
	if promErr != nil {
		promMsg = fmt.Sprintf("Prometheus %s: %v.", where, promErr)
	}
	status := backend.HealthStatusOk
	if cpErr != nil || promErr != nil {
		status = backend.HealthStatusError
	}
	return &backend.CheckHealthResult{Status: status, Message: cpMsg + " " + promMsg}, nil
}

// CallResource serves the editors' drop-downs (see resources.go).
func (d *Datasource) CallResource(ctx context.Context, req *backend.CallResourceRequest, sender backend.CallResourceResponseSender) error {
	if d.settingsErr != nil {
		return sender.Send(jsonResponse(http.StatusBadRequest, map[string]string{"message": d.settingsError().Error()}))
	}
	return d.resources.CallResource(ctx, req, sender)
}

// downstream marks an error as the control plane's, Prometheus' or the
// user's (bad query, bad settings), not the plugin's.
func downstream(status backend.Status, err error) backend.DataResponse {
	return backend.DataResponse{Error: err, Status: status, ErrorSource: backend.ErrorSourceDownstream}
}

// statusOf is the status of a query failed by err.
func statusOf(err error) backend.Status {
	var apiErr *kumaapi.Error
	var promErr *promapi.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return backend.StatusTimeout
	case kumaapi.IsNotFound(err):
		return backend.StatusNotFound
	case errors.As(err, &promErr) && promErr.Type == "bad_data":
		return backend.StatusBadRequest
	case errors.As(err, &apiErr) && (apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden):
		return backend.StatusUnauthorized
	}
	return backend.StatusBadGateway
}
