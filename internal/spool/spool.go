// Package spool holds a message body while it is filtered: in memory up
// to a threshold, then in a temporary file, so memory stays bounded
// whatever the message size.
package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
)

// chunkSize is the unit of in-memory storage. Messages are kept as a list
// of fixed-size chunks rather than one growing slice, so that a write
// never copies what is already stored and every buffer can be pooled.
const chunkSize = 32 << 10

type chunk [chunkSize]byte

// chunkPool recycles chunks: most mail is a few kilobytes, and a buffer
// per message would be most of the gateway's allocations.
var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// Message is a received message, already CRLF-normalised and dot-unstuffed.
type Message struct {
	threshold int64
	limit     int64
	dir       string

	// chunks hold the message while it is in memory: chunk i has bytes
	// [i*chunkSize, (i+1)*chunkSize) of it, the last one up to stored.
	chunks []*chunk
	// inline backs chunks up to the default threshold (256 KB), so the
	// list itself costs no allocation.
	inline [8]*chunk
	file   *os.File
	// wbuf gathers writes to the file (smtpd writes a line at a time)
	// into chunk-sized ones; wlen bytes of it are not written yet.
	wbuf *chunk
	wlen int
	werr error // a failed write to the file: the message is not whole
	size int64 // bytes the client sent, including what was not stored
	// stored is how much is kept; beyond limit nothing more is stored.
	stored int64
}

// New returns an empty message that keeps up to threshold bytes in memory
// and stores at most limit bytes in all (the rest is counted, not kept).
// Temporary files go to dir ("" = os.TempDir()).
func New(threshold, limit int64, dir string) *Message {
	m := &Message{threshold: threshold, limit: limit, dir: dir}
	m.chunks = m.inline[:0]
	return m
}

