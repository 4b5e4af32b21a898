package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSpool(t *testing.T) {
	head := "Subject: x\r\nReceived: y\r\n\r\n"
	for _, tc := range []struct {
		name             string
		size             int
		onDisk, oversize bool
	}{
		{"memory", 100, false, false},
		{"disk", 5000, true, false},
		{"oversize", 20000, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(1024, 10000, t.TempDir())
			defer m.Close()
			body := strings.Repeat("b", tc.size)
			for _, chunk := range []string{head, body[:tc.size/2], body[tc.size/2:]} {
				if _, err := m.Write([]byte(chunk)); err != nil {
					t.Fatal(err)
				}
			}
			if m.OnDisk() != tc.onDisk || m.Oversize() != tc.oversize || m.Size() != int64(len(head)+tc.size) {
				t.Fatalf("onDisk %v oversize %v size %d", m.OnDisk(), m.Oversize(), m.Size())
			}
			got, _ := io.ReadAll(m.Reader())
			want := (head + body)[:min(len(head)+tc.size, 10000)]
			if string(got) != want {
				t.Errorf("read back %d bytes, want %d", len(got), len(want))
			}
			if h := m.Header(1 << 20); string(h) != head {
				t.Errorf("header %q", h)
			}
			// Readers are independent.
			a, _ := io.ReadAll(m.Reader())
			if !bytes.Equal(a, got) {
				t.Error("second reader differs")
			}
		})
	}
}

// pattern returns n bytes whose value depends on their offset, with a
// period (251) prime to the chunk size, so a byte read from the wrong
// place shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// write writes data to m in pieces of piece bytes.
func write(t testing.TB, m *Message, data []byte, piece int) {
	t.Helper()
	for len(data) > 0 {
		k := min(piece, len(data))
		if n, err := m.Write(data[:k]); err != nil || n != k {
			t.Fatalf("Write(%d bytes) = %d, %v", k, n, err)
		}
		data = data[k:]
	}
}

