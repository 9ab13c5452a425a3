package k8stest

import (
	"os/exec"

	"github.com/kumametrics/mesh/internal/testproc"
)

// start runs a program with its output in logPath; it never outlives the
// test binary.
func start(name, logPath, path string, args ...string) (*testproc.Process, error) {
	return testproc.Start(name, logPath, exec.Command(path, args...))
}
