// Package testproc starts the programs a test runs (etcd, kube-apiserver,
// the processes of a network-namespace pod) so that they never outlive the
// test binary, writes their output to a log file, and stops them; it tells
// whether a process (such as the owner of what an earlier, killed test
// binary left behind) still runs; and SkipOrFail says what a test does when
// a program it needs is missing.
//
// Every child is started with Pdeathsig=SIGKILL. The kernel sends that
// signal when the *thread* that started the child ends, and the Go runtime
// may end a thread (when a goroutine locked to it returns), so every child
// is started from one goroutine locked to a thread of its own that lives
// until StopSpawner.
package testproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var spawner struct {
	mu   sync.Mutex
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// StartCmd starts cmd (as cmd.Start does) as a child that dies with the
// test binary: from the spawner's thread, with Pdeathsig=SIGKILL. For a
// caller that handles the output and the waiting itself; Start does both.
func StartCmd(cmd *exec.Cmd) error {
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

// StopSpawner ends the starting goroutine (and its thread) once every
// program it started has stopped; a later Start makes a new one. Call it
// when the test binary is done (its children die with the thread).
func StopSpawner() {
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	if spawner.reqs != nil {
		close(spawner.reqs)
		<-spawner.done
		spawner.reqs, spawner.done = nil, nil
	}
}

// Process is a started program whose output goes to a log file.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	exited  chan struct{}
	waitErr error
}

// Start runs cmd (its Stdout and Stderr go to a new file at logPath) as a
// child that dies with the test binary.
func Start(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := StartCmd(cmd); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, LogPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Pid is the process's id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Stop ends the process: SIGTERM, then SIGKILL after grace. It returns
// once the process is gone.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Log returns the process's output so far.
func (p *Process) Log() string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// LogTail returns the last lines of the process's output, for errors.
func (p *Process) LogTail() string {
	lines := bytes.Split(bytes.TrimRight([]byte(p.Log()), "\n"), []byte("\n"))
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// ExitError describes how the process ended, nil while it runs.
func (p *Process) ExitError() error {
	select {
	case <-p.exited:
		err := p.waitErr
		if err == nil {
			err = errors.New("exited")
		}
		return fmt.Errorf("%s stopped (%v); its last output (%s):\n%s", p.Name, err, p.LogPath, p.LogTail())
	default:
		return nil
	}
}

// Alive tells whether the process pid runs: it exists and is not a zombie
// (one that ended, not yet reaped). A process of another user counts as
// running.
func Alive(pid int) bool {
	if pid <= 0 || errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// OwnerGone tells whether the file at path names (in decimal) a process
// that no longer runs: what that process left behind may be removed. A
// missing or unreadable file, or one naming no process id, is not gone.
func OwnerGone(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return err == nil && pid > 0 && !Alive(pid)
}

// SkipOrFail ends a test that cannot run here because a program (or a
// privilege) it needs is missing: it skips t, or fails it when CI=true, where
// everything must be there (make test installs it).
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
