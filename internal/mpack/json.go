package mpack

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// JSONField is an extra field AppendRecordJSON adds to a record, such as
// the tag or the time; a record field of the same name is left out.
type JSONField struct {
	Key   string
	Value string // written as a JSON string
}

// MaxJSONDepth is how deeply maps and arrays may nest in a record rendered
// as JSON, the record itself being depth 1. A map or array deeper than that
// is written as the string JSONTooDeep instead, so that rendering stays
// linear in the record's size and bounded in memory whatever a producer
// sent (Fluent Bit's and Vector's JSON encoders have similar limits).
const MaxJSONDepth = 128

// JSONTooDeep is the string written in place of a map or array nested
// deeper than MaxJSONDepth.
const JSONTooDeep = "[logship: nested deeper than 128 levels, left out]"

// jsonNestedKey is the key written for a map or array used as a map key
// inside a key: keys are rendered as the JSON text of their value, once.
const jsonNestedKey = "[logship: nested map key]"

// AppendRecordJSON appends the msgpack map record as one JSON object,
// without reflection. Extra fields come first. bin values are written as
// strings when they are valid UTF-8 (Fluent Bit does the same) and as
// base64 otherwise; EventTime values as RFC 3339 strings; map keys that
// are not strings as their JSON text in a string. Maps and arrays nested
// deeper than MaxJSONDepth are written as the string JSONTooDeep. It takes
// time and memory linear in the record's size, whatever its nesting.
func AppendRecordJSON(dst, record []byte, extra ...JSONField) ([]byte, error) {
	dst, _, err := AppendRecordJSONCut(dst, record, extra...)
	return dst, err
}

// AppendRecordJSONCut is AppendRecordJSON that also returns how many maps
// and arrays were cut: written as JSONTooDeep because they nest deeper than
// MaxJSONDepth.
func AppendRecordJSONCut(dst, record []byte, extra ...JSONField) (out []byte, cut int, err error) {
	if _, _, err := ReadMapHeader(record); err != nil {
		return dst, 0, err
	}
	if extra == nil {
		extra = []JSONField{}
	}
	dst, _, err = appendJSON(dst, record, 1, extra, false, &cut)
	return dst, cut, err
}

// jsonFrame is an open map or array while appendJSON walks a value.
type jsonFrame struct {
	left  int // values still to write; a map counts its keys and its values
	isMap bool
	first bool // nothing written in it yet
}

// appendJSON writes the one msgpack value at the start of b as JSON and
// returns the bytes it consumed. It walks with an explicit stack, every
// byte once, so nesting costs neither Go stack nor quadratic time. depth is
// the depth the value has if it is a map or array. extra, when not nil,
// is written first in the value (a map) and shadows keys of the same name.
// inKey says the value is a map key being rendered as text: a map or array
// used as a key within it is written as jsonNestedKey, so that keys are
// escaped once and the output stays linear in the input.
func appendJSON(dst, b []byte, depth int, extra []JSONField, inKey bool, cut *int) ([]byte, int, error) {
	var stackBuf [32]jsonFrame // deeper values grow it on the heap
	stack := stackBuf[:0]
	pos := 0
	for {
		// Write the value at pos.
		if pos >= len(b) {
			return dst, pos, ErrShortBuffer
		}
		d := depth + len(stack)
		switch c := b[pos]; {
		case c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf || c >= 0x90 && c <= 0x9f || c == 0xdc || c == 0xdd:
			isMap := c <= 0x8f || c == 0xde || c == 0xdf
			if d > MaxJSONDepth {
				n, err := SkipValue(b[pos:])
				if err != nil {
					return dst, pos, err
				}
				pos += n
				*cut++
				dst = appendJSONStr(dst, JSONTooDeep)
				break
			}
			var n, hdr int
			var err error
			if isMap {
				n, hdr, err = ReadMapHeader(b[pos:])
				n *= 2
				dst = append(dst, '{')
			} else {
				n, hdr, err = ReadArrayHeader(b[pos:])
				dst = append(dst, '[')
			}
			if err != nil {
				return dst, pos, err
			}
			pos += hdr
			f := jsonFrame{left: n, isMap: isMap, first: true}
			if len(stack) == 0 && extra != nil {
				for _, x := range extra {
					if !f.first {
						dst = append(dst, ',')
					}
					f.first = false
					dst = appendJSONStr(dst, x.Key)
					dst = append(dst, ':')
					dst = appendJSONStr(dst, x.Value)
				}
			}
			stack = append(stack, f)
		default:
			var n int
			var err error
			if dst, n, err = appendJSONScalar(dst, b[pos:]); err != nil {
				return dst, pos, err
			}
			pos += n
		}

		// Move to the next value: close what is complete, write the
		// separator and, in a map, the key.
	next:
		for {
			if len(stack) == 0 {
				return dst, pos, nil
			}
			f := &stack[len(stack)-1]
			switch {
			case f.left == 0:
				if f.isMap {
					dst = append(dst, '}')
				} else {
					dst = append(dst, ']')
				}
				stack = stack[:len(stack)-1]
			case !f.isMap:
				if !f.first {
					dst = append(dst, ',')
				}
				f.first = false
				f.left--
				break next
			default: // a key, then its value
				if pos >= len(b) {
					return dst, pos, ErrShortBuffer
				}
				ks, kn, kerr := ReadString(b[pos:])
				if kerr == nil && len(stack) == 1 && len(extra) > 0 && shadowed(ks, extra) {
					vn, err := SkipValue(b[pos+kn:])
					if err != nil {
						return dst, pos, err
					}
					pos += kn + vn
					f.left -= 2
					continue
				}
				if !f.first {
					dst = append(dst, ',')
				}
				f.first = false
				switch {
				case kerr == nil:
					dst = AppendJSONString(dst, ks)
				case inKey && isContainer(b[pos]):
					n, err := SkipValue(b[pos:])
					if err != nil {
						return dst, pos, err
					}
					kn = n
					dst = appendJSONStr(dst, jsonNestedKey)
				default:
					text, n, err := appendJSON(nil, b[pos:], depth+len(stack), nil, true, cut)
					if err != nil {
						return dst, pos, err
					}
					kn = n
					dst = AppendJSONString(dst, text)
				}
				pos += kn
				dst = append(dst, ':')
				f.left -= 2
				break next
			}
		}
	}
}

