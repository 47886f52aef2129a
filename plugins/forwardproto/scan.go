package forwardproto

import (
	"encoding/binary"
	"fmt"

	"github.com/logship/logship/internal/mpack"
)

// The framers find where one top-level value ends in a stream that arrives
// in pieces. They keep their position between calls, so a frame is scanned
// once however it is split, and they know a frame's minimum length as soon
// as its headers arrive, so an oversized frame fails before it is buffered.
// mpack.SkipValue, which needs the whole value, parses frames once they
// are complete.

// msgFramer frames one msgpack value.
type msgFramer struct {
	pos       int // bytes of the frame accounted for, may run past the buffer
	remaining int // values still to skip; 0 when idle
}

func (s *msgFramer) reset() { *s = msgFramer{} }

// scan continues over b, the frame's bytes so far. It returns the frame's
// length once it is complete, or else the number of bytes it needs before it
// can go on (more than len(b)): the next byte, or the end of a header or of
// a str, bin or ext payload, never more, so that whatever arrives is scanned
// as it arrives and a stream is judged the same however it is split. A frame longer than max fails with
// ErrFrameTooLarge; byte 0xc1 fails with ErrMalformed.
func (s *msgFramer) scan(b []byte, max int) (n, need int, err error) {
	if s.remaining == 0 && s.pos == 0 {
		s.remaining = 1
	}
	for s.remaining > 0 {
		if s.pos >= len(b) {
			return 0, s.pos + 1, nil
		}
		c := b[s.pos]
		var hdr, lw int    // header length, width of its length field
		var size int64     // payload bytes after the header
		var per int64      // children per counted unit (arrays 1, maps 2)
		var children int64 // child values
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			hdr = 1
		case c <= 0x8f:
			hdr, children = 1, 2*int64(c&0x0f)
		case c <= 0x9f:
			hdr, children = 1, int64(c&0x0f)
		case c <= 0xbf:
			hdr, size = 1, int64(c&0x1f)
		default:
			switch c {
			case 0xc1:
				return 0, 0, fmt.Errorf("%w: byte 0xc1 at offset %d", ErrMalformed, s.pos)
			case 0xc4, 0xd9:
				hdr, lw = 2, 1
			case 0xc5, 0xda:
				hdr, lw = 3, 2
			case 0xc6, 0xdb:
				hdr, lw = 5, 4
			case 0xc7:
				hdr, lw = 3, 1
			case 0xc8:
				hdr, lw = 4, 2
			case 0xc9:
				hdr, lw = 6, 4
			case 0xcc, 0xd0:
				hdr, size = 1, 1
			case 0xcd, 0xd1:
				hdr, size = 1, 2
			case 0xca, 0xce, 0xd2:
				hdr, size = 1, 4
			case 0xcb, 0xcf, 0xd3:
				hdr, size = 1, 8
			case 0xd4:
				hdr, size = 2, 1
			case 0xd5:
				hdr, size = 2, 2
			case 0xd6:
				hdr, size = 2, 4
			case 0xd7:
				hdr, size = 2, 8
			case 0xd8:
				hdr, size = 2, 16
			case 0xdc:
				hdr, lw, per = 3, 2, 1
			case 0xdd:
				hdr, lw, per = 5, 4, 1
			case 0xde:
				hdr, lw, per = 3, 2, 2
			case 0xdf:
				hdr, lw, per = 5, 4, 2
			}
		}
		if lw > 0 {
			if s.pos+1+lw > len(b) {
				return 0, s.pos + 1 + lw, nil
			}
			var l int64
			switch lw {
			case 1:
				l = int64(b[s.pos+1])
			case 2:
				l = int64(binary.BigEndian.Uint16(b[s.pos+1:]))
			default:
				l = int64(binary.BigEndian.Uint32(b[s.pos+1:]))
			}
			if per > 0 {
				children = per * l
			} else {
				size = l
			}
		}
		// Every value still to come takes at least one byte.
		min := int64(s.pos) + int64(hdr) + size + int64(s.remaining-1) + children
		if min > int64(max) {
			return 0, 0, fmt.Errorf("%w: a frame of at least %d bytes, limit %d", ErrFrameTooLarge, min, max)
		}
		s.pos += hdr + int(size)
		s.remaining += int(children) - 1
	}
	if s.pos > len(b) {
		return 0, s.pos, nil
	}
	n = s.pos
	s.reset()
	return n, 0, nil
}

// jsonFramer frames one JSON array or object. It only tracks strings and
// nesting; encoding/json checks the syntax once the frame is complete.
type jsonFramer struct {
	pos   int
	depth int
	inStr bool
	esc   bool
}

func (s *jsonFramer) reset() { *s = jsonFramer{} }