// checkReader reads r every way mimeparse and io.Copy read it, and
// compares with a bytes.Reader over want.
func checkReader(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	ra, ok := r.(interface {
		io.ReaderAt
		io.ReadSeeker
	})
	if !ok {
		t.Fatalf("reader %T is not an io.ReaderAt and io.ReadSeeker", r)
	}
	got, err := io.ReadAll(ra)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadAll: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	ref := bytes.NewReader(want)
	offs := []int64{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 2*chunkSize - 2, 2 * chunkSize,
		int64(len(want)) - 1, int64(len(want)), int64(len(want)) + 1}
	for _, off := range offs {
		if off < 0 {
			continue
		}
		for _, n := range []int{0, 1, 2, 5, chunkSize, chunkSize + 3} {
			p, q := make([]byte, n), make([]byte, n)
			gn, gerr := ra.ReadAt(p, off)
			wn, werr := ref.ReadAt(q, off)
			if gn != wn || !errors.Is(gerr, werr) || !bytes.Equal(p[:gn], q[:wn]) {
				t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, %v", n, off, gn, gerr, wn, werr)
			}
			for _, whence := range []int{io.SeekStart, io.SeekCurrent, io.SeekEnd} {
				o := off
				if whence == io.SeekEnd {
					o = off - int64(len(want))
				}
				// The same starting point for both, so SeekCurrent
				// compares too.
				_, _ = ra.Seek(3, io.SeekStart)
				_, _ = ref.Seek(3, io.SeekStart)
				gp, gerr := ra.Seek(o, whence)
				wp, werr := ref.Seek(o, whence)
				if gp != wp || (gerr == nil) != (werr == nil) {
					t.Fatalf("Seek(%d, %d) = %d, %v; want %d, %v", o, whence, gp, gerr, wp, werr)
				}
				gn, gerr = io.ReadFull(ra, p)
				wn, werr = io.ReadFull(ref, q)
				if gn != wn || !errors.Is(gerr, werr) || !bytes.Equal(p[:gn], q[:wn]) {
					t.Fatalf("Read of %d after Seek(%d, %d) = %d, %v; want %d, %v", n, o, whence, gn, gerr, wn, werr)
				}
			}
		}
	}
	if _, err := ra.Seek(-1, io.SeekStart); err == nil {
		t.Error("Seek to -1 did not fail")
	}
	if wt, ok := r.(io.WriterTo); ok {
		for _, off := range offs {
			if off < 0 || off > int64(len(want)) {
				continue
			}
			var buf bytes.Buffer
			_, _ = ra.Seek(off, io.SeekStart)
			n, err := wt.WriteTo(&buf)
			if err != nil || n != int64(len(want))-off || !bytes.Equal(buf.Bytes(), want[off:]) {
				t.Fatalf("WriteTo from %d: %d, %v; want %d bytes", off, n, err, int64(len(want))-off)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5} {
		for _, piece := range []int{1, 7, chunkSize - 1, chunkSize, chunkSize + 1} {
			if piece == 1 && size > 2*chunkSize {
				continue // slow and no different from 7
			}
			for _, threshold := range []int64{1 << 20, chunkSize / 2} {
				t.Run(fmt.Sprintf("size%d/piece%d/threshold%d", size, piece, threshold), func(t *testing.T) {
					m := New(threshold, 10<<20, t.TempDir())
					defer m.Close()
					data := pattern(size)
					write(t, m, data, piece)
					if m.Size() != int64(size) || m.Oversize() || m.OnDisk() != (int64(size) > threshold) {
						t.Fatalf("size %d oversize %v onDisk %v", m.Size(), m.Oversize(), m.OnDisk())
					}
					checkReader(t, m.Reader(), data)
				})
			}
		}
	}
}

func TestReaderInterfaces(t *testing.T) {
	for _, size := range []int{0, 10, 2*chunkSize + 10} {
		m := New(1<<20, 1<<20, "")
		write(t, m, pattern(size), 4096)
		if _, ok := m.Reader().(io.WriterTo); !ok {
			t.Errorf("reader of %d bytes in memory is not an io.WriterTo", size)
		}
		m.Close()
	}
}

func TestReadersIndependent(t *testing.T) {
	m := New(1<<20, 1<<20, "")
	defer m.Close()
	data := pattern(3 * chunkSize)
	write(t, m, data, 4096)
	a, b := m.Reader(), m.Reader()
	pa, pb := make([]byte, chunkSize+1), make([]byte, 10)
	if _, err := io.ReadFull(a, pa); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, pb); err != nil || !bytes.Equal(pb, data[:10]) {
		t.Fatalf("second reader: %v, % x", err, pb)
	}
	if _, err := io.ReadFull(a, pb); err != nil || !bytes.Equal(pb, data[chunkSize+1:chunkSize+11]) {
		t.Fatalf("first reader went on at the wrong place: %v", err)
	}
}

func TestSpillAfterChunks(t *testing.T) {
	threshold := int64(5*chunkSize + 100)
	data := pattern(6 * chunkSize)
	m := New(threshold, 10<<20, t.TempDir())
	defer m.Close()
	write(t, m, data[:threshold], 1000)
	if m.OnDisk() {
		t.Fatal("spilled at the threshold, not past it")
	}
	checkReader(t, m.Reader(), data[:threshold])
	write(t, m, data[threshold:], 1000)
	if !m.OnDisk() {
		t.Fatal("not spilled past the threshold")
	}
	if len(m.chunks) != 0 {
		t.Errorf("%d chunks kept after spilling", len(m.chunks))
	}
	checkReader(t, m.Reader(), data)
}

func TestLimitMidChunk(t *testing.T) {
	const limit = chunkSize + 100
	data := pattern(3 * chunkSize)
	for _, threshold := range []int64{1 << 20, chunkSize / 2} {
		m := New(threshold, limit, t.TempDir())
		write(t, m, data, 5000)
		if m.Size() != int64(len(data)) || !m.Oversize() || m.OnDisk() != (threshold < limit) {
			t.Fatalf("size %d oversize %v onDisk %v", m.Size(), m.Oversize(), m.OnDisk())
		}
		checkReader(t, m.Reader(), data[:limit])
		m.Close()
	}
}

func TestHeader(t *testing.T) {
	body := "\r\nbody\r\n\r\nmore\r\n"
	for _, hlen := range []int{2, 20, chunkSize - 3, chunkSize - 2, chunkSize - 1, chunkSize, chunkSize + 1, 2*chunkSize + 7} {
		// A header of hlen bytes before its empty line: the "\r\n\r\n"
		// that ends it falls before, on and after chunk boundaries.
		head := strings.Repeat("h", hlen-2) + "\r\n"
		msg := []byte(head + body + strings.Repeat("b", chunkSize))
		for _, threshold := range []int64{1 << 20, 100} {
			m := New(threshold, 1<<20, t.TempDir())
			write(t, m, msg, 4096)
			for _, max := range []int{0, 1, hlen, hlen + 1, hlen + 2, chunkSize, chunkSize + 1, 1 << 20} {
				want := headerPrefix(msg[:min(max, len(msg))])
				if got := m.Header(max); !bytes.Equal(got, want) {
					t.Errorf("header of %d bytes, threshold %d: Header(%d) is %d bytes, want %d", hlen, threshold, max, len(got), len(want))
				}
			}
			m.Close()
		}
	}
	m := New(1<<20, 1<<20, "")
	defer m.Close()
	write(t, m, []byte("\r\nbody"), 10)
	if h := m.Header(100); len(h) != 0 {
		t.Errorf("message starting with an empty line: header %q", h)
	}
}

func TestHeaderFirstChunkNoAlloc(t *testing.T) {
	m := New(1<<20, 1<<20, "")
	defer m.Close()
	write(t, m, []byte("Subject: x\r\n\r\n"), 100)
	write(t, m, pattern(3*chunkSize), 4096)
	if n := testing.AllocsPerRun(10, func() { m.Header(1 << 20) }); n != 0 {
		t.Errorf("Header allocates %v times", n)
	}
}

func TestPoolReuse(t *testing.T) {
	for _, size := range []int{10, chunkSize + 10} {
		a := New(1<<20, 1<<20, "")
		write(t, a, bytes.Repeat([]byte("A"), 4*chunkSize), 4096)
		a.Close()
		b := New(1<<20, 1<<20, "")
		want := bytes.Repeat([]byte("b"), size)
		write(t, b, want, 4096)
		checkReader(t, b.Reader(), want)
		if h := b.Header(1 << 20); !bytes.Equal(h, want) {
			t.Errorf("header of %d bytes, want %d", len(h), size)
		}
		b.Close()
	}
}

// FuzzSpool writes a message in pieces of random sizes, with a random
// threshold and limit, and reads it back every way.
func FuzzSpool(f *testing.F) {
	f.Add(uint64(1), uint32(256<<10), uint32(10<<20), uint32(100), uint32(1<<20), []byte{0x10, 0, 0x80, 0})
	f.Add(uint64(2), uint32(0), uint32(chunkSize+1), uint32(chunkSize-2), uint32(chunkSize), []byte{0xff, 0xff, 1, 0})
	f.Add(uint64(3), uint32(3*chunkSize), uint32(5*chunkSize), uint32(2*chunkSize), uint32(3*chunkSize), []byte{0x80, 0, 0x80, 0, 0x80, 0, 1})
	f.Fuzz(func(t *testing.T, seed uint64, threshold, limit, hdrAt, max uint32, sizes []byte) {
		threshold %= 8 * chunkSize
		limit %= 10 * chunkSize
		// Each pair of bytes of sizes is the size of one write, up to 64
		// writes (at most 4 MB), so that one run stays quick.
		var pieces []int
		total := 0
		for i := 0; i+1 < len(sizes) && len(pieces) < 64; i += 2 {
			n := int(sizes[i])<<8 | int(sizes[i+1])
			pieces = append(pieces, n)
			total += n
		}
		rng := rand.New(rand.NewPCG(seed, 0))
		data := bytes.Repeat([]byte("x"), total)
		for i := range min(total, int(limit)) {
			data[i] = byte('a' + rng.IntN(26))
			if rng.IntN(40) == 0 {
				data[i] = '\n'
			}
		}
		if int(hdrAt)+4 <= total {
			copy(data[hdrAt:], "\r\n\r\n")
		}
		m := New(int64(threshold), int64(limit), t.TempDir())
		defer m.Close()
		off := 0
		for _, n := range pieces {
			if k, err := m.Write(data[off : off+n]); k != n || err != nil {
				t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
			}
			off += n
		}
		want := data[:min(total, int(limit))]
		if m.Size() != int64(total) || m.Oversize() != (total > int(limit)) || m.OnDisk() != (len(want) > int(threshold)) {
			t.Fatalf("size %d oversize %v onDisk %v", m.Size(), m.Oversize(), m.OnDisk())
		}
		r := m.Reader()
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(want))
		}
		ra := m.Reader().(io.ReaderAt)
		ref := bytes.NewReader(want)
		for range 20 {
			off := rng.Int64N(int64(len(want)) + 2)
			n := rng.IntN(2 * chunkSize)
			p, q := make([]byte, n), make([]byte, n)
			gn, gerr := ra.ReadAt(p, off)
			wn, werr := ref.ReadAt(q, off)
			if gn != wn || !errors.Is(gerr, werr) || !bytes.Equal(p[:gn], q[:wn]) {
				t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d, %v", len(p), off, gn, gerr, wn, werr)
			}
		}
		if wt, ok := m.Reader().(io.WriterTo); ok {
			var buf bytes.Buffer
			if _, err := wt.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("WriteTo: %d bytes, %v", buf.Len(), err)
			}
		}
		if got, exp := m.Header(int(max)), headerPrefix(want[:min(len(want), int(max))]); !bytes.Equal(got, exp) {
			t.Fatalf("Header(%d) is %d bytes, want %d", max, len(got), len(exp))
		}
	})
}