func isContainer(c byte) bool {
	return c >= 0x80 && c <= 0x9f || c >= 0xdc && c <= 0xdf
}

func shadowed(key []byte, extra []JSONField) bool {
	for _, f := range extra {
		if string(key) == f.Key {
			return true
		}
	}
	return false
}

// appendJSONScalar writes the msgpack value at the start of b, which is
// not a map or an array, and returns the bytes it consumed.
func appendJSONScalar(dst, b []byte) ([]byte, int, error) {
	c := b[0]
	fixed := func(n int) error { // the value takes n bytes
		if len(b) < n {
			return ErrShortBuffer
		}
		return nil
	}
	switch {
	case c <= 0x7f:
		return strconv.AppendInt(dst, int64(c), 10), 1, nil
	case c >= 0xe0:
		return strconv.AppendInt(dst, int64(int8(c)), 10), 1, nil
	case c >= 0xa0 && c <= 0xbf || c == 0xd9 || c == 0xda || c == 0xdb:
		s, n, err := ReadString(b)
		if err != nil {
			return dst, 0, err
		}
		return AppendJSONString(dst, s), n, nil
	}
	switch c {
	case 0xc0:
		return append(dst, "null"...), 1, nil
	case 0xc2:
		return append(dst, "false"...), 1, nil
	case 0xc3:
		return append(dst, "true"...), 1, nil
	case 0xc4, 0xc5, 0xc6:
		s, n, err := ReadString(b)
		if err != nil {
			return dst, 0, err
		}
		if utf8.Valid(s) {
			return AppendJSONString(dst, s), n, nil
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, s)
		return append(dst, '"'), n, nil
	case 0xca:
		if err := fixed(5); err != nil {
			return dst, 0, err
		}
		return appendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:]))), 32), 5, nil
	case 0xcb:
		if err := fixed(9); err != nil {
			return dst, 0, err
		}
		return appendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(b[1:])), 64), 9, nil
	case 0xcc, 0xd0:
		if err := fixed(2); err != nil {
			return dst, 0, err
		}
		if c == 0xcc {
			return strconv.AppendUint(dst, uint64(b[1]), 10), 2, nil
		}
		return strconv.AppendInt(dst, int64(int8(b[1])), 10), 2, nil
	case 0xcd, 0xd1:
		if err := fixed(3); err != nil {
			return dst, 0, err
		}
		v := binary.BigEndian.Uint16(b[1:])
		if c == 0xcd {
			return strconv.AppendUint(dst, uint64(v), 10), 3, nil
		}
		return strconv.AppendInt(dst, int64(int16(v)), 10), 3, nil
	case 0xce, 0xd2:
		if err := fixed(5); err != nil {
			return dst, 0, err
		}
		v := binary.BigEndian.Uint32(b[1:])
		if c == 0xce {
			return strconv.AppendUint(dst, uint64(v), 10), 5, nil
		}
		return strconv.AppendInt(dst, int64(int32(v)), 10), 5, nil
	case 0xcf, 0xd3:
		if err := fixed(9); err != nil {
			return dst, 0, err
		}
		v := binary.BigEndian.Uint64(b[1:])
		if c == 0xcf {
			return strconv.AppendUint(dst, v, 10), 9, nil
		}
		return strconv.AppendInt(dst, int64(v), 10), 9, nil
	}
	// Extension types: EventTime as RFC 3339, others as their payload in
	// base64.
	var hdr, size int
	switch c {
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		hdr, size = 2, 1<<(c-0xd4)
	case 0xc7, 0xc8, 0xc9:
		width := 1 << (c - 0xc7) // 1, 2, 4 length bytes
		n, err := lenAt(b, 1, width)
		if err != nil {
			return dst, 0, err
		}
		hdr, size = 2+width, n
	default:
		return dst, 0, fmt.Errorf("%w: 0x%02x", ErrMalformed, c)
	}
	if hdr+size > len(b) {
		return dst, 0, ErrShortBuffer
	}
	if c == 0xd7 || c == 0xc7 {
		if t, n, err := ReadTime(b); err == nil {
			dst = append(dst, '"')
			dst = t.Time().AppendFormat(dst, "2006-01-02T15:04:05.000000000Z07:00")
			return append(dst, '"'), n, nil
		}
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b[hdr:hdr+size])
	return append(dst, '"'), hdr + size, nil
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const hexDigits = "0123456789abcdef"

func appendJSONStr(dst []byte, s string) []byte {
	return AppendJSONString(dst, []byte(s))
}

// AppendJSONString appends s as a JSON string: bytes that are not UTF-8
// become U+FFFD, as encoding/json does, and U+2028 and U+2029 are escaped.
func AppendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\\ufffd"...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
