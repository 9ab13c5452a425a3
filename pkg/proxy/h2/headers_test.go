package h2

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// blockFrames encodes fields (name, value pairs) with enc and frames the
// block as HEADERS and, past maxFrame bytes, CONTINUATION frames.
func blockFrames(enc *hpack.Encoder, hbuf *bytes.Buffer, id uint32, maxFrame int, fields ...string) []byte {
	hbuf.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return appendHeaders(nil, id, hbuf.Bytes(), true, maxFrame)
}

// readBlock reads one header block from wire with h.
func readBlock(t *testing.T, h *headerBlock, fr *http2.Framer) error {
	t.Helper()
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	return h.read(fr, f.(*http2.HeadersFrame))
}

func TestHeaderBlocks(t *testing.T) {
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	var wire bytes.Buffer
	fr := http2.NewFramer(nil, &wire)
	var h headerBlock
	h.init(300)
	request := []string{":method", "GET", ":scheme", "http", ":authority", "echo", ":path", "/a", "x-id", "1"}

	// Split over CONTINUATION frames, then again (from the tables).
	for range 2 {
		wire.Write(blockFrames(enc, &hbuf, 1, 8, request...))
		require.NoError(t, readBlock(t, &h, fr))
		require.Equal(t, uint32(1), h.stream)
		require.True(t, h.endStream)
		require.False(t, h.truncated)
		require.Len(t, h.fields, 5)
		require.Equal(t, "/a", h.pseudoValue("path"))
		require.Len(t, h.pseudo(), 4)
		require.Equal(t, hpack.HeaderField{Name: "x-id", Value: "1"}, h.fields[4])
	}

	// Over the list limit: the fields that fit, truncated.
	wire.Write(blockFrames(enc, &hbuf, 3, 1<<14, ":status", "200", "x-big", string(bytes.Repeat([]byte("v"), 250))))
	require.NoError(t, readBlock(t, &h, fr))
	require.True(t, h.truncated)
	require.Len(t, h.fields, 1)

	malformed := map[string][]string{
		"upper-case name":       {":status", "200", "X-Id", "1"},
		"pseudo after regular":  {"x-id", "1", ":status", "200"},
		"unknown pseudo":        {":status", "200", ":colour", "red"},
		"pseudo twice":          {":status", "200", ":status", "204"},
		"request and response":  {":status", "200", ":path", "/"},
		"value with a new line": {":status", "200", "x-id", "1\n2"},
	}
	for name, fields := range malformed {
		wire.Write(blockFrames(enc, &hbuf, 5, 1<<14, fields...))
		err := readBlock(t, &h, fr)
		var se http2.StreamError
		require.True(t, errors.As(err, &se), "%s: %v", name, err)
		require.Equal(t, http2.StreamError{StreamID: 5, Code: http2.ErrCodeProtocol, Cause: se.Cause}, se, name)
	}

	// Far over the limit: the connection ends without decoding it.
	wire.Write(blockFrames(enc, &hbuf, 7, 1<<14, ":status", "200", "x-big", string(bytes.Repeat([]byte("w"), 1500))))
	var ce connError
	require.True(t, errors.As(readBlock(t, &h, fr), &ce))
	require.Equal(t, http2.ErrCodeProtocol, ce.code)

	// Not HPACK: a compression error.
	wire.Write(appendHeaders(nil, 9, []byte{0xff, 0xff, 0xff, 0xff}, true, 1<<14))
	require.True(t, errors.As(readBlock(t, &h, fr), &ce))
	require.Equal(t, http2.ErrCodeCompression, ce.code)
}

// A head whose fields the HPACK tables hold costs no allocation.
func TestHeaderBlockDecodesWithoutAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	var wire bytes.Buffer
	fr := http2.NewFramer(nil, &wire)
	var h headerBlock
	h.init(DefaultMaxHeaderBytes)
	request := []string{":method", "GET", ":scheme", "http", ":authority", "echo", ":path", "/items/7",
		"user-agent", "test", "accept-encoding", "gzip", "x-request-id", "8f3a"}
	wire.Write(blockFrames(enc, &hbuf, 1, 1<<14, request...))
	require.NoError(t, readBlock(t, &h, fr))
	wire.Write(blockFrames(enc, &hbuf, 3, 1<<14, request...)) // every field indexed now
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	hf := f.(*http2.HeadersFrame)
	allocs := testing.AllocsPerRun(100, func() {
		if err := h.read(fr, hf); err != nil || len(h.fields) != 7 {
			t.Fatalf("%d fields, %v", len(h.fields), err)
		}
	})
	require.Zero(t, allocs)
}
