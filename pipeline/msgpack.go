package pipeline

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
	pos := 0
	remaining := 1 // values still to skip
	for remaining > 0 {
		if pos >= len(b) {
			return 0, ErrShortBuffer
		}
		remaining--
		c := b[pos]
		var size, children int // bytes after the type byte(s), child values
		hdr := 1
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			children = 2 * int(c&0x0f)
		case c >= 0x90 && c <= 0x9f:
			children = int(c & 0x0f)
		case c >= 0xa0 && c <= 0xbf:
			size = int(c & 0x1f)
		default:
			var n int
			var err error
			switch c {
			case 0xc1:
				return 0, fmt.Errorf("%w: byte 0xc1 at %d", ErrMalformed, pos)
			case 0xc4, 0xd9: // bin8, str8
				n, err = lenAt(b, pos+1, 1)
				hdr, size = 2, n
			case 0xc5, 0xda:
				n, err = lenAt(b, pos+1, 2)
				hdr, size = 3, n
			case 0xc6, 0xdb:
				n, err = lenAt(b, pos+1, 4)
				hdr, size = 5, n
			case 0xc7: // ext8
				n, err = lenAt(b, pos+1, 1)
				hdr, size = 3, n
			case 0xc8:
				n, err = lenAt(b, pos+1, 2)
				hdr, size = 4, n
			case 0xc9:
				n, err = lenAt(b, pos+1, 4)
				hdr, size = 6, n
			case 0xca, 0xce, 0xd2:
				size = 4
			case 0xcb, 0xcf, 0xd3:
				size = 8
			case 0xcc, 0xd0:
				size = 1
			case 0xcd, 0xd1:
				size = 2
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
				children, err = lenAt(b, pos+1, 2)
				hdr = 3
			case 0xdd:
				children, err = lenAt(b, pos+1, 4)
				hdr = 5
			case 0xde:
				n, err = lenAt(b, pos+1, 2)
				hdr, children = 3, 2*n
			case 0xdf:
				n, err = lenAt(b, pos+1, 4)
				hdr, children = 5, 2*n
			}
			if err != nil {
				return 0, err
			}
		}
		// Compared before adding, so a huge declared length cannot wrap
		// pos around on 32-bit platforms.
		if hdr+size > len(b)-pos {
			return 0, ErrShortBuffer
		}
		pos += hdr + size
		// Every value takes at least one byte, so a container claiming more
		// children than there can be bytes left is only truncated if the
		// stream goes on; callers bound frame sizes, so treat it as short.
		remaining += children
		if remaining < 0 || remaining > math.MaxInt32 {
			return 0, fmt.Errorf("%w: container too large", ErrMalformed)
		}
	}
	return pos, nil
}

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

// AppendEntry appends one [time, record] entry with the time as EventTime;
// record must be the msgpack encoding of a map.
func AppendEntry(dst []byte, t EventTime, record []byte) []byte {
	dst = append(dst, 0x92)
	dst = t.AppendMsgpack(dst)
	return append(dst, record...)
}

// AppendMapHeader appends a msgpack map header for n pairs.
func AppendMapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xde, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdf), uint32(n))
}

// AppendArrayHeader appends a msgpack array header for n elements.
func AppendArrayHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return append(dst, 0xdc, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

// AppendString appends s as a msgpack str.
func AppendString(dst []byte, s string) []byte { return appendStr(dst, s) }

// AppendStringBytes is AppendString for a byte slice, without a copy to a
// string.
func AppendStringBytes(dst, s []byte) []byte { return appendStr(dst, s) }

func appendStr[T string | []byte](dst []byte, s T) []byte {
	switch n := len(s); {
	case n < 32:
		dst = append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		dst = append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		dst = append(dst, 0xda, byte(n>>8), byte(n))
	default:
		dst = binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
	}
	return append(dst, s...)
}

// AppendInt appends v in its shortest msgpack form.
func AppendInt(dst []byte, v int64) []byte {
	switch {
	case v >= 0 && v <= 0x7f:
		return append(dst, byte(v))
	case v < 0 && v >= -32:
		return append(dst, byte(v))
	case v >= math.MinInt8 && v <= math.MaxInt8:
		return append(dst, 0xd0, byte(v))
	case v >= math.MinInt16 && v <= math.MaxInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
}
