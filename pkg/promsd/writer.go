package promsd

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/kumametrics/mesh/internal/atomicfile"
)

// FileMode is the mode of the written file: Prometheus may run as another user.
const FileMode fs.FileMode = 0o644

// dirMode is the mode of directories created for the file.
const dirMode fs.FileMode = 0o755

// FileWriter replaces a file atomically, and only when its content changes.
// It is safe for concurrent use.
type FileWriter struct {
	path string

	mu     sync.Mutex
	primed bool   // last holds what is known to be in the file
	last   []byte // content of the file, nil when there is none
}

// NewFileWriter returns a writer of path. Nothing is read or written until
// the first Write.
func NewFileWriter(path string) *FileWriter {
	return &FileWriter{path: path}
}

// Path is the file the writer maintains.
func (w *FileWriter) Path() string { return w.path }

// Write makes data the file's content and reports whether the file was
// written. When data equals what the writer wrote last (or, on the first
// call, what the file already holds), the file is left alone. Otherwise the
// data goes to a temporary file in the same directory (created if missing),
// is synced, made 0644 and renamed over the file, so readers see either the
// old or the new content, never a mix. On error the file is unchanged.
func (w *FileWriter) Write(data []byte) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.primed {
		// An unreadable file (missing, or a directory) counts as different:
		// replacing it either works or reports the real problem.
		if current, err := os.ReadFile(w.path); err == nil {
			w.last = current
		}
		w.primed = true
	}
	if w.last != nil && bytes.Equal(w.last, data) {
		return false, nil
	}
	if err := writeAtomic(w.path, data); err != nil {
		return false, err
	}
	w.last = bytes.Clone(data)
	if w.last == nil {
		w.last = []byte{}
	}
	return true, nil
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("creating directory of %s: %w", path, err)
	}
	return atomicfile.Write(path, data, FileMode)
}
