package smtpd

import (
	"bufio"
	"bytes"
	"io"
)

// DataResult tells what the DATA reader saw besides the message itself.
type DataResult struct {
	// Smuggling: an end-of-data look-alike (a "." line delimited by a bare
	// CR or LF, or padded with NULs) was in the data. An upstream that is
	// lenient about line endings could take it as the end of the message
	// and the rest as a second, smuggled message (CVE-2023-51764 class).
	Smuggling bool
	// BareLF and BareCR count line breaks that were not CRLF. The message
	// written out has them normalised to CRLF.
	BareLF, BareCR int
}

// Bare reports whether any bare line ending was seen.
func (d DataResult) Bare() bool { return d.BareLF+d.BareCR > 0 }

type terminator int

const (
	termCRLF terminator = iota
	termLF
	termCR
)

var crlf = []byte("\r\n")

// readData reads a DATA payload up to the CRLF.CRLF that ends it and writes
// it to w dot-unstuffed, with every line ending normalised to CRLF. Only
// an exact CRLF "." CRLF ends the data; any other line break counts as a
// line break for unstuffing and normalisation, so the output, once
// dot-stuffed again, can never contain an end-of-data sequence of any
// kind.
func readData(r *bufio.Reader, w io.Writer) (DataResult, error) {
	var (
		res      DataResult
		prevCRLF = true // the DATA command line ended the previous line
		lineLen  int    // raw bytes of the current line so far
		nonNul   int    // non-NUL bytes of the current line so far (capped)
		first    byte   // first non-NUL byte of the current line
		firstRaw byte   // first raw byte of the current line
	)
	for {
		chunk, err := r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return res, err
		}
		for i := 0; i < len(chunk); {
			j := lineEnd(chunk[i:])
			seg := chunk[i:]
			if j >= 0 {
				seg = chunk[i : i+j]
			}
			if len(seg) > 0 {
				out := seg
				if lineLen == 0 {
					firstRaw = seg[0]
					if seg[0] == '.' {
						out = seg[1:] // dot-unstuffing
					}
				}
				for k := 0; k < len(seg) && nonNul < 2; k++ {
					if seg[k] != 0 {
						if nonNul == 0 {
							first = seg[k]
						}
						nonNul++
					}
				}
				lineLen += len(seg)
				if len(out) > 0 {
					if _, werr := w.Write(out); werr != nil {
						return res, werr
					}
				}
			}
			if j < 0 {
				break // a long line continues in the next chunk
			}
			i += j
			var term terminator
			switch {
			case chunk[i] == '\n':
				term, i = termLF, i+1
			case i+1 < len(chunk):
				if chunk[i+1] == '\n' {
					term, i = termCRLF, i+2
				} else {
					term, i = termCR, i+1
				}
			default:
				// A CR ends the chunk: the next byte decides. The chunk is
				// used up, so reading on is safe.
				i++
				next, perr := r.Peek(1)
				if perr != nil {
					if perr == io.EOF {
						perr = io.ErrUnexpectedEOF
					}
					return res, perr
				}
				if next[0] == '\n' {
					_, _ = r.ReadByte()
					term = termCRLF
				} else {
					term = termCR
				}
			}

			dotOnly := lineLen == 1 && firstRaw == '.'
			if dotOnly && term == termCRLF && prevCRLF {
				return res, nil
			}
			if nonNul == 1 && first == '.' {
				res.Smuggling = true
			}
			switch term {
			case termLF:
				res.BareLF++
			case termCR:
				res.BareCR++
			}
			if _, werr := w.Write(crlf); werr != nil {
				return res, werr
			}
			prevCRLF = term == termCRLF
			lineLen, nonNul = 0, 0
		}
	}
}

// lineEnd is the index of the first CR or LF in b, or -1: bytes.IndexAny
// with two IndexByte scans, which are vectorised (IndexAny tests each
// byte against a set; it was 2 % of the gateway's CPU).
func lineEnd(b []byte) int {
	n := bytes.IndexByte(b, '\n')
	end := n
	if n < 0 {
		end = len(b)
	}
	if r := bytes.IndexByte(b[:end], '\r'); r >= 0 {
		return r
	}
	return n
}
