// Command kumactl is the command-line client of the control plane; see
// package github.com/kumametrics/mesh/pkg/kumactl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kumametrics/mesh/pkg/kumactl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := kumactl.Execute(ctx, kumactl.DefaultRootContext(), os.Args[1:])
	stop()
	os.Exit(code)
}
