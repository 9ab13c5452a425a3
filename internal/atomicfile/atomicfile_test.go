package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kumametrics/mesh/internal/atomicfile"
)

func TestWriteReplacesWithTheMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.key")
	require.NoError(t, atomicfile.Write(path, []byte("one"), 0o600))
	require.NoError(t, atomicfile.Write(path, []byte("two"), 0o640))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "two", string(b))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left")
}

// TestWriteFailureLeavesTheFile: when the rename cannot happen (a directory
// in the way), the old content stays, the error names the path, and no
// temporary file is left.
func TestWriteFailureLeavesTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config")
	require.NoError(t, os.Mkdir(path, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(path, "keep"), []byte("x"), 0o600))
	err := atomicfile.Write(path, []byte("new"), 0o600)
	require.ErrorContains(t, err, "write "+path+":")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.True(t, entries[0].IsDir())

	err = atomicfile.Write(filepath.Join(dir, "missing", "f"), []byte("new"), 0o600)
	require.ErrorContains(t, err, "write "+filepath.Join(dir, "missing", "f")+":")
}
