package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// window is a read-ahead window over [0, limit) of a file.
type window struct {
	r     io.ReaderAt
	limit int64
	buf   []byte
	start int64 // file position of buf[0]
	n     int   // valid bytes in buf
}

func newWindow(r io.ReaderAt, limit int64, size int) *window {
	return &window{r: r, limit: limit, buf: make([]byte, size)}
}

// at returns up to n bytes at pos (fewer at the limit). n must be at most
// len(w.buf).
func (w *window) at(pos int64, n int) ([]byte, error) {
	if pos+int64(n) > w.limit {
		n = int(w.limit - pos)
	}
	if n <= 0 {
		return nil, nil
	}
	if pos >= w.start && pos+int64(n) <= w.start+int64(w.n) {
		i := int(pos - w.start)
		return w.buf[i : i+n], nil
	}
	want := len(w.buf)
	if pos+int64(want) > w.limit {
		want = int(w.limit - pos)
	}
	m, err := w.r.ReadAt(w.buf[:want], pos)
	if m < want {
		if err == nil || errors.Is(err, io.EOF) {
			// the file is shorter than the caller believed
			w.limit = pos + int64(m)
			err = nil
		}
	}
	w.start, w.n = pos, m
	if err != nil {
		w.n = 0
		return nil, err
	}
	if n > m {
		n = m
	}
	return w.buf[:n], nil
}

// frameAt validates the frame starting at pos: magic, header sanity,
// length within the limit and CRC. It does not judge the offset.
func (w *window) frameAt(pos int64) (frameHeader, bool, error) {
	b, err := w.at(pos, frameHeaderSize)
	if err != nil || len(b) < frameHeaderSize {
		return frameHeader{}, false, err
	}
	h, ok := parseFrameHeader(b)
	if !ok || pos+h.size() > w.limit {
		return frameHeader{}, false, nil
	}
	c := crc32.Update(0, crcTable, b[8:frameHeaderSize])
	p, rest := pos+frameHeaderSize, int64(h.length)
	for rest > 0 {
		n := len(w.buf)
		if int64(n) > rest {
			n = int(rest)
		}
		chunk, err := w.at(p, n)
		if err != nil {
			return frameHeader{}, false, err
		}
		if len(chunk) == 0 {
			return frameHeader{}, false, nil
		}
		c = crc32.Update(c, crcTable, chunk)
		p += int64(len(chunk))
		rest -= int64(len(chunk))
	}
	return h, c == h.crc, nil
}

// plausible reports whether a frame found by resynchronisation at q, after
// a bad span starting at from, can be the next frame when the next expected
// offset is expect: its offset is not behind, and the offsets it skips could
// have been held by the bytes skipped.
func plausible(h frameHeader, expect uint64, from, q int64) bool {
	if h.offset < expect {
		return false
	}
	return (h.offset-expect)*frameHeaderSize <= uint64(q-from)
}

var magicBytes = func() []byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], frameMagic)
	return b[:]
}()

// resync looks for the first valid, plausible frame after the bad frame at
// from. It returns its position and header, or ok == false if there is none
// before the limit.
func (w *window) resync(from int64, expect uint64) (int64, frameHeader, bool, error) {
	pos := from + 1
	for pos+frameHeaderSize <= w.limit {
		n := len(w.buf)
		b, err := w.at(pos, n)
		if err != nil {
			return 0, frameHeader{}, false, err
		}
		if len(b) < frameHeaderSize {
			break
		}
		i := bytes.Index(b, magicBytes)
		if i < 0 {
			pos += int64(len(b) - len(magicBytes) + 1)
			continue
		}
		q := pos + int64(i)
		h, ok, err := w.frameAt(q)
		if err != nil {
			return 0, frameHeader{}, false, err
		}
		if ok && plausible(h, expect, from, q) {
			return q, h, true, nil
		}
		pos = q + 1
	}
	return 0, frameHeader{}, false, nil
}

