package resource

import (
	"bufio"
	"bytes"
	"strings"
)

// Document is one YAML document of a multi-document file.
type Document struct {
	Body []byte
	// Line is the document's first line in the file (1-based).
	Line int
}

// SplitYAML splits a multi-document YAML stream at `---` lines, dropping
// documents that hold only blank lines and comments.
func SplitYAML(data []byte) []Document {
	var docs []Document
	var cur bytes.Buffer
	start, line := 1, 0
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, Document{Body: append([]byte(nil), cur.Bytes()...), Line: start})
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "---" || strings.HasPrefix(text, "--- ") || strings.HasPrefix(text, "---\t") {
			flush()
			start = line + 1
			continue
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func hasContent(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		t := bytes.TrimSpace(l)
		if len(t) > 0 && t[0] != '#' {
			return true
		}
	}
	return false
}
