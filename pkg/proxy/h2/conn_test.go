package h2

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames parses what a connection queued.
func frames(t *testing.T, out []byte) []http2.Frame {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(out))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var fs []http2.Frame
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			require.ErrorContains(t, err, "EOF")
			return fs
		}
		if d, ok := f.(*http2.DataFrame); ok { // the framer reuses nothing here, but copy anyway
			fs = append(fs, &dataCopy{id: d.StreamID, data: string(d.Data()), end: d.StreamEnded()})
			continue
		}
		fs = append(fs, f)
	}
}

type dataCopy struct {
	http2.Frame
	id   uint32
	data string
	end  bool
}

func newTestConn() *conn {
	c := new(conn)
	c.init(nil, defaultWindow, 0)
	return c
}

// DATA leaves as far as the stream's window, the connection's window and
// the output's room allow, in frames of the peer's size; the rest waits
// and leaves, in order and with its end, as credit comes.
func TestDataRespectsEveryWindow(t *testing.T) {
	c := newTestConn()
	c.maxFrame = 1000
	c.sendWindow = 2500
	h := &half{c: c, id: 1, window: 100000}
	c.streams[1] = h
	body := strings.Repeat("a", 4000)

	n := c.sendDataLocked(h, []byte(body), true)
	require.Equal(t, 2500, n, "the connection's window")
	fs := frames(t, c.out)
	require.Len(t, fs, 3, "frames of the peer's maximum size")
	require.Equal(t, 1000, len(fs[0].(*dataCopy).data))
	require.False(t, fs[2].(*dataCopy).end)
	require.Equal(t, []*half{h}, c.blocked, "waits for the connection's window")
	c.out = c.out[:0]

	// Trailers queue behind the waiting DATA.
	c.sendHeadersLocked(h, []hpack.HeaderField{{Name: "grpc-status", Value: "0"}}, true)
	require.Empty(t, c.out)

	c.sendWindow += 1000
	ms := c.resumeBlockedLocked(nil)
	require.Equal(t, []moved{{h: h, n: 1000}}, ms)
	require.Equal(t, []*half{h}, c.blocked, "still waiting")
	c.out = c.out[:0]

	c.sendWindow += 1 << 20
	ms = c.resumeBlockedLocked(nil)
	require.Equal(t, []moved{{h: h, n: 500, sent: true}}, ms)
	fs = frames(t, c.out)
	require.Len(t, fs, 2)
	require.Equal(t, 500, len(fs[0].(*dataCopy).data))
	require.False(t, fs[0].(*dataCopy).end, "the trailers end the stream")
	tr := fs[1].(*http2.MetaHeadersFrame)
	require.True(t, tr.StreamEnded())
	require.Equal(t, "0", tr.Fields[0].Value)
	require.Empty(t, c.blocked)
}

// A stream's own window holds its DATA without blocking the others; its
// WINDOW_UPDATE resumes it.
func TestStreamWindowHoldsOnlyItsStream(t *testing.T) {
	c := newTestConn()
	c.sendWindow = 1 << 20
	slow := &half{c: c, id: 1, window: 10}
	fast := &half{c: c, id: 3, window: 1 << 16}
	require.Equal(t, 10, c.sendDataLocked(slow, []byte("0123456789abcdef"), true))
	require.Equal(t, 16, c.sendDataLocked(fast, []byte("0123456789abcdef"), true))
	require.Empty(t, c.blocked, "not waiting on the connection")
	require.True(t, fast.sent)
	require.False(t, slow.sent)
	c.out = c.out[:0]
	slow.window += 100
	ms := c.resumeOneLocked(nil, slow)
	require.Equal(t, []moved{{h: slow, n: 6, sent: true}}, ms)
	fs := frames(t, c.out)
	require.Len(t, fs, 1)
	require.Equal(t, "abcdef", fs[0].(*dataCopy).data)
	require.True(t, fs[0].(*dataCopy).end)
}

// Output that a peer does not read bounds the DATA queued for it, whatever
// window it granted: the streams wait, and go on once the writer took the
// output.
func TestOutputRoomBoundsData(t *testing.T) {
	c := newTestConn()
	c.sendWindow = maxWindow
	h := &half{c: c, id: 1, window: maxWindow}
	chunk := make([]byte, 16384)
	total := 0
	for range 100 {
		total += c.sendDataLocked(h, chunk, false)
	}
	require.LessOrEqual(t, len(c.out), outputHigh+frameHeaderLen*(outputHigh/defaultMaxFrame+1))
	require.Less(t, total, 100*len(chunk))
	require.Equal(t, []*half{h}, c.blocked)
	held := len(h.pending)
	c.out = c.out[:0] // the writer took it
	ms := c.resumeBlockedLocked(nil)
	require.Greater(t, held, outputHigh)
	require.LessOrEqual(t, ms[0].n, outputHigh, "the output's room again, frame headers included")
	require.Greater(t, ms[0].n, outputHigh-1024)
}

// SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window by the
// difference (RFC 9113 §6.9.2), below zero too.
func TestInitialWindowChangeMovesOpenStreams(t *testing.T) {
	c := newTestConn()
	h := &half{c: c, id: 1, window: defaultWindow - 1000}
	c.streams[1] = h
	var buf bytes.Buffer
	fw := http2.NewFramer(&buf, nil)
	require.NoError(t, fw.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
	f, err := http2.NewFramer(nil, &buf).ReadFrame()
	require.NoError(t, err)
	require.NoError(t, c.applySettingsLocked(f.(*http2.SettingsFrame)))
	require.EqualValues(t, -1000, h.window)
	require.NoError(t, fw.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow}))
	f, err = http2.NewFramer(nil, &buf).ReadFrame()
	require.NoError(t, err)
	require.NoError(t, c.applySettingsLocked(f.(*http2.SettingsFrame)))
	require.EqualValues(t, maxWindow-1000, h.window)
}
