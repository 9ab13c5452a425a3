package k8stest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// The programs the harness starts must never outlive the test binary, also
// when it panics, times out or is killed: each is started with
// Pdeathsig=SIGKILL. The kernel sends that signal when the *thread* that
// started the child ends, and the Go runtime may end a thread (when a
// goroutine locked to it returns), so every child is started from one
// goroutine locked to a thread of its own that lives as long as the process.
var spawner struct {
	mu   sync.Mutex
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func startProcess(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	done := make(chan error, 1)
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.reqs == nil {
		reqs, exited := make(chan spawnReq), make(chan struct{})
		spawner.reqs, spawner.done = reqs, exited
		go func() {
			defer close(exited)
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			for r := range reqs {
				r.done <- r.cmd.Start()
			}
		}()
	}
	spawner.reqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// stopSpawner ends the starting goroutine (and its thread) once every
// program it started has stopped; a later start makes a new one.
func stopSpawner() {
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.reqs != nil {
		close(spawner.reqs)
		<-spawner.done
		spawner.reqs, spawner.done = nil, nil
	}
}

// process is a started program whose output goes to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

func start(name, logPath, path string, args ...string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := startProcess(cmd); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// logTail returns the last lines of the process's output, for errors.
func (p *process) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// exitError describes how the process ended, if it did.
func (p *process) exitError() error {
	select {
	case <-p.exited:
		err := p.waitErr
		if err == nil {
			err = errors.New("exited")
		}
		return fmt.Errorf("%s stopped (%v); its last output (%s):\n%s", p.name, err, p.logPath, p.logTail())
	default:
		return nil
	}
}
