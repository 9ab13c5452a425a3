package h2

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// The frames the engine writes are appended straight to a connection's
// output buffer (RFC 9113 §4.1 layout): one copy of a DATA payload, from
// the reader's buffer into the output, and no framer state to lock.

func appendFrameHeader(b []byte, length int, t http2.FrameType, flags http2.Flags, stream uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(flags),
		byte(stream>>24)&0x7f, byte(stream>>16), byte(stream>>8), byte(stream))
}

func appendData(b []byte, stream uint32, data []byte, end bool) []byte {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	b = appendFrameHeader(b, len(data), http2.FrameData, flags, stream)
	return append(b, data...)
}

// appendHeaders writes an encoded header block as HEADERS and, past
// maxFrame, CONTINUATION frames.
func appendHeaders(b []byte, stream uint32, block []byte, end bool, maxFrame int) []byte {
	flags := http2.Flags(0)
	if end {
		flags |= http2.FlagHeadersEndStream
	}
	first := true
	for {
		chunk := block
		if len(chunk) > maxFrame {
			chunk = chunk[:maxFrame]
		}
		block = block[len(chunk):]
		f := flags
		if len(block) == 0 {
			f |= http2.FlagHeadersEndHeaders
		}
		t := http2.FrameHeaders
		if !first {
			t = http2.FrameContinuation
			f &^= http2.FlagHeadersEndStream
		}
		b = appendFrameHeader(b, len(chunk), t, f, stream)
		b = append(b, chunk...)
		first = false
		if len(block) == 0 {
			return b
		}
	}
}

func appendWindowUpdate(b []byte, stream uint32, n uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, stream)
	return binary.BigEndian.AppendUint32(b, n&0x7fffffff)
}

func appendRSTStream(b []byte, stream uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, stream)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendPingAck(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0)
	return append(b, data[:]...)
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}