// badSpan is a run of bytes in a segment that holds no valid frame.
type badSpan struct {
	start, end int64  // byte range in the segment
	firstLost  uint64 // first offset lost in it
	lost       uint64 // offsets lost (0 when unknown)
	torn       bool   // runs to the end of the data: a torn tail
}

type indexEntry struct {
	off uint64
	pos int64
}

// scanResult describes one segment read from end to end.
type scanResult struct {
	headerBad bool
	headerErr error // unknown version
	validEnd  int64 // end of the last valid frame (or of the header)
	records   int64 // data frames
	events    uint64
	dataBytes int64 // bytes of data frames
	firstOff  uint64
	next      uint64 // offset after the last frame (base when empty)
	hasFrames bool
	knownLost uint64 // offsets covered by lost markers
	bad       []badSpan
	index     []indexEntry
	shortHead bool // file shorter than a header
	fileSize  int64
	version   uint16 // header version, 0 when the header is bad
	maxEpoch  uint32 // highest frame epoch seen
	// reused: the header says the file was a consumed segment before
	// (segFlagReused), so past its records it may hold bytes of that use.
	// staleHeader: the header is an intact one of a lower base, the file
	// a spare renamed to this segment whose new header never reached the
	// disk; no record of this segment can be in it (see roll).
	reused, staleHeader bool
}

// frameFunc is called for every valid frame a scan meets, in order.
type frameFunc func(pos int64, h frameHeader) error

// scanSegment reads a whole segment: header, then every frame, resyncing
// over bad spans. A bad span at the end is marked torn. fn may be nil.
func scanSegment(r io.ReaderAt, size int64, base uint64, fn frameFunc) (scanResult, error) {
	res := scanResult{fileSize: size, next: base, firstOff: base, validEnd: segHeaderSize}
	if size < segHeaderSize {
		res.shortHead = true
		res.validEnd = 0
		return res, nil
	}
	w := newWindow(r, size, 1<<20)
	hb, err := w.at(0, segHeaderSize)
	if err != nil {
		return res, err
	}
	if len(hb) < segHeaderSize {
		res.shortHead = true
		res.validEnd = 0
		return res, nil
	}
	h, herr := parseSegHeader(hb)
	switch {
	case errors.Is(herr, errUnknownVersion):
		res.headerErr = herr
		return res, nil
	case herr == nil && h.base < base:
		res.staleHeader = true
	case herr != nil || h.base != base:
		res.headerBad = true
	default:
		res.version = h.version
		res.reused = h.flags&segFlagReused != 0
	}
	pos := int64(segHeaderSize)
	expect := base
	lastIndexed := int64(-indexEvery)
	for pos < w.limit {
		fh, ok, err := w.frameAt(pos)
		if err != nil {
			return res, err
		}
		if ok && fh.offset < expect {
			ok = false
		}
		if !ok {
			q, nh, found, err := w.resync(pos, expect)
			if err != nil {
				return res, err
			}
			if !found {
				res.bad = append(res.bad, badSpan{start: pos, end: w.limit, firstLost: expect, torn: true})
				break
			}
			res.bad = append(res.bad, badSpan{start: pos, end: q, firstLost: expect, lost: nh.offset - expect})
			pos, fh = q, nh
		}
		if pos-lastIndexed >= indexEvery {
			res.index = append(res.index, indexEntry{off: fh.offset, pos: pos})
			lastIndexed = pos
		}
		if fn != nil {
			if err := fn(pos, fh); err != nil {
				return res, err
			}
		}
		if !res.hasFrames {
			res.firstOff = fh.offset
			res.hasFrames = true
		}
		res.maxEpoch = max(res.maxEpoch, fh.epoch)
		if fh.flags&flagLost != 0 {
			res.knownLost += uint64(fh.count)
			expect = fh.offset + uint64(fh.count)
		} else {
			res.records++
			res.events += uint64(fh.count)
			res.dataBytes += fh.size()
			expect = fh.offset + 1
		}
		pos += fh.size()
		res.validEnd = pos
	}
	res.next = expect
	return res, nil
}
