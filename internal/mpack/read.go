package mpack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrShortBuffer is returned by the msgpack scanners when b ends inside a
// value: more bytes are needed (a streaming reader reads more and retries).
var ErrShortBuffer = errors.New("msgpack: value truncated")

// ErrMalformed reports bytes that are not msgpack at all (the never-used
// byte 0xc1), a length beyond what a value may have, or a value of the
// wrong type where a header, string or time is expected.
var ErrMalformed = errors.New("msgpack: malformed value")

// SkipValue returns the length in bytes of the one msgpack value at the
// start of b, without decoding it and without allocating. It is iterative,
// so deeply nested input cannot exhaust the stack.
func SkipValue(b []byte) (int, error) {
	n, _, err := SkipCount(b)
	return n, err
}

// SkipCount is SkipValue that also returns how many maps and arrays the
// value holds, itself included: a value with no more of them than d cannot
// nest deeper than d levels, which a caller bounding depth learns for next
// to nothing (see the forward protocol's decoder).
func SkipCount(b []byte) (n, containers int, err error) {
	pos := 0
	remaining := 1 // values still to skip
	for remaining > 0 {
		if pos >= len(b) {
			return 0, 0, ErrShortBuffer
		}
		remaining--
		c := b[pos]
		// Most of any record first, each in a branch the CPU predicts well
		// (entries of one chunk have the same shape), so a value costs
		// little more than loading its first byte.
		switch {
		case c <= 0x7f || c >= 0xe0: // fixint
			pos++
			continue
		case c <= 0x8f: // fixmap
			pos++
			remaining += 2 * int(c&0x0f)
			containers++
			continue
		case c <= 0x9f: // fixarray
			pos++
			remaining += int(c & 0x0f)
			containers++
			continue
		case c <= 0xbf: // fixstr: checked at the next value or at the end
			pos += 1 + int(c&0x1f)
			continue
		case c == 0xd9: // str8: a log line of 32 to 255 bytes
			if len(b)-pos < 2 {
				return 0, 0, ErrShortBuffer
			}
			l := 2 + int(b[pos+1])
			if l > len(b)-pos {
				return 0, 0, ErrShortBuffer
			}
			pos += l
			continue
		}
		// Every other value of a length its first byte tells (nil, bools,
		// ints, floats, fixext, EventTime).
		if l := int(fixedLen[c]); l != 0 {
			if l > len(b)-pos {
				return 0, 0, ErrShortBuffer
			}
			pos += l
			continue
		}
		if c == 0xc1 {
			return 0, 0, fmt.Errorf("%w: byte 0xc1 at %d", ErrMalformed, pos)
		}
		// The rest: a length field of 1, 2 or 4 bytes after the type byte.
		var lw int // width of the length field
		switch c {
		case 0xc4, 0xd9, 0xc7:
			lw = 1
		case 0xc5, 0xda, 0xc8, 0xdc, 0xde:
			lw = 2
		default: // 0xc6, 0xdb, 0xc9, 0xdd, 0xdf
			lw = 4
		}
		if pos+1+lw > len(b) {
			return 0, 0, ErrShortBuffer
		}
		var l int
		switch lw {
		case 1:
			l = int(b[pos+1])
		case 2:
			l = int(binary.BigEndian.Uint16(b[pos+1:]))
		default:
			v := binary.BigEndian.Uint32(b[pos+1:])
			if v > math.MaxInt32 {
				return 0, 0, errLength
			}
			l = int(v)
		}
		hdr, size := 1+lw, 0 // header length, payload bytes after it
		switch c {
		case 0xc7, 0xc8, 0xc9:
			hdr, size = hdr+1, l // ext: a type byte after the length
		case 0xdc, 0xdd, 0xde, 0xdf:
			if c >= 0xde { // pairs
				if l > math.MaxInt32/2 {
					return 0, 0, errTooLarge
				}
				l *= 2
			}
			// Every value takes at least one byte, so a container
			// claiming more children than there can be bytes left
			// is only truncated if the stream goes on; callers
			// bound frame sizes, so it is short, unless no int32
			// could count it.
			if remaining += l; remaining < 0 || remaining > math.MaxInt32 {
				return 0, 0, errTooLarge
			}
			containers++
		default:
			size = l
		}
		// Compared before adding, so a huge declared length cannot wrap
		// pos around on 32-bit platforms.
		if size > len(b)-pos-hdr {
			return 0, 0, ErrShortBuffer
		}
		pos += hdr + size
	}
	if pos > len(b) { // a fixstr ran past the end
		return 0, 0, ErrShortBuffer
	}
	return pos, containers, nil
}