// Write appends to the message. It never fails because the message is too
// big: Oversize reports that afterwards.
func (m *Message) Write(p []byte) (int, error) {
	n := len(p)
	m.size += int64(n)
	if m.werr != nil {
		return 0, m.werr
	}
	if room := m.limit - m.stored; int64(len(p)) > room {
		if room <= 0 {
			return n, nil
		}
		p = p[:room]
	}
	if m.file == nil && m.stored+int64(len(p)) <= m.threshold {
		m.writeMem(p)
		return n, nil
	}
	if m.file == nil {
		if err := m.spill(); err != nil {
			m.werr = err
			return 0, err
		}
	}
	for len(p) > 0 {
		k := copy(m.wbuf[m.wlen:], p)
		m.wlen += k
		m.stored += int64(k)
		p = p[k:]
		if m.wlen == chunkSize {
			if err := m.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Flush writes to the file what Write gathered. Reader and Header flush
// too, but the writer calls it when the message is complete, to hear of
// a failed write (a full disk) before anything reads the message.
func (m *Message) Flush() error {
	if m.werr != nil || m.wlen == 0 {
		return m.werr
	}
	if _, err := m.file.Write(m.wbuf[:m.wlen]); err != nil {
		m.werr = err
	}
	m.wlen = 0
	return m.werr
}

// writeMem appends p to the chunks, taking new ones as the last fills.
func (m *Message) writeMem(p []byte) {
	for len(p) > 0 {
		off := int(m.stored % chunkSize)
		if off == 0 {
			m.chunks = append(m.chunks, chunkPool.Get().(*chunk))
		}
		k := copy(m.chunks[len(m.chunks)-1][off:], p)
		m.stored += int64(k)
		p = p[k:]
	}
}

// spill moves what is in memory to a new temporary file.
func (m *Message) spill() error {
	f, err := os.CreateTemp(m.dir, "mailgate-spool-*")
	if err != nil {
		return err
	}
	// The file is never needed by name: unlinking now means a crash
	// leaves nothing behind.
	_ = os.Remove(f.Name())
	m.file = f
	for i, c := range m.chunks {
		if _, err := f.Write(c[:chunkLen(i, m.stored)]); err != nil {
			return err
		}
	}
	m.recycle()
	m.wbuf = chunkPool.Get().(*chunk)
	return nil
}

// chunkLen is how many bytes of chunk i are used in a message of size bytes.
func chunkLen(i int, size int64) int {
	return int(min(chunkSize, size-int64(i)*chunkSize))
}

// Size is the number of bytes received, stored or not.
func (m *Message) Size() int64 { return m.size }

// Oversize reports that more than the limit was received.
func (m *Message) Oversize() bool { return m.size > m.limit }

// OnDisk reports whether the message was spooled to a file.
func (m *Message) OnDisk() bool { return m.file != nil }

// Reader returns a reader over the stored message from its start. Each
// call returns a new, independent reader. It is also an io.ReaderAt and
// an io.Seeker (mimeparse reads in place through them).
func (m *Message) Reader() io.Reader {
	if m.werr != nil {
		return errReader{m.werr} // never a reader over part of the message
	}
	switch {
	case m.file != nil:
		if err := m.Flush(); err != nil {
			return errReader{err}
		}
		return io.NewSectionReader(m.file, 0, m.stored)
	case len(m.chunks) == 0:
		return bytes.NewReader(nil)
	case len(m.chunks) == 1:
		return bytes.NewReader(m.chunks[0][:m.stored])
	}
	return &chunkReader{chunks: m.chunks, size: m.stored}
}

// Header returns the message's header block (up to and including the
// empty line that ends it, or at most max bytes).
func (m *Message) Header(max int) []byte {
	n := min(int64(max), m.stored)
	if m.file != nil {
		if m.Flush() != nil {
			return nil
		}
		buf := make([]byte, n)
		k, err := m.file.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		return headerPrefix(buf[:k])
	}
	if len(m.chunks) == 0 || n <= 0 {
		return nil
	}
	// The common case, a header within the first chunk, is a slice of it.
	first := m.chunks[0][:min(n, chunkSize)]
	if end, ok := headerEnd(first); ok || n <= chunkSize {
		return first[:end]
	}
	return m.longHeader(n)
}

// longHeader returns the header block of a message in memory whose header
// goes past the first chunk (so does not start with the empty line),
// looking at no more than n bytes. It copies chunk by chunk until the
// header's end.
func (m *Message) longHeader(n int64) []byte {
	buf := make([]byte, 0, 2*chunkSize)
	for i, c := range m.chunks {
		from := max(0, len(buf)-3) // "\r\n\r\n" may span the boundary
		buf = append(buf, c[:min(int64(chunkLen(i, m.stored)), n-int64(len(buf)))]...)
		if j := bytes.Index(buf[from:], crlfcrlf); j >= 0 {
			return buf[:from+j+4]
		}
		if int64(len(buf)) == n {
			break
		}
	}
	return buf
}

var crlfcrlf = []byte("\r\n\r\n")

// headerEnd returns the length of the header block at the start of b,
// if b holds its end.
func headerEnd(b []byte) (int, bool) {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 0, true
	}
	if i := bytes.Index(b, crlfcrlf); i >= 0 {
		return i + 4, true
	}
	return len(b), false
}

func headerPrefix(b []byte) []byte {
	end, _ := headerEnd(b)
	return b[:end]
}

// recycle returns the chunks to the pool.
func (m *Message) recycle() {
	for i, c := range m.chunks {
		chunkPool.Put(c)
		m.chunks[i] = nil
	}
	m.chunks = m.chunks[:0]
}

// Close releases the memory buffer and the temporary file, if any. Readers
// must not be used after Close.
func (m *Message) Close() error {
	m.recycle()
	if m.wbuf != nil {
		chunkPool.Put(m.wbuf)
		m.wbuf, m.wlen = nil, 0
	}
	if m.file != nil {
		err := m.file.Close()
		m.file = nil
		return err
	}
	return nil
}

// errReader fails every read.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// chunkReader reads a message held in several chunks, as bytes.Reader
// reads one slice.
type chunkReader struct {
	chunks []*chunk
	size   int64
	off    int64
}

// span returns the stored bytes from off to the end of off's chunk.
func (r *chunkReader) span(off int64) []byte {
	i := off / chunkSize
	return r.chunks[i][off%chunkSize : chunkLen(int(i), r.size)]
}

func (r *chunkReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}

func (r *chunkReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("spool: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < r.size {
		k := copy(p[n:], r.span(off))
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *chunkReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("spool: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("spool: negative position")
	}
	r.off = offset
	return offset, nil
}

// WriteTo writes the chunks as they are, so io.Copy makes no extra copy.
func (r *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.off < r.size {
		b := r.span(r.off)
		k, err := w.Write(b)
		r.off += int64(k)
		total += int64(k)
		if err != nil {
			return total, err
		}
		if k != len(b) {
			return total, io.ErrShortWrite
		}
	}
	return total, nil
}
