// Package pgtest runs a real PostgreSQL server (Debian's postgresql 15) for
// tests: initdb into a temporary directory and `postgres` started as an
// unprivileged user (root cannot run the server), killed with the test
// binary (testproc.StartCmd, Pdeathsig).
//
// Addresses: every server listens on the well-known port 5432 of a loopback
// address of its own (internal/loopback.Host), and on a Unix socket in its
// data directory. The address is not one another test of this process gets,
// and postgres itself binds it: nothing is released between choosing and
// binding, so nothing can take it in between; should another program hold
// that address and port already, Start tries the next fresh address. The
// address stays the server's across Stop and Restart.
//
// Shared returns one server per test binary (started on first use; a
// TestMain calls StopShared), on which CreateDB gives each test a database
// of its own; Start gives a test a server of its own (to stop or restart).
// A program that is not a test (a benchmark) starts one with StartServer,
// makes databases with CreateDatabase and removes it with Close.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kumametrics/mesh/internal/loopback"
	"github.com/kumametrics/mesh/internal/testproc"
)

// BinDir is where Debian's postgresql-15 keeps initdb and postgres.
const BinDir = "/usr/lib/postgresql/15/bin"

// Port is the port every test server listens on (on an address of its own).
const Port = 5432

// User and Password are the server's superuser; host connections need the password.
const (
	User     = "postgres"
	Password = "pgtest-password"
)

// startTimeout bounds how long a server may take to accept connections.
const startTimeout = 90 * time.Second

// Server is a running (or stopped) PostgreSQL server.
type Server struct {
	Host    string
	Port    int
	dir     string // owned by the server's user: data/, the socket, the log
	cred    *syscall.Credential
	extra   []string
	mu      sync.Mutex
	proc    *testproc.Process
	dbCount atomic.Int64
}

// Option adds server settings (postgres -c name=value).
type Option func(*Server)

// WithSetting adds `-c name=value` to the server's command line.
func WithSetting(name, value string) Option {
	return func(s *Server) { s.extra = append(s.extra, "-c", name+"="+value) }
}

// Available tells whether Debian's PostgreSQL is installed.
func Available() bool {
	_, err := os.Stat(filepath.Join(BinDir, "postgres"))
	return err == nil
}

// Start starts a server of the test's own, stopped and removed when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	requireInstalled(t)
	s, err := start(opts...)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(s.remove)
	return s
}

// StartServer starts a server for a program that is not a test (a
// benchmark): as Start, but the caller removes it with Close, also when it
// is interrupted (the server itself dies with the calling process, see
// testproc, but its directory stays unless Close runs).
func StartServer(opts ...Option) (*Server, error) {
	if !Available() {
		return nil, fmt.Errorf("pgtest: PostgreSQL is not installed (%s/postgres; apt-get install postgresql-15)", BinDir)
	}
	s, err := start(opts...)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return s, nil
}

// Close stops the server and removes its files (see StartServer).
func (s *Server) Close() { s.remove() }

func requireInstalled(t testing.TB) {
	t.Helper()
	if !Available() {
		testproc.SkipOrFail(t, "PostgreSQL is not installed (%s/postgres; apt-get install postgresql, or make test-deps)", BinDir)
	}
}

var shared struct {
	mu  sync.Mutex
	srv *Server
	err error
}

// Shared returns the test binary's shared server, starting it on first use.
// Tests share it through databases of their own (CreateDB); a test that
// stops or restarts a server uses Start instead. StopShared (from TestMain)
// stops it; it dies with the test binary anyway.
func Shared(t testing.TB) *Server {
	t.Helper()
	requireInstalled(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = start()
	}
	if shared.err != nil {
		t.Fatalf("pgtest: shared server: %v", shared.err)
	}
	return shared.srv
}

// StopShared stops and removes the shared server, if one was started.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.remove()
		shared.srv = nil
	}
}

