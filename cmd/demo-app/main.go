// Command demo-app is the demo's workload: `backend`, `frontend` and
// `traffic` (see package demoapp).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kumametrics/mesh/pkg/demoapp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	root := &cobra.Command{Use: "demo-app", Short: "The demo's workload", SilenceUsage: true, SilenceErrors: true}

	var listen, name string
	var errorRate float64
	var latency time.Duration
	backend := &cobra.Command{
		Use: "backend", Short: "Answer / (failing --error-rate of the requests) and /metrics", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			h, err := demoapp.Backend(demoapp.BackendOptions{Name: name, ErrorRate: errorRate, Latency: latency})
			if err != nil {
				return err
			}
			return demoapp.Serve(cmd.Context(), listen, h, log.With("app", name))
		},
	}
	backend.Flags().StringVar(&listen, "listen", "127.0.0.1:18081", "address to serve on")
	backend.Flags().StringVar(&name, "name", "backend", "name in answers and logs")
	backend.Flags().Float64Var(&errorRate, "error-rate", 0.1, "share of requests answered 500, 0 to 1")
	backend.Flags().DurationVar(&latency, "latency", 5*time.Millisecond, "mean added latency")

	var fListen, backendURL string
	frontend := &cobra.Command{
		Use: "frontend", Short: "Answer / by calling the backend through the proxy's outbound", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demoapp.Serve(cmd.Context(), fListen, demoapp.Frontend(backendURL), log.With("app", "frontend"))
		},
	}
	frontend.Flags().StringVar(&fListen, "listen", "127.0.0.1:18082", "address to serve on")
	frontend.Flags().StringVar(&backendURL, "backend", "http://127.0.0.1:10001/", "the backend, through the proxy's outbound")

	var topts demoapp.TrafficOptions
	traffic := &cobra.Command{
		Use: "traffic", Short: "Send GET requests at a fixed rate, bounded by --requests and --duration", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := demoapp.Traffic(cmd.Context(), topts, log.With("app", "traffic"))
			if err == nil {
				fmt.Printf("sent %d: %d ok, %d failed, %d errors\n", res.Sent, res.OK, res.Failed, res.Errors)
			}
			return err
		},
	}
	traffic.Flags().StringVar(&topts.Target, "target", "http://127.0.0.2:8080/", "URL to call")
	traffic.Flags().Float64Var(&topts.Rate, "rate", 20, "requests per second")
	traffic.Flags().IntVar(&topts.Requests, "requests", 0, "stop after this many requests (0: no limit)")
	traffic.Flags().DurationVar(&topts.Duration, "duration", time.Hour, "stop after this long (0: no limit)")

	var eListen string
	tcpEcho := &cobra.Command{
		Use: "tcp-echo", Short: "Send back what every TCP connection sends (the guide's kuma-tcp-echo)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demoapp.ServeTCPEcho(cmd.Context(), eListen, log.With("app", "tcp-echo"))
		},
	}
	tcpEcho.Flags().StringVar(&eListen, "listen", "127.0.0.1:8000", "address to serve on")

	root.AddCommand(backend, frontend, traffic, tcpEcho)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