// fixedLen is, for every first byte of a msgpack value whose length it
// alone tells, that length (header included); 0 for maps, arrays, strings,
// bins and exts with a length field, and 0xc1.
var fixedLen = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
			t[c] = 1
		case c >= 0xa0 && c <= 0xbf: // fixstr
			t[c] = uint8(1 + c&0x1f)
		}
	}
	for _, f := range []struct {
		l  uint8
		cs []int
	}{
		{1, []int{0xc0, 0xc2, 0xc3}}, // nil, false, true
		{2, []int{0xcc, 0xd0}},       // uint8, int8
		{3, []int{0xcd, 0xd1, 0xd4}}, // uint16, int16, fixext1
		{4, []int{0xd5}},             // fixext2
		{5, []int{0xca, 0xce, 0xd2}}, // float32, uint32, int32
		{6, []int{0xd6}},             // fixext4
		{9, []int{0xcb, 0xcf, 0xd3}}, // float64, uint64, int64
		{10, []int{0xd7}},            // fixext8: EventTime
		{18, []int{0xd8}},            // fixext16
	} {
		for _, c := range f.cs {
			t[c] = f.l
		}
	}
	return t
}()

// SkipCount's errors for lengths beyond int32, preallocated: formatting
// them in the loop costs the common path.
var (
	errLength   = fmt.Errorf("%w: a length beyond 2^31-1", ErrMalformed)
	errTooLarge = fmt.Errorf("%w: container too large", ErrMalformed)
)

func lenAt(b []byte, at, width int) (int, error) {
	if at+width > len(b) {
		return 0, ErrShortBuffer
	}
	switch width {
	case 1:
		return int(b[at]), nil
	case 2:
		return int(binary.BigEndian.Uint16(b[at:])), nil
	default:
		v := binary.BigEndian.Uint32(b[at:])
		if uint64(v) > math.MaxInt32 {
			return 0, fmt.Errorf("%w: length %d", ErrMalformed, v)
		}
		return int(v), nil
	}
}

// ReadArrayHeader reads an array header at the start of b and returns the
// element count and the header's length.
func ReadArrayHeader(b []byte) (n, hdr int, err error) {
	if len(b) == 0 {
		return 0, 0, ErrShortBuffer
	}
	switch c := b[0]; {
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), 1, nil
	case c == 0xdc:
		n, err = lenAt(b, 1, 2)
		return n, 3, err
	case c == 0xdd:
		n, err = lenAt(b, 1, 4)
		return n, 5, err
	}
	return 0, 0, fmt.Errorf("%w: want array, got 0x%02x", ErrMalformed, b[0])
}

// ReadMapHeader reads a map header at the start of b and returns the pair
// count and the header's length.
func ReadMapHeader(b []byte) (n, hdr int, err error) {
	if len(b) == 0 {
		return 0, 0, ErrShortBuffer
	}
	switch c := b[0]; {
	case c >= 0x80 && c <= 0x8f:
		return int(c & 0x0f), 1, nil
	case c == 0xde:
		n, err = lenAt(b, 1, 2)
		return n, 3, err
	case c == 0xdf:
		n, err = lenAt(b, 1, 4)
		return n, 5, err
	}
	return 0, 0, fmt.Errorf("%w: want map, got 0x%02x", ErrMalformed, b[0])
}

// ReadString reads a str (or bin) value at the start of b and returns its
// bytes (aliasing b) and the total length consumed.
func ReadString(b []byte) (s []byte, n int, err error) {
	if len(b) == 0 {
		return nil, 0, ErrShortBuffer
	}
	var l, hdr int
	switch c := b[0]; {
	case c >= 0xa0 && c <= 0xbf:
		l, hdr = int(c&0x1f), 1
	case c == 0xd9 || c == 0xc4:
		l, err = lenAt(b, 1, 1)
		hdr = 2
	case c == 0xda || c == 0xc5:
		l, err = lenAt(b, 1, 2)
		hdr = 3
	case c == 0xdb || c == 0xc6:
		l, err = lenAt(b, 1, 4)
		hdr = 5
	default:
		return nil, 0, fmt.Errorf("%w: want string, got 0x%02x", ErrMalformed, c)
	}
	if err != nil {
		return nil, 0, err
	}
	if hdr+l > len(b) {
		return nil, 0, ErrShortBuffer
	}
	return b[hdr : hdr+l], hdr + l, nil
}

