package strictjson

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type inner struct {
	Port  *uint32           `json:"port"`
	Tags  map[string]string `json:"tags"`
	Ratio float64           `json:"ratio"`
	Count int8              `json:"count"`
}

type outer struct {
	Name    string    `json:"name"`
	On      bool      `json:"on"`
	Items   []inner   `json:"items"`
	At      time.Time `json:"at"`
	Skipped string    `json:"-"`
	Any     any       `json:"any"`
}

func TestDecodeReportsEveryErrorWithItsPath(t *testing.T) {
	var v outer
	err := Decode([]byte(`{"name":1,"on":"yes","items":[{"port":-1},{"tags":{"a":2},"count":300,"extra":true}],"at":"noon","Skipped":"x"}`), &v)
	var fe Errors
	require.True(t, errors.As(err, &fe))
	got := map[string]string{}
	for _, e := range fe {
		got[e.Path] = e.Message
	}
	require.Equal(t, map[string]string{
		"name":               "must be a string, got number 1",
		"on":                 `must be a boolean (true or false), got string "yes"`,
		"items[0].port":      "must be an integer in the range 0 to 4294967295, got -1",
		`items[1].tags["a"]`: "must be a string, got number 2",
		"items[1].count":     "must be an integer in the range -128 to 127, got 300",
		"items[1].extra":     "unknown field",
		"at":                 `must be a timestamp in RFC 3339 form: "noon"`,
		"Skipped":            "unknown field",
	}, got)
}

func TestDecodeValues(t *testing.T) {
	var v outer
	require.NoError(t, Decode([]byte(`{"name":"n","on":true,"items":[{"port":80,"tags":{"k":"v"},"ratio":0.5,"count":-3}],"at":"2026-01-02T03:04:05Z","any":{"x":[1]}}`), &v))
	require.Equal(t, "n", v.Name)
	require.True(t, v.On)
	require.Equal(t, uint32(80), *v.Items[0].Port)
	require.Equal(t, map[string]string{"k": "v"}, v.Items[0].Tags)
	require.Equal(t, 0.5, v.Items[0].Ratio)
	require.Equal(t, int8(-3), v.Items[0].Count)
	require.Equal(t, 2026, v.At.Year())
	require.NotNil(t, v.Any)
}

func TestNullLeavesZero(t *testing.T) {
	v := outer{Name: "keep"}
	require.NoError(t, Decode([]byte(`{"name":null,"items":null}`), &v))
	require.Equal(t, "", v.Name)
	require.Nil(t, v.Items)
}

func TestSyntaxErrors(t *testing.T) {
	tests := map[string]string{
		"{\n  \"a\": 1,\n  }": "line 3",
		"{\"a\": ":            "unexpected end of input",
		"{} {}":               "unexpected data after the JSON value",
		"":                    "unexpected end of input",
		"[1, 2,\n\n oops]":    "line 3",
	}
	for in, want := range tests {
		t.Run(want, func(t *testing.T) {
			var v any
			err := Decode([]byte(in), &v)
			var se *SyntaxError
			require.ErrorAs(t, err, &se)
			require.Contains(t, se.Error(), want)
		})
	}
}

func TestDecodeNeedsAPointer(t *testing.T) {
	require.Error(t, Decode([]byte(`{}`), outer{}))
}
