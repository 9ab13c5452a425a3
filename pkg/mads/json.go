package mads

import (
	"slices"
	"unicode/utf8"

	observabilityv1 "github.com/kumametrics/mesh/api/observability/v1"
)

// The HTTP answers are rendered by hand: the shapes are small and fixed, and
// reflection-based encoders dominated generation time. Output is what
// protojson (proto names, empty fields omitted) and encoding/json produce,
// up to whitespace and key order; tests decode it with both.

// appendAssignmentJSON appends a as a JSON Any (with "@type").
func appendAssignmentJSON(b []byte, a *observabilityv1.MonitoringAssignment) []byte {
	b = append(b, `{"@type":`...)
	b = appendString(b, TypeURL)
	b = appendField(b, "mesh", a.GetMesh())
	b = appendField(b, "service", a.GetService())
	if len(a.GetTargets()) > 0 {
		b = append(b, `,"targets":[`...)
		for i, t := range a.GetTargets() {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			n := len(b)
			b = appendField(b, "name", t.GetName())
			b = appendField(b, "scheme", t.GetScheme())
			b = appendField(b, "address", t.GetAddress())
			b = appendField(b, "metrics_path", t.GetMetricsPath())
			if len(t.GetLabels()) > 0 {
				b = append(b, `,"labels":`...)
				b = appendStringMap(b, t.GetLabels())
			}
			if len(b) > n { // drop the comma that opened the first field
				b = append(b[:n], b[n+1:]...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(a.GetLabels()) > 0 {
		b = append(b, `,"labels":`...)
		b = appendStringMap(b, a.GetLabels())
	}
	return append(b, '}')
}

// appendGroupJSON appends one http_sd target group.
func appendGroupJSON(b []byte, g TargetGroup) []byte {
	b = append(b, `{"targets":[`...)
	for i, t := range g.Targets {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t)
	}
	b = append(b, `],"labels":`...)
	b = appendStringMap(b, g.Labels)
	return append(b, '}')
}

// appendField appends `,"key":"value"` unless value is empty (proto3 omits it).
func appendField(b []byte, key, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return appendString(b, value)
}

// appendStringMap appends m with its keys sorted.
func appendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, m[k])
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				switch c {
				case '\n':
					b = append(b, '\\', 'n')
				case '\r':
					b = append(b, '\\', 'r')
				case '\t':
					b = append(b, '\\', 't')
				default:
					b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
				}
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
