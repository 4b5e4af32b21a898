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

// Message is a received message, already CRLF-normalised and dot-unstuffed.
type Message struct {
	threshold int64
	limit     int64
	dir       string

	mem  []byte
	file *os.File
	size int64 // bytes the client sent, including what was not stored
	// stored is how much is kept; beyond limit nothing more is stored.
	stored int64
}

// New returns an empty message that keeps up to threshold bytes in memory
// and stores at most limit bytes in all (the rest is counted, not kept).
// Temporary files go to dir ("" = os.TempDir()).
func New(threshold, limit int64, dir string) *Message {
	return &Message{threshold: threshold, limit: limit, dir: dir}
}

// Write appends to the message. It never fails because the message is too
// big: Oversize reports that afterwards.
func (m *Message) Write(p []byte) (int, error) {
	n := len(p)
	m.size += int64(n)
	if room := m.limit - m.stored; int64(len(p)) > room {
		if room <= 0 {
			return n, nil
		}
		p = p[:room]
	}
	m.stored += int64(len(p))
	if m.file == nil && int64(len(m.mem)+len(p)) <= m.threshold {
		if m.mem == nil {
			m.mem = (*bufs.Get().(*[]byte))[:0]
		}
		m.mem = append(m.mem, p...)
		return n, nil
	}
	if m.file == nil {
		f, err := os.CreateTemp(m.dir, "mailgate-spool-*")
		if err != nil {
			return 0, err
		}
		// The file is never needed by name: unlinking now means a crash
		// leaves nothing behind.
		_ = os.Remove(f.Name())
		m.file = f
		if _, err := f.Write(m.mem); err != nil {
			return 0, err
		}
		m.recycle()
	}
	if _, err := m.file.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// Size is the number of bytes received, stored or not.
func (m *Message) Size() int64 { return m.size }

// Oversize reports that more than the limit was received.
func (m *Message) Oversize() bool { return m.size > m.limit }

// OnDisk reports whether the message was spooled to a file.
func (m *Message) OnDisk() bool { return m.file != nil }

// Reader returns a reader over the stored message from its start. Each
// call returns a new, independent reader.
func (m *Message) Reader() io.Reader {
	if m.file == nil {
		return bytes.NewReader(m.mem)
	}
	return io.NewSectionReader(m.file, 0, m.stored)
}

// Header returns the message's header block (up to and including the
// empty line that ends it, or at most max bytes).
func (m *Message) Header(max int) []byte {
	if m.file == nil {
		b := m.mem
		if len(b) > max {
			b = b[:max]
		}
		return headerPrefix(b)
	}
	buf := make([]byte, min(int64(max), m.stored))
	n, err := m.file.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	return headerPrefix(buf[:n])
}

func headerPrefix(b []byte) []byte {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return b[:0]
	}
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return b[:i+4]
	}
	return b
}

// bufs recycles the in-memory buffers of small messages: most mail is a
// few kilobytes, and a buffer per message would be most of the gateway's
// allocations.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooled: larger buffers are left to the garbage collector.
const maxPooled = 256 << 10

func (m *Message) recycle() {
	if m.mem != nil && cap(m.mem) <= maxPooled {
		b := m.mem[:0]
		bufs.Put(&b)
	}
	m.mem = nil
}

// Close releases the memory buffer and the temporary file, if any. Readers
// must not be used after Close.
func (m *Message) Close() error {
	m.recycle()
	if m.file != nil {
		err := m.file.Close()
		m.file = nil
		return err
	}
	return nil
}
