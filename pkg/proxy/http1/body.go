package http1

import (
	"bufio"
	"errors"
	"io"
	"strconv"
)

// Body copies stream from a bufio.Reader into a bufio.Writer in the calling
// goroutine. They flush dst before every read that may block on src, so a
// body that is already buffered goes out in one write, and a streamed body
// (server-sent events, a slow upload) is passed on as it arrives. Each
// returns the error of the source (rerr: a read error or a framing error)
// and of the destination (werr) separately, since the two sides are
// accounted differently.

var errBadChunk = errors.New("http1: malformed chunked encoding")

// fill makes src buffer at least one byte, flushing dst first when that may
// block.
func fill(dst *bufio.Writer, src *bufio.Reader) (rerr, werr error) {
	if src.Buffered() > 0 {
		return nil, nil
	}
	if err := dst.Flush(); err != nil {
		return nil, err
	}
	_, err := src.Peek(1)
	return err, nil
}

// copyFixed copies exactly n bytes.
func copyFixed(dst *bufio.Writer, src *bufio.Reader, n int64) (rerr, werr error) {
	for n > 0 {
		if rerr, werr = fill(dst, src); rerr != nil || werr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
			}
			return rerr, werr
		}
		k := src.Buffered()
		if int64(k) > n {
			k = int(n)
		}
		b, _ := src.Peek(k)
		if _, err := dst.Write(b); err != nil {
			return nil, err
		}
		_, _ = src.Discard(k)
		n -= int64(k)
	}
	return nil, nil
}

// copyToEOF copies until src ends. When chunk is set, the data is sent in
// chunked coding (for a response without length to an HTTP/1.1 client).
func copyToEOF(dst *bufio.Writer, src *bufio.Reader, chunk bool) (rerr, werr error) {
	for {
		if rerr, werr = fill(dst, src); werr != nil {
			return nil, werr
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				return rerr, nil
			}
			if chunk {
				if _, err := dst.WriteString("0\r\n\r\n"); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		k := src.Buffered()
		b, _ := src.Peek(k)
		if chunk {
			if werr = writeChunkHeader(dst, uint64(k)); werr != nil {
				return nil, werr
			}
		}
		if _, err := dst.Write(b); err != nil {
			return nil, err
		}
		_, _ = src.Discard(k)
		if chunk {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return nil, err
			}
		}
	}
}

// writeChunkHeader writes "<hex size>\r\n" without allocating.
func writeChunkHeader(dst *bufio.Writer, n uint64) error {
	if dst.Available() < 20 {
		if err := dst.Flush(); err != nil {
			return err
		}
	}
	b := strconv.AppendUint(dst.AvailableBuffer(), n, 16)
	b = append(b, '\r', '\n')
	_, err := dst.Write(b)
	return err
}

// copyChunked reads a chunked body (RFC 9112 §7.1) and writes it on either
// re-encoded as chunked (chunk extensions dropped, trailer fields passed
// on) or, with dechunk set, as its plain data (for an HTTP/1.0 client).
// maxTrailer bounds the trailer section.
func copyChunked(dst *bufio.Writer, src *bufio.Reader, dechunk bool, maxTrailer int) (rerr, werr error) {
	for {
		line, rerr, werr := readLine(dst, src)
		if rerr != nil || werr != nil {
			return rerr, werr
		}
		size, ok := parseChunkSize(line)
		if !ok {
			return errBadChunk, nil
		}
		if size == 0 {
			return copyTrailer(dst, src, dechunk, maxTrailer)
		}
		if !dechunk {
			if werr = writeChunkHeader(dst, size); werr != nil {
				return nil, werr
			}
		}
		if rerr, werr = copyFixed(dst, src, int64(size)); rerr != nil || werr != nil {
			return rerr, werr
		}
		crlf, rerr, werr := readLine(dst, src)
		if rerr != nil || werr != nil {
			return rerr, werr
		}
		if !(len(crlf) == 2 && crlf[0] == '\r') && len(crlf) != 1 {
			return errBadChunk, nil
		}
		if !dechunk {
			if _, err := dst.WriteString("\r\n"); err != nil {
				return nil, err
			}
		}
	}
}

// copyTrailer reads the trailer section after the last chunk up to its
// empty line and passes it on (unless dechunk).
func copyTrailer(dst *bufio.Writer, src *bufio.Reader, dechunk bool, max int) (rerr, werr error) {
	if !dechunk {
		if _, err := dst.WriteString("0\r\n"); err != nil {
			return nil, err
		}
	}
	total := 0
	for {
		line, rerr, werr := readLine(dst, src)
		if rerr != nil || werr != nil {
			return rerr, werr
		}
		total += len(line)
		if total > max {
			return errBadChunk, nil
		}
		empty := len(line) == 1 || (len(line) == 2 && line[0] == '\r')
		if !empty && !validTrailerLine(line) {
			return errBadChunk, nil
		}
		if !dechunk {
			if _, err := dst.Write(line); err != nil {
				return nil, err
			}
		}
		if empty {
			return nil, nil
		}
	}
}

// validTrailerLine checks a field line of a trailer section.
func validTrailerLine(line []byte) bool {
	n := len(line) - 1 // without LF
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	line = line[:n]
	colon := -1
	for i, c := range line {
		if c == ':' {
			colon = i
			break
		}
		if !tchar[c] {
			return false
		}
	}
	if colon <= 0 {
		return false
	}
	for _, c := range line[colon+1:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// parseChunkSize parses a chunk-size line: 1*HEXDIG [BWS ; chunk-ext] CRLF.
// Sizes above 2^60 are refused.
func parseChunkSize(line []byte) (uint64, bool) {
	n := len(line) - 1 // line ends in LF
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	line = line[:n]
	var size uint64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto rest
		}
		if i >= 15 {
			return 0, false
		}
		size = size<<4 | uint64(d)
	}
rest:
	if i == 0 {
		return 0, false
	}
	ext := line[i:]
	for len(ext) > 0 && (ext[0] == ' ' || ext[0] == '\t') {
		ext = ext[1:]
	}
	if len(ext) == 0 {
		return size, true
	}
	if ext[0] != ';' {
		return 0, false
	}
	for _, c := range ext {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, false
		}
	}
	return size, true
}

// unexpected turns io.EOF inside a body into io.ErrUnexpectedEOF.
// readLine reads one framing line of a chunked body (a chunk size, the
// CRLF after its data, a trailer field), flushing what was written first
// when it has to wait. A line longer than the read buffer is errBadChunk; an
// end of input is unexpected.
func readLine(dst *bufio.Writer, src *bufio.Reader) (line []byte, rerr, werr error) {
	if rerr, werr = fill(dst, src); rerr != nil || werr != nil {
		return nil, unexpected(rerr), werr
	}
	line, err := src.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errBadChunk, nil
		}
		return nil, unexpected(err), nil
	}
	return line, nil, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
