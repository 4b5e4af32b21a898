package pipeline

import (
	"bufio"
	"bytes"
	"io"
	"sync"

	"mailgate/internal/rawbody"
)

// MessageReader returns the received message as it will go upstream,
// without the header fields DropHeader removes (and without the trace
// fields in AddHeaders and our Received, which are prepended when it is
// sent). DKIM signing reads this. Close it when done, read to the end
// or not.
func (t *Transaction) MessageReader(m *Message) io.ReadCloser {
	if t.DropHeader == nil {
		return io.NopCloser(m.Reader())
	}
	return DropHeaderFields(m.Reader(), t.DropHeader)
}

// maxFieldBytes bounds one header field held while deciding whether to
// drop it; a longer field is passed on as it is.
const maxFieldBytes = 256 << 10

// DropHeaderFields copies a message, leaving out the top-level header
// fields for which drop returns true. The body, and anything after a
// line that is not a header field, passes through unchanged. Close the
// result when done with it.
func DropHeaderFields(r io.Reader, drop func(name string, field []byte) bool) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		br := dropReaders.Get().(*bufio.Reader)
		br.Reset(r)
		pw.CloseWithError(dropFields(br, pw, drop))
		br.Reset(nil)
		dropReaders.Put(br)
	}()
	return pr
}

// dropReaders spares DropHeaderFields a 32 KB allocation per message.
var dropReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

func dropFields(br *bufio.Reader, w io.Writer, drop func(string, []byte) bool) error {
	var field []byte // the field being collected (with continuations)
	flush := func() error {
		if len(field) == 0 {
			return nil
		}
		name := rawbody.FieldName(field)
		var err error
		if name == "" || !drop(name, field) {
			_, err = w.Write(field)
		}
		field = field[:0]
		return err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A giant line: not something to judge; pass everything on.
			if ferr := flush(); ferr != nil {
				return ferr
			}
			if _, werr := w.Write(line); werr != nil {
				return werr
			}
			_, err = io.Copy(w, br)
			return err
		}
		if len(line) > 0 {
			switch {
			case line[0] == ' ' || line[0] == '\t':
				if len(field) > 0 && len(field)+len(line) <= maxFieldBytes {
					field = append(field, line...)
					break
				}
				if ferr := flush(); ferr != nil {
					return ferr
				}
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
			case bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) || rawbody.FieldName(line) == "":
				// End of the header (or not a header at all): the rest
				// is copied as it is.
				if ferr := flush(); ferr != nil {
					return ferr
				}
				if _, werr := w.Write(line); werr != nil {
					return werr
				}
				if err == nil {
					_, err = io.Copy(w, br)
				}
				if err == io.EOF {
					return nil
				}
				return err
			default:
				if ferr := flush(); ferr != nil {
					return ferr
				}
				field = append(field, line...)
			}
		}
		if err == io.EOF {
			return flush()
		}
		if err != nil {
			return err
		}
	}
}
