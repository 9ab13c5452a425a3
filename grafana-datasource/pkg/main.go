// Command gpx_kuma is the backend of the Grafana datasource
// kumahq-kuma-datasource. Grafana starts it (as gpx_kuma_<os>_<arch> of the
// plugin's folder) and talks to it over gRPC with the plugin SDK's
// handshake; it is not meant to be run by hand.
package main

import (
	"os"

	"github.com/grafana/grafana-plugin-sdk-go/backend/datasource"
	"github.com/grafana/grafana-plugin-sdk-go/backend/log"

	"github.com/kumametrics/mesh/grafana-datasource/pkg/plugin"
)

func main() {
	if err := datasource.Manage(plugin.ID, plugin.NewDatasource, datasource.ManageOpts{}); err != nil {
		log.DefaultLogger.Error("serving the plugin failed", "error", err)
		os.Exit(1)
	}
}