// sink keeps the benchmark's messages on the heap, as the gateway's are
// (smtpd hands them to the pipeline through an interface).
var sink *Message

// BenchmarkWrite receives messages in 4 KB pieces, as the SMTP reader
// hands them over, and reads each back once. "mix" is one message of
// each size per op, so the pool sees messages of different sizes.
func BenchmarkWrite(b *testing.B) {
	piece := bytes.Repeat([]byte("0123456789abcde\n"), 4<<10/16)
	for _, bc := range []struct {
		name      string
		sizes     []int64
		threshold int64
	}{
		{"4KB", []int64{4 << 10}, 256 << 10},
		{"60KB", []int64{60 << 10}, 256 << 10},
		{"280KB", []int64{280 << 10}, 256 << 10},
		{"280KB-threshold1MB", []int64{280 << 10}, 1 << 20},
		{"mix", []int64{4 << 10, 60 << 10, 280 << 10}, 256 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			b.ReportAllocs()
			for b.Loop() {
				for _, size := range bc.sizes {
					m := New(bc.threshold, 10<<20, dir)
					sink = m
					for n := size; n > 0; n -= int64(len(piece)) {
						if _, err := m.Write(piece[:min(n, int64(len(piece)))]); err != nil {
							b.Fatal(err)
						}
					}
					if _, err := io.Copy(io.Discard, m.Reader()); err != nil {
						b.Fatal(err)
					}
					m.Close()
				}
			}
		})
	}
}

