package promsd

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFileWriter(t *testing.T) {
	t.Parallel()
	a, b := []byte("[\"a\"]\n"), []byte("[\"b\"]\n")

	t.Run("creates missing directories, writes 0644, leaves no temporary file", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		path := filepath.Join(root, "var", "run", "sd", "kuma.file_sd.json")
		w := NewFileWriter(path)
		require.Equal(t, path, w.Path())
		changed, err := w.Write(a)
		require.NoError(t, err)
		require.True(t, changed)
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, a, got)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, FileMode, fi.Mode().Perm())
		require.Equal(t, []string{"kuma.file_sd.json"}, dirEntries(t, filepath.Dir(path)))
	})

	t.Run("unchanged content is not rewritten, changed content replaces the file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sd.json")
		w := NewFileWriter(path)
		_, err := w.Write(a)
		require.NoError(t, err)
		before, err := os.Stat(path)
		require.NoError(t, err)

		changed, err := w.Write(append([]byte(nil), a...))
		require.NoError(t, err)
		require.False(t, changed)
		after, err := os.Stat(path)
		require.NoError(t, err)
		require.True(t, os.SameFile(before, after), "file was replaced")
		require.Equal(t, before.ModTime(), after.ModTime())

		changed, err = w.Write(b)
		require.NoError(t, err)
		require.True(t, changed)
		replaced, err := os.Stat(path)
		require.NoError(t, err)
		require.False(t, os.SameFile(before, replaced), "file was written in place, not renamed over")
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, b, got)
		require.Equal(t, []string{"sd.json"}, dirEntries(t, filepath.Dir(path)))
	})

	t.Run("content already on disk at start is not rewritten", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sd.json")
		require.NoError(t, os.WriteFile(path, a, 0o600))
		before, err := os.Stat(path)
		require.NoError(t, err)

		changed, err := NewFileWriter(path).Write(a)
		require.NoError(t, err)
		require.False(t, changed)
		after, err := os.Stat(path)
		require.NoError(t, err)
		require.True(t, os.SameFile(before, after))
		require.Equal(t, before.ModTime(), after.ModTime())
	})

	t.Run("different content on disk at start is replaced", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sd.json")
		require.NoError(t, os.WriteFile(path, b, 0o600))
		changed, err := NewFileWriter(path).Write(a)
		require.NoError(t, err)
		require.True(t, changed)
		got, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, a, got)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, FileMode, fi.Mode().Perm())
	})

	t.Run("readers see a whole old or a whole new file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "sd.json")
		big := func(c byte) []byte {
			data := make([]byte, 256<<10)
			for i := range data {
				data[i] = c
			}
			return data
		}
		x, y := big('x'), big('y')
		w := NewFileWriter(path)
		_, err := w.Write(x)
		require.NoError(t, err)

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var torn []string
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := os.ReadFile(path)
				if err != nil {
					torn = append(torn, err.Error())
					continue
				}
				if string(got) != string(x) && string(got) != string(y) {
					torn = append(torn, "partial content")
				}
			}
		}()
		for i := range 50 {
			next := x
			if i%2 == 0 {
				next = y
			}
			changed, err := w.Write(next)
			require.NoError(t, err)
			require.True(t, changed)
		}
		close(stop)
		wg.Wait()
		require.Empty(t, torn)
	})

	t.Run("errors leave the old file and no temporary file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		// The output path is a non-empty directory: rename fails.
		path := filepath.Join(dir, "sd.json")
		require.NoError(t, os.Mkdir(path, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(path, "keep"), a, 0o600))
		changed, err := NewFileWriter(path).Write(a)
		require.Error(t, err)
		require.False(t, changed)
		require.Contains(t, err.Error(), path)
		require.Equal(t, []string{"sd.json"}, dirEntries(t, dir))

		// The parent is a regular file: the directory cannot be created.
		parent := filepath.Join(dir, "file")
		require.NoError(t, os.WriteFile(parent, a, 0o600))
		_, err = NewFileWriter(filepath.Join(parent, "sd.json")).Write(a)
		require.ErrorContains(t, err, "creating directory")
	})
}
