package testproc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// exitedChild starts a program that ends at once and returns its pid,
// left unreaped (a zombie) until the test's cleanup waits for it.
func exitedChild(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Wait() })
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		return err == nil && i > 0 && i+2 < len(s) && s[i+2] == 'Z'
	}, 30*time.Second, 10*time.Millisecond, "the child never became a zombie")
	return pid
}

// reapedPID is the pid of a program that ended and was reaped.
func reapedPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

func TestAlive(t *testing.T) {
	require.True(t, Alive(os.Getpid()))
	require.True(t, Alive(1), "another's process runs")
	require.False(t, Alive(0))
	require.False(t, Alive(-1))
	require.False(t, Alive(reapedPID(t)))
	require.False(t, Alive(exitedChild(t)), "a zombie has ended")
}

func TestOwnerGone(t *testing.T) {
	dir := t.TempDir()
	file := func(content string) string {
		path := filepath.Join(dir, strconv.Itoa(len(content))+"-"+strconv.FormatInt(time.Now().UnixNano(), 10))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		return path
	}
	require.False(t, OwnerGone(file(strconv.Itoa(os.Getpid()))), "this process runs")
	require.True(t, OwnerGone(file(strconv.Itoa(reapedPID(t))+"\n")), "its owner ended")
	require.True(t, OwnerGone(file(strconv.Itoa(exitedChild(t)))), "its owner is a zombie")
	require.False(t, OwnerGone(filepath.Join(dir, "missing")))
	require.False(t, OwnerGone(file("not a pid")))
	require.False(t, OwnerGone(file("0")))
}