// Writes after the spill are gathered; a write that fails when they are
// flushed is reported by Flush, and Reader then never returns part of
// the message.
func TestFileWriteFailure(t *testing.T) {
	m := New(10, 1<<20, t.TempDir())
	defer m.Close()
	if _, err := m.Write([]byte("Subject: a long enough header\r\n\r\n")); err != nil || !m.OnDisk() {
		t.Fatalf("write: %v, on disk %v", err, m.OnDisk())
	}
	for range 100 {
		if _, err := m.Write([]byte("a line\r\n")); err != nil {
			t.Fatal(err) // gathered, not written yet
		}
	}
	m.file.Close() // the disk fails
	if err := m.Flush(); err == nil {
		t.Fatal("Flush: no error")
	}
	if _, err := io.ReadAll(m.Reader()); err == nil {
		t.Fatal("Reader read a message that was not stored whole")
	}
}

// Lines written one by one after the spill reach the file in chunks.
func TestFileWritesGathered(t *testing.T) {
	m := New(10, 1<<20, t.TempDir())
	defer m.Close()
	var want bytes.Buffer
	for i := range 5000 {
		line := fmt.Sprintf("line %d of the message\r\n", i)
		want.WriteString(line)
		if _, err := m.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if fi, _ := m.file.Stat(); fi.Size() >= int64(want.Len()) || fi.Size()%chunkSize != 0 {
		t.Errorf("file holds %d of %d bytes before Flush: want whole chunks", fi.Size(), want.Len())
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(m.Reader())
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read back %d bytes (%v), want %d", len(got), err, want.Len())
	}
}
