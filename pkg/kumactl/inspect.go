package kumactl

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/apiclient"
	"github.com/kumametrics/mesh/pkg/resource"
)

func newInspectCmd(rc *RootContext) *cobra.Command {
	var mesh string
	cmd := newGroupCmd("inspect", "Show the live state of dataplanes and services", "")
	cmd.PersistentFlags().StringVarP(&mesh, "mesh", "m", resource.DefaultMesh, "mesh to inspect")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "dataplanes",
			Short: "Show the dataplanes of a mesh with their connection to the control plane",
			Args:  cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				client, err := rc.client()
				if err != nil {
					return err
				}
				dps, err := client.DataplaneOverviews(c.Context(), mesh)
				if apiclient.IsNotFound(err) {
					return fmt.Errorf("mesh %q not found", mesh)
				}
				if err != nil {
					return err
				}
				if len(dps) == 0 {
					fmt.Fprintln(rc.Stderr, noResources(mesh))
					return nil
				}
				now := rc.Now()
				t := newTable(rc.Stdout, "MESH", "NAME", "TAGS", "STATUS", "LAST CONNECTED AGO", "LAST UPDATED AGO", "TOTAL UPDATES", "TOTAL ERRORS")
				for _, dp := range dps {
					spec := dp.Dataplane
					connected, updated, updates, errs := subscriptionSummary(dp.DataplaneInsight, now)
					t.row(dp.Mesh, dp.Name, tagsOf(&spec), dataplaneStatus(dp), connected, updated, updates, errs)
				}
				return t.flush()
			},
		},
		&cobra.Command{
			Use:   "services",
			Short: "Show the services of a mesh with how many of their dataplanes are online",
			Args:  cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				client, err := rc.client()
				if err != nil {
					return err
				}
				svcs, err := client.ServiceInsights(c.Context(), mesh)
				if apiclient.IsNotFound(err) {
					return fmt.Errorf("mesh %q not found", mesh)
				}
				if err != nil {
					return err
				}
				if len(svcs) == 0 {
					fmt.Fprintln(rc.Stderr, noResources(mesh))
					return nil
				}
				t := newTable(rc.Stdout, "SERVICE", "STATUS", "DATAPLANES")
				for _, s := range svcs {
					t.row(s.Name, s.Status, fmt.Sprintf("%d/%d", s.Dataplanes.Online, s.Dataplanes.Total))
				}
				return t.flush()
			},
		},
	)
	return cmd
}

func dataplaneStatus(dp apiclient.DataplaneOverview) string {
	if dp.Status != "" {
		return dp.Status
	}
	if latest := dp.DataplaneInsight.Latest(); latest != nil && latest.DisconnectTime == nil {
		return apiclient.StatusOnline
	}
	return apiclient.StatusOffline
}

// subscriptionSummary renders when the newest subscription connected, when
// any subscription last got an update, and the responses sent and rejected
// over all subscriptions.
func subscriptionSummary(in apiclient.DataplaneInsight, now time.Time) (connected, updated, updates, errs string) {
	connected, updated = "never", "never"
	if latest := in.Latest(); latest != nil {
		connected = age(now, latest.ConnectTime)
	}
	var lastUpdate time.Time
	var sent, rejected uint64
	for _, s := range in.Subscriptions {
		if s.Status.LastUpdateTime != nil && s.Status.LastUpdateTime.After(lastUpdate) {
			lastUpdate = *s.Status.LastUpdateTime
		}
		sent += s.Status.Total.ResponsesSent
		rejected += s.Status.Total.ResponsesRejected
	}
	if !lastUpdate.IsZero() {
		updated = age(now, lastUpdate)
	}
	return connected, updated, strconv.FormatUint(sent, 10), strconv.FormatUint(rejected, 10)
}
