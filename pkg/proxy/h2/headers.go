package h2

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// headerBlock reads a connection's header blocks (HEADERS and the
// CONTINUATION frames that complete it) and holds the last one decoded.
// Its fields live in a slice reused from block to block, so a head costs
// no allocation but the strings of literal fields the HPACK tables did not
// hold yet: whoever keeps fields past the next block copies the slice
// (the strings are immutable).
//
// It checks what the framer's own header reading (ReadMetaHeaders) checks:
// field names and values, pseudo-header fields first, known and not
// repeated, not of a request and a response at once; the header list
// size limit (over it the block is truncated: the fields that fit, and
// truncated set); a block far larger than the limit, or going on after an
// invalid field, ends the connection.
type headerBlock struct {
	dec *hpack.Decoder
	max uint32 // the header list size limit

	stream      uint32
	endStream   bool
	hasPriority bool
	priority    http2.PriorityParam
	fields      []hpack.HeaderField
	truncated   bool

	// While decoding: the sizes left (trailer names counted apart, as
	// the framer does), and the first invalid field's error.
	remain, trailersRemain uint32
	sawRegular             bool
	invalid                error
}

// init readies h for a connection whose header lists may be max bytes.
func (h *headerBlock) init(max uint32) {
	h.max = max
	h.dec = hpack.NewDecoder(defaultTableSize, h.emit)
	h.dec.SetMaxStringLength(int(max))
}

var errPseudoAfterRegular = errors.New("pseudo-header field after a regular one")

func (h *headerBlock) emit(f hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(f.Value) {
		h.invalid = fmt.Errorf("invalid value of header field %q", f.Name) // the value may be a secret
	}
	if strings.HasPrefix(f.Name, ":") {
		if h.sawRegular {
			h.invalid = errPseudoAfterRegular
		}
	} else {
		h.sawRegular = true
		if !validFieldName(f.Name) {
			h.invalid = fmt.Errorf("invalid header field name %q", f.Name)
		}
	}
	if h.invalid != nil {
		h.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &h.remain, f.Size()
	if f.Name == "trailer" {
		remain = &h.trailersRemain
		n := uint32(strings.Count(f.Value, ",") + 1)
		size = uint32(len(f.Value)) - n + 1 + n*hpack.HeaderField{}.Size()
	}
	if size > *remain {
		h.dec.SetEmitEnabled(false)
		h.truncated = true
		h.remain, h.trailersRemain = 0, 0
		return
	}
	*remain -= size
	h.fields = append(h.fields, f)
}

// validFieldName: a token in lower case (RFC 9113 §8.2.1).
func validFieldName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x80 || !httpguts.IsTokenRune(rune(c)) || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// read decodes the block f begins, reading its CONTINUATION frames from
// fr (buffered whole: see frameWanted). A malformed block is a stream
// error (http2.StreamError, PROTOCOL_ERROR); an undecodable or oversized
// one a connError.
func (h *headerBlock) read(fr *http2.Framer, f *http2.HeadersFrame) error {
	clear(h.fields) // drop the previous block's strings
	h.fields = h.fields[:0]
	h.stream, h.endStream = f.StreamID, f.StreamEnded()
	h.hasPriority, h.priority = f.HasPriority(), f.Priority
	h.truncated, h.sawRegular, h.invalid = false, false, nil
	h.remain, h.trailersRemain = h.max, h.max
	h.dec.SetEmitEnabled(true)
	frag, ended := f.HeaderBlockFragment(), f.HeadersEnded()
	for {
		if int64(len(frag)) > 2*(int64(h.remain)+int64(h.trailersRemain)) {
			return connError{http2.ErrCodeProtocol, "header list too large"}
		}
		if h.invalid != nil {
			return connError{http2.ErrCodeProtocol, h.invalid.Error()}
		}
		if _, err := h.dec.Write(frag); err != nil {
			return connError{http2.ErrCodeCompression, err.Error()}
		}
		if ended {
			break
		}
		next, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		c := next.(*http2.ContinuationFrame) // the framer checks the order
		frag, ended = c.HeaderBlockFragment(), c.HeadersEnded()
	}
	if err := h.dec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	if h.invalid == nil {
		h.invalid = checkPseudos(h.pseudo())
	}
	if h.invalid != nil {
		return http2.StreamError{StreamID: h.stream, Code: http2.ErrCodeProtocol, Cause: h.invalid}
	}
	return nil
}

// pseudo is the block's pseudo-header fields (they come first).
func (h *headerBlock) pseudo() []hpack.HeaderField {
	for i, f := range h.fields {
		if !f.IsPseudo() {
			return h.fields[:i]
		}
	}
	return h.fields
}

// pseudoValue is the value of the pseudo-header field :name, or "".
func (h *headerBlock) pseudoValue(name string) string {
	for _, f := range h.pseudo() {
		if f.Name[1:] == name {
			return f.Value
		}
	}
	return ""
}

// checkPseudos: known pseudo-header fields, none twice, not those of a
// request and of a response in one block.
func checkPseudos(pseudo []hpack.HeaderField) error {
	var request, response bool
	for i, f := range pseudo {
		switch f.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("unknown pseudo-header field %q", f.Name)
		}
		for _, g := range pseudo[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("pseudo-header field %q twice", f.Name)
			}
		}
	}
	if request && response {
		return errors.New("pseudo-header fields of a request and of a response")
	}
	return nil
}
