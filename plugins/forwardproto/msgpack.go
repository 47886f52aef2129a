package forwardproto

import (
	"encoding/binary"
	"math"
)

// Minimal msgpack writers. The readers come from package pipeline.

func appendArrayHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x90|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xdc), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdd), uint32(n))
}

func appendMapHeader(dst []byte, n int) []byte {
	switch {
	case n < 16:
		return append(dst, 0x80|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xde), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdf), uint32(n))
}

func appendStrHeader(dst []byte, n int) []byte {
	switch {
	case n < 32:
		return append(dst, 0xa0|byte(n))
	case n <= math.MaxUint8:
		return append(dst, 0xd9, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xda), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xdb), uint32(n))
}

func appendStr(dst []byte, s string) []byte {
	return append(appendStrHeader(dst, len(s)), s...)
}

func appendStrBytes(dst, s []byte) []byte {
	return append(appendStrHeader(dst, len(s)), s...)
}

func appendBinHeader(dst []byte, n int) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(dst, 0xc4, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xc5), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(dst, 0xc6), uint32(n))
}

func appendBin(dst, b []byte) []byte {
	return append(appendBinHeader(dst, len(b)), b...)
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 0xc3)
	}
	return append(dst, 0xc2)
}

func appendUint(dst []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(dst, byte(v))
	case v <= math.MaxUint8:
		return append(dst, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(dst, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(dst, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcf), v)
}

func appendInt(dst []byte, v int64) []byte {
	switch {
	case v >= 0:
		return appendUint(dst, uint64(v))
	case v >= -32:
		return append(dst, byte(v))
	case v >= math.MinInt8:
		return append(dst, 0xd0, byte(v))
	case v >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(dst, 0xd1), uint16(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(dst, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xd3), uint64(v))
}

func appendFloat64(dst []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(f))
}

// reserve5 appends a 5-byte placeholder for a header written later by
// patchHeader, and returns its offset.
func reserve5(dst []byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0, 0), len(dst)
}

// Header families for patchHeader.
const (
	famArray = iota
	famMap
	famBin
)

// patchHeader writes, at the placeholder at, the smallest header of family
// fam for n (elements, pairs or bytes) and closes the gap behind it.
func patchHeader(dst []byte, at int, fam int, n int) []byte {
	var h [5]byte
	var hl int
	switch fam {
	case famArray:
		hl = len(appendArrayHeader(h[:0], n))
	case famMap:
		hl = len(appendMapHeader(h[:0], n))
	default:
		hl = len(appendBinHeader(h[:0], n))
	}
	copy(dst[at:], h[:hl])
	if hl < 5 {
		copy(dst[at+hl:], dst[at+5:])
		dst = dst[:len(dst)-(5-hl)]
	}
	return dst
}

func isMapByte(c byte) bool   { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }
func isArrayByte(c byte) bool { return c&0xf0 == 0x90 || c == 0xdc || c == 0xdd }
func isStrOrBin(c byte) bool {
	return c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6)
}