// scan is msgFramer.scan for JSON.
func (s *jsonFramer) scan(b []byte, max int) (n, need int, err error) {
	for ; s.pos < len(b); s.pos++ {
		c := b[s.pos]
		if s.inStr {
			switch {
			case s.esc:
				s.esc = false
			case c == '\\':
				s.esc = true
			case c == '"':
				s.inStr = false
			}
			continue
		}
		switch c {
		case '"':
			s.inStr = true
		case '[', '{':
			s.depth++
		case ']', '}':
			s.depth--
			if s.depth == 0 {
				n = s.pos + 1
				s.reset()
				return n, 0, nil
			}
		}
		if s.depth <= 0 {
			return 0, 0, fmt.Errorf("%w: JSON value at offset %d is not an array or object", ErrMalformed, s.pos)
		}
	}
	if s.pos >= max {
		return 0, 0, fmt.Errorf("%w: a JSON frame of more than %d bytes", ErrFrameTooLarge, max)
	}
	return 0, s.pos + 1, nil
}

// skipRecord returns the length of the one msgpack value at the start of b,
// as mpack.SkipValue does, and reports whether maps and arrays nest in it
// more than maxDepth levels (see skipDepth). It first counts the maps and
// arrays while it skips, which costs next to nothing: a value with no more
// of them than maxDepth cannot nest deeper. Only a value with more is walked
// again by skipDepth to measure its depth. Both walks are linear.
func skipRecord(b []byte, maxDepth int, stack []int) (n int, tooDeep bool, err error) {
	n, containers, err := mpack.SkipCount(b)
	if err != nil || containers <= maxDepth {
		return n, false, err
	}
	if _, tooDeep, err = skipDepth(b[:n], maxDepth, stack); tooDeep || err != nil {
		return 0, tooDeep, err
	}
	return n, false, nil
}

// skipDepth returns the length of the one msgpack value at the start of b,
// as mpack.SkipValue does, and reports whether maps and arrays nest in
// it more than maxDepth levels (the value itself, when it is a map or an
// array, is level 1). It is iterative and reads every byte at most once, so
// its time is linear in the value's length whatever the nesting. stack holds,
// for every open container, the values still to skip in its parent: it must
// have room for maxDepth entries. On tooDeep n is 0: the caller skips the
// value with mpack.SkipValue, which is linear too.
func skipDepth(b []byte, maxDepth int, stack []int) (n int, tooDeep bool, err error) {
	pos, remaining, depth := 0, 1, 0
	for {
		for remaining == 0 {
			if depth == 0 {
				if pos > len(b) {
					return 0, false, mpack.ErrShortBuffer
				}
				return pos, false, nil
			}
			depth--
			remaining = stack[depth]
		}
		if pos >= len(b) {
			return 0, false, mpack.ErrShortBuffer
		}
		remaining--
		c := b[pos]
		var children int
		switch {
		case c <= 0x7f || c >= 0xe0:
			pos++
			continue
		case c <= 0x8f:
			pos++
			children = 2 * int(c&0x0f)
		case c <= 0x9f:
			pos++
			children = int(c & 0x0f)
		case c <= 0xbf:
			pos += 1 + int(c&0x1f)
			continue
		default:
			var hdr, size int
			container := false
			switch c {
			case 0xc0, 0xc2, 0xc3:
				hdr = 1
			case 0xc1:
				return 0, false, fmt.Errorf("%w: byte 0xc1 at %d", mpack.ErrMalformed, pos)
			case 0xcc, 0xd0:
				hdr, size = 1, 1
			case 0xcd, 0xd1:
				hdr, size = 1, 2
			case 0xca, 0xce, 0xd2:
				hdr, size = 1, 4
			case 0xcb, 0xcf, 0xd3:
				hdr, size = 1, 8
			case 0xd4:
				hdr, size = 2, 1
			case 0xd5:
				hdr, size = 2, 2
			case 0xd6:
				hdr, size = 2, 4
			case 0xd7:
				hdr, size = 2, 8
			case 0xd8:
				hdr, size = 2, 16
			default:
				var lw int
				switch c {
				case 0xc4, 0xd9:
					hdr, lw = 2, 1
				case 0xc5, 0xda:
					hdr, lw = 3, 2
				case 0xc6, 0xdb:
					hdr, lw = 5, 4
				case 0xc7:
					hdr, lw = 3, 1
				case 0xc8:
					hdr, lw = 4, 2
				case 0xc9:
					hdr, lw = 6, 4
				case 0xdc, 0xde:
					hdr, lw, container = 3, 2, true
				case 0xdd, 0xdf:
					hdr, lw, container = 5, 4, true
				}
				if pos+1+lw > len(b) {
					return 0, false, mpack.ErrShortBuffer
				}
				var l int
				switch lw {
				case 1:
					l = int(b[pos+1])
				case 2:
					l = int(binary.BigEndian.Uint16(b[pos+1:]))
				default:
					l = int(binary.BigEndian.Uint32(b[pos+1:]))
				}
				if c == 0xc7 || c == 0xc8 || c == 0xc9 {
					size = l // ext: the type byte is counted in hdr
				} else if container {
					children = l
					if c == 0xde || c == 0xdf {
						children *= 2
					}
				} else {
					size = l
				}
			}
			if size > len(b)-pos-hdr {
				return 0, false, mpack.ErrShortBuffer
			}
			pos += hdr + size
			if !container {
				continue
			}
		}
		// A map or an array opens: one level deeper.
		if depth >= maxDepth {
			return 0, true, nil
		}
		if children > 0 {
			stack[depth] = remaining
			depth++
			remaining = children
		}
	}
}
