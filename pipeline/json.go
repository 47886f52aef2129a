package pipeline

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

// AppendRecordJSON appends the msgpack map record as one JSON object,
// without reflection. Extra fields come first. bin values are written as
// strings when they are valid UTF-8 (Fluent Bit does the same) and as
// base64 otherwise; EventTime values as RFC 3339 strings.
func AppendRecordJSON(dst, record []byte, extra ...JSONField) ([]byte, error) {
	n, hdr, err := ReadMapHeader(record)
	if err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	first := true
	for _, f := range extra {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendJSONString(dst, f.Key)
		dst = append(dst, ':')
		dst = appendJSONString(dst, f.Value)
	}
	b := record[hdr:]
	for range n {
		kn, err := SkipValue(b)
		if err != nil {
			return dst, err
		}
		key := b[:kn]
		b = b[kn:]
		vn, err := SkipValue(b)
		if err != nil {
			return dst, err
		}
		if len(extra) > 0 {
			if ks, _, err := ReadString(key); err == nil && shadowed(ks, extra) {
				b = b[vn:]
				continue
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if dst, err = appendJSONKey(dst, key); err != nil {
			return dst, err
		}
		dst = append(dst, ':')
		if dst, err = appendJSONValue(dst, b[:vn]); err != nil {
			return dst, err
		}
		b = b[vn:]
	}
	return append(dst, '}'), nil
}

func shadowed(key []byte, extra []JSONField) bool {
	for _, f := range extra {
		if string(key) == f.Key {
			return true
		}
	}
	return false
}

// appendJSONKey writes a map key; keys that are not strings are written as
// their JSON text in a string.
func appendJSONKey(dst, key []byte) ([]byte, error) {
	if s, _, err := ReadString(key); err == nil {
		return appendJSONBytes(dst, s), nil
	}
	v, err := appendJSONValue(nil, key)
	if err != nil {
		return dst, err
	}
	return appendJSONBytes(dst, v), nil
}

// appendJSONValue converts one complete msgpack value (as SkipValue
// delimits it).
func appendJSONValue(dst, b []byte) ([]byte, error) {
	c := b[0]
	switch {
	case c <= 0x7f:
		return strconv.AppendInt(dst, int64(c), 10), nil
	case c >= 0xe0:
		return strconv.AppendInt(dst, int64(int8(c)), 10), nil
	case c >= 0x80 && c <= 0x8f || c == 0xde || c == 0xdf:
		return AppendRecordJSON(dst, b)
	case c >= 0x90 && c <= 0x9f || c == 0xdc || c == 0xdd:
		n, hdr, err := ReadArrayHeader(b)
		if err != nil {
			return dst, err
		}
		dst = append(dst, '[')
		b = b[hdr:]
		for i := range n {
			if i > 0 {
				dst = append(dst, ',')
			}
			vn, err := SkipValue(b)
			if err != nil {
				return dst, err
			}
			if dst, err = appendJSONValue(dst, b[:vn]); err != nil {
				return dst, err
			}
			b = b[vn:]
		}
		return append(dst, ']'), nil
	case c >= 0xa0 && c <= 0xbf || c == 0xd9 || c == 0xda || c == 0xdb:
		s, _, err := ReadString(b)
		if err != nil {
			return dst, err
		}
		return appendJSONBytes(dst, s), nil
	}
	switch c {
	case 0xc0:
		return append(dst, "null"...), nil
	case 0xc2:
		return append(dst, "false"...), nil
	case 0xc3:
		return append(dst, "true"...), nil
	case 0xc4, 0xc5, 0xc6:
		s, _, err := ReadString(b)
		if err != nil {
			return dst, err
		}
		if utf8.Valid(s) {
			return appendJSONBytes(dst, s), nil
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, s)
		return append(dst, '"'), nil
	case 0xca:
		return appendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(b[1:]))), 32), nil
	case 0xcb:
		return appendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(b[1:])), 64), nil
	case 0xcc:
		return strconv.AppendUint(dst, uint64(b[1]), 10), nil
	case 0xcd:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(b[1:])), 10), nil
	case 0xce:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(b[1:])), 10), nil
	case 0xcf:
		return strconv.AppendUint(dst, binary.BigEndian.Uint64(b[1:]), 10), nil
	case 0xd0:
		return strconv.AppendInt(dst, int64(int8(b[1])), 10), nil
	case 0xd1:
		return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(b[1:]))), 10), nil
	case 0xd2:
		return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(b[1:]))), 10), nil
	case 0xd3:
		return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(b[1:])), 10), nil
	case 0xd7, 0xc7:
		if t, _, err := ReadTime(b); err == nil {
			dst = append(dst, '"')
			dst = t.Time().AppendFormat(dst, "2006-01-02T15:04:05.000000000Z07:00")
			return append(dst, '"'), nil
		}
	}
	// Other extension types: their payload in base64.
	if c >= 0xd4 && c <= 0xd8 || c >= 0xc7 && c <= 0xc9 {
		payload := b[2:]
		switch c {
		case 0xc7:
			payload = b[3:]
		case 0xc8:
			payload = b[4:]
		case 0xc9:
			payload = b[6:]
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, payload)
		return append(dst, '"'), nil
	}
	return dst, fmt.Errorf("%w: 0x%02x", ErrMalformed, c)
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const hexDigits = "0123456789abcdef"

func appendJSONString(dst []byte, s string) []byte {
	return appendJSONBytes(dst, []byte(s))
}

// appendJSONBytes writes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONBytes(dst, s []byte) []byte {
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
