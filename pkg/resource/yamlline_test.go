package resource

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestYAMLErrorLines(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"unclosed flow sequence", "type: Mesh\nname: b\nmetrics:\n  enabledBackend: [x\n", "line 4"},
		{"bad indentation", "type: Mesh\nname: b\nmetrics:\n  enabledBackend: x\n backends: []\n", "line 5"},
		{"error on the first line", "type: [Mesh\n", "line 1"},
		{"duplicate key", "type: Mesh\nname: a\nname: b\n", `"name" already set`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeYAML([]byte(tc.doc), 1)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestYAMLErrorFileLines(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		first    int
		wantLine int
		wantMsg  string
	}{
		{"bad indentation in the first document", "a:\n  b: 1\n c: 2\n", 1, 3, "did not find expected key"},
		{"bad indentation in a later document", "x: 1\na:\n  b: 1\n c: 2\n", 10, 13, "did not find expected key"},
		{"tab", "a:\n\tb: 1\n", 4, 5, "found character that cannot start any token"},
		{"first line of a document", "a: b: c\nd: 1\n", 7, 7, "mapping values are not allowed in this context"},
		{"sequence after a sequence item", "- a\nb: c\n", 3, 4, "did not find expected '-' indicator"},
		{"unterminated quote", "a: 1\nb: 'x\nc: 2\n", 1, 3, "found unexpected end of stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeYAML([]byte(tc.body), tc.first)
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			require.Equal(t, tc.wantLine, se.Line, se.Msg)
			require.Equal(t, tc.wantMsg, se.Reason)
		})
	}
}