// ReadTime decodes a time the way the pipeline stores it: an integer
// (seconds, any width), an EventTime ext 0 (fixext8 or ext8) or a float
// (seconds). It returns the time and the bytes consumed.
func ReadTime(b []byte) (EventTime, int, error) {
	if len(b) == 0 {
		return EventTime{}, 0, ErrShortBuffer
	}
	c := b[0]
	need := func(n int) error {
		if len(b) < n {
			return ErrShortBuffer
		}
		return nil
	}
	switch {
	case c <= 0x7f:
		return EventTime{Sec: uint32(c)}, 1, nil
	case c >= 0xe0 || c == 0xc0: // negative fixint or nil: "now" is the caller's call
		return EventTime{}, 1, nil
	}
	switch c {
	case 0xcc, 0xd0:
		if err := need(2); err != nil {
			return EventTime{}, 0, err
		}
		v := int64(b[1])
		if c == 0xd0 {
			v = int64(int8(b[1]))
		}
		return secs(v), 2, nil
	case 0xcd, 0xd1:
		if err := need(3); err != nil {
			return EventTime{}, 0, err
		}
		v := int64(binary.BigEndian.Uint16(b[1:]))
		if c == 0xd1 {
			v = int64(int16(binary.BigEndian.Uint16(b[1:])))
		}
		return secs(v), 3, nil
	case 0xce, 0xd2:
		if err := need(5); err != nil {
			return EventTime{}, 0, err
		}
		v := int64(binary.BigEndian.Uint32(b[1:]))
		if c == 0xd2 {
			v = int64(int32(binary.BigEndian.Uint32(b[1:])))
		}
		return secs(v), 5, nil
	case 0xcf, 0xd3:
		if err := need(9); err != nil {
			return EventTime{}, 0, err
		}
		u := binary.BigEndian.Uint64(b[1:])
		if c == 0xcf && u > math.MaxInt64 {
			return EventTime{Sec: math.MaxUint32}, 9, nil
		}
		return secs(int64(u)), 9, nil
	case 0xca:
		if err := need(5); err != nil {
			return EventTime{}, 0, err
		}
		return floatTime(float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:])))), 5, nil
	case 0xcb:
		if err := need(9); err != nil {
			return EventTime{}, 0, err
		}
		return floatTime(math.Float64frombits(binary.BigEndian.Uint64(b[1:]))), 9, nil
	case 0xd7:
		if err := need(10); err != nil {
			return EventTime{}, 0, err
		}
		if b[1] != EventTimeExtType {
			return EventTime{}, 0, fmt.Errorf("%w: ext type %d is not EventTime", ErrMalformed, int8(b[1]))
		}
		t, err := ParseEventTimeExt(b[2:10])
		if err != nil {
			return t, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return t, 10, nil
	case 0xc7:
		if err := need(3); err != nil {
			return EventTime{}, 0, err
		}
		if b[1] != 8 || b[2] != EventTimeExtType {
			return EventTime{}, 0, fmt.Errorf("%w: ext8 of %d bytes, type %d is not EventTime", ErrMalformed, b[1], int8(b[2]))
		}
		if err := need(11); err != nil {
			return EventTime{}, 0, err
		}
		t, err := ParseEventTimeExt(b[3:11])
		if err != nil {
			return t, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return t, 11, nil
	}
	return EventTime{}, 0, errNotATime
}

// errNotATime is preallocated: probing whether a value is a time costs no
// allocation.
var errNotATime = fmt.Errorf("%w: not a time", ErrMalformed)

func secs(v int64) EventTime {
	switch {
	case v < 0:
		return EventTime{}
	case v > math.MaxUint32:
		return EventTime{Sec: math.MaxUint32}
	}
	return EventTime{Sec: uint32(v)}
}

func floatTime(f float64) EventTime {
	if math.IsNaN(f) || f < 0 {
		return EventTime{}
	}
	if f >= math.MaxUint32 {
		return EventTime{Sec: math.MaxUint32}
	}
	s := math.Floor(f)
	ns := math.Round((f - s) * 1e9)
	if ns >= 1e9 {
		s, ns = s+1, 0
	}
	return EventTime{Sec: uint32(s), Nsec: uint32(ns)}
}

// NextEntry reads one stored entry, a msgpack [time, record] array, at the
// start of entries. It returns the time, the record's raw msgpack bytes
// (aliasing entries) and the bytes consumed. The record must be a map.
func NextEntry(entries []byte) (t EventTime, record []byte, n int, err error) {
	cnt, hdr, err := ReadArrayHeader(entries)
	if err != nil {
		return t, nil, 0, err
	}
	if cnt != 2 {
		return t, nil, 0, fmt.Errorf("%w: entry is an array of %d, want [time, record]", ErrMalformed, cnt)
	}
	t, tn, err := ReadTime(entries[hdr:])
	if err != nil {
		return t, nil, 0, err
	}
	off := hdr + tn
	rn, err := SkipValue(entries[off:])
	if err != nil {
		return t, nil, 0, err
	}
	record = entries[off : off+rn]
	if _, _, err := ReadMapHeader(record); err != nil {
		return t, nil, 0, fmt.Errorf("record: %w", err)
	}
	return t, record, off + rn, nil
}

// ForEachEntry calls fn for every entry of a chunk's entries, in order.
func ForEachEntry(entries []byte, fn func(t EventTime, record []byte) error) error {
	for len(entries) > 0 {
		t, rec, n, err := NextEntry(entries)
		if err != nil {
			return err
		}
		if err := fn(t, rec); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}
