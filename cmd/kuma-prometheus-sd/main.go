// Command kuma-prometheus-sd writes the control plane's monitoring
// assignments to a Prometheus file_sd file; see package
// github.com/kumametrics/mesh/pkg/promsd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kumametrics/mesh/pkg/promsd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := promsd.Execute(ctx, promsd.CommandOptions{LookupEnv: os.LookupEnv}, os.Args[1:])
	stop()
	os.Exit(code)
}
