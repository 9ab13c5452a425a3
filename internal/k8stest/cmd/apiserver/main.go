// Command apiserver runs the Kubernetes test harness's API server
// (internal/k8stest: kube-apiserver on Debian's etcd, kuma.io's CRDs
// installed) for tests that cannot import the harness: test/interop is a
// module of its own. It prints one JSON line, {"kubeconfig", "kubectl",
// "url"}, and serves until its standard input closes (so it ends with the
// process that started it, however that one ends) or it receives SIGTERM or
// SIGINT; then it stops both programs and removes their files. When the
// binaries are missing it exits with status 3 and says so on stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kumametrics/mesh/internal/k8stest"
)

// exitNoBinaries is the exit status when kube-apiserver, etcd or kubectl is missing.
const exitNoBinaries = 3

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	env, err := k8stest.Start(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		if errors.Is(err, k8stest.ErrNoBinaries) {
			return exitNoBinaries
		}
		return 1
	}
	defer env.Stop()
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{
		"kubeconfig": env.KubeconfigPath, "kubectl": env.KubectlPath, "url": env.URL,
	}); err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		return 1
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-ctx.Done():
	case <-stdinClosed:
	}
	return 0
}