// Main runs a package's tests (m.Run) and then stops the shared server:
// func TestMain(m *testing.M) { pgtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// credential returns the user the server runs as: the postgres user when
// this process is root, nobody else's otherwise (nil: this process's own).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the unprivileged user postgres (Debian's postgresql package creates it): %w", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, err
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func start(opts ...Option) (*Server, error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, cred: cred, Port: Port}
	for _, o := range opts {
		o(s)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			s.remove()
			return nil, err
		}
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(Password+"\n"), 0o600); err != nil {
		s.remove()
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			s.remove()
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(BinDir, "initdb"), "-D", s.dataDir(), "-U", User, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Env = []string{"PATH=" + BinDir + ":/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	if out, err := initdb.CombinedOutput(); err != nil {
		s.remove()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	_ = os.Remove(pwfile)
	var lastErr error
	for range 5 {
		s.Host = loopback.Host()
		if lastErr = s.Restart(); lastErr == nil {
			return s, nil
		}
		if !strings.Contains(lastErr.Error(), "could not bind") && !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	s.remove()
	return nil, lastErr
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

// Dir is the server's directory (its data directory is data/ in it). Files
// a test puts there for the server must be readable by the server's user
// (see Chown).
func (s *Server) Dir() string { return s.dir }

// Chown gives path to the server's user (when the server runs as another user).
func (s *Server) Chown(path string) error {
	if s.cred == nil {
		return nil
	}
	return os.Chown(path, int(s.cred.Uid), int(s.cred.Gid))
}

// Restart starts the server again after Stop or Kill (Start does the first
// start), on the same address, and waits until it accepts connections.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		select {
		case <-s.proc.Exited():
		default:
			return errors.New("the server is running")
		}
	}
	args := []string{"-D", s.dataDir(), "-k", s.dir, "-p", strconv.Itoa(s.Port),
		"-c", "listen_addresses=" + s.Host,
		// Tests need no durability against power loss; they need speed.
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB",
	}
	args = append(args, s.extra...)
	cmd := exec.Command(filepath.Join(BinDir, "postgres"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	cmd.Env = []string{"LC_ALL=C.UTF-8"}
	proc, err := testproc.Start("postgres", filepath.Join(os.TempDir(), filepath.Base(s.dir)+".log"), cmd)
	if err != nil {
		return err
	}
	s.proc = proc
	return s.waitReady(proc)
}

// waitReady polls until the server accepts a connection, or fails when it exits.
func (s *Server) waitReady(proc *testproc.Process) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-proc.Exited():
			return proc.ExitError()
		case <-ctx.Done():
			proc.Stop(10 * time.Second)
			return fmt.Errorf("postgres on %s:%d did not accept connections within %s: %v; its log:\n%s", s.Host, s.Port, startTimeout, err, proc.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DSN is the URL of database db on the server (over TCP, with the password).
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", User, Password, s.Host, s.Port, db)
}

// CreateDB creates a fresh database for the test (dropped when it ends) and returns its name.
func (s *Server) CreateDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), s.dbCount.Add(1))
	s.exec(t, "CREATE DATABASE "+name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		if err != nil {
			return // the server is gone: so is the database
		}
		defer conn.Close(ctx)
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return name
}

// CreateDatabase creates database name (a plain identifier) on the server.
func (s *Server) CreateDatabase(name string) error {
	return s.run("postgres", "CREATE DATABASE "+name)
}

// Exec runs sql on database db as the superuser.
func (s *Server) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	if err := s.run(db, sql, args...); err != nil {
		t.Fatal(err)
	}
}

// run runs sql on database db as the superuser, on a connection of its own.
func (s *Server) run(db, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN(db))
	if err != nil {
		return fmt.Errorf("pgtest: connect to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

func (s *Server) exec(t testing.TB, sql string) { t.Helper(); s.Exec(t, "postgres", sql) }

// Stop shuts the server down (fast shutdown: open connections are ended) and waits for it.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	select {
	case <-s.proc.Exited():
		return
	default:
	}
	_ = s.proc.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.proc.Exited():
	case <-time.After(60 * time.Second):
		_ = s.proc.Cmd.Process.Kill()
		<-s.proc.Exited()
	}
}

// Log returns the server's output so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return s.proc.Log()
}

// remove stops the server and deletes its files.
func (s *Server) remove() {
	s.Stop()
	s.mu.Lock()
	if s.proc != nil {
		_ = os.Remove(s.proc.LogPath)
	}
	s.mu.Unlock()
	_ = os.RemoveAll(s.dir)
}
