// Package jsonmp turns JSON text into msgpack without reflection and
// without an intermediate tree, in time linear in the input: the tail
// input transcodes each JSON line straight into its chunk (and picks the
// fields of Docker's json-file lines), the kafka input each JSON message
// value.
package jsonmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/logship/logship/internal/mpack"
)

// maxJSONDepth is how deeply JSON objects and arrays may nest in a value,
// the top-level object counting as one level. A value nested deeper is not
// transcoded: callers keep it as it is (the tail input as {key: LINE}, the
// kafka input as {key: VALUE}) and count it.
// The bound keeps the recursion and the work per line linear in the line's
// length whatever a writer puts in it, and keeps records that deep out of
// the outputs (JSON encoders and msgpack decoders downstream have limits
// of their own, Go's encoding/json among them); 128 is far above what any
// structured logger writes.
const maxJSONDepth = 128

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString expects b[i] == '"' and returns the index after the closing
// quote and whether the string holds escapes.
func scanString(b []byte, i int) (end int, esc, ok bool) {
	i++
	for i <= len(b) {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return 0, false, false
		}
		bs := bytes.IndexByte(b[i:i+q], '\\')
		if bs < 0 {
			return i + q + 1, esc, true
		}
		esc = true
		i += bs + 2 // past the escaped character, which may be a quote
	}
	return 0, false, false
}

// appendUnescaped appends the JSON string body raw (between the quotes)
// with its escapes decoded.
func appendUnescaped(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			// Copy the run up to the next escape at once.
			j := bytes.IndexByte(raw[i:], '\\')
			if j < 0 {
				return append(dst, raw[i:]...), true
			}
			dst = append(dst, raw[i:i+j]...)
			i += j
			continue
		}
		if i+1 >= len(raw) {
			return dst, false
		}
		switch raw[i+1] {
		case '"', '\\', '/':
			dst = append(dst, raw[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw, i+2)
			if !ok {
				return dst, false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if r2, ok := hex4(raw, i+2); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							dst = utf8.AppendRune(dst, d)
							i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// appendJSONRecord appends the msgpack map for the JSON object in line,
// followed by extraN pre-encoded key/value pairs. It reports false, with
// dst unchanged, when line is not exactly one JSON object.
func appendJSONRecord(dst, line, extra []byte, extraN int) ([]byte, bool) {
	start := len(dst)
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return dst, false
	}
	dst, end, n, ok := transcodeObject(dst, line, i, 0)
	if !ok || skipWS(line, end) != len(line) {
		return dst[:start], false
	}
	dst = append(dst, extra...)
	return fixHeader(dst, start, 0xdf, n+extraN), true
}

// placeholder headers: a 5-byte map32/array32/str32 header is written
// first and shrunk once the count is known.
func placeholder(dst []byte, code byte) []byte { return append(dst, code, 0, 0, 0, 0) }

// fixHeader writes the smallest header for n at dst[start] (where a 5-byte
// placeholder of kind code sits) and moves the body down.
func fixHeader(dst []byte, start int, code byte, n int) []byte {
	var hdr [5]byte
	var h int
	switch code {
	case 0xdf, 0xdd: // map, array
		fix, c16 := byte(0x80), byte(0xde)
		if code == 0xdd {
			fix, c16 = 0x90, 0xdc
		}
		switch {
		case n < 16:
			hdr[0], h = fix|byte(n), 1
		case n <= math.MaxUint16:
			hdr[0], h = c16, 3
			binary.BigEndian.PutUint16(hdr[1:], uint16(n))
		default:
			hdr[0], h = code, 5
			binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		}
	default: // str
		switch {
		case n < 32:
			hdr[0], h = 0xa0|byte(n), 1
		case n <= math.MaxUint8:
			hdr[0], hdr[1], h = 0xd9, byte(n), 2
		case n <= math.MaxUint16:
			hdr[0], h = 0xda, 3
			binary.BigEndian.PutUint16(hdr[1:], uint16(n))
		default:
			hdr[0], h = 0xdb, 5
			binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		}
	}
	copy(dst[start:], hdr[:h])
	if h < 5 {
		copy(dst[start+h:], dst[start+5:])
		dst = dst[:len(dst)-(5-h)]
	}
	return dst
}

// The depth of a container is the number of containers around it: the
// top-level object has depth 0, and a container of depth maxJSONDepth or
// more is refused.

func transcodeObject(dst, b []byte, i, depth int) ([]byte, int, int, bool) {
	if depth >= maxJSONDepth {
		return dst, 0, 0, false
	}
	start := len(dst)
	dst = placeholder(dst, 0xdf)
	i = skipWS(b, i+1)
	n := 0
	if i < len(b) && b[i] == '}' {
		if depth == 0 {
			return dst, i + 1, 0, true
		}
		return fixHeader(dst, start, 0xdf, 0), i + 1, 0, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return dst, 0, 0, false
		}
		var ok bool
		dst, i, ok = transcodeString(dst, b, i)
		if !ok {
			return dst, 0, 0, false
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return dst, 0, 0, false
		}
		dst, i, ok = transcodeValue(dst, b, skipWS(b, i+1), depth)
		if !ok {
			return dst, 0, 0, false
		}
		n++
		i = skipWS(b, i)
		if i >= len(b) {
			return dst, 0, 0, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			if depth == 0 {
				// The caller adds extra pairs before fixing the top header.
				return dst, i + 1, n, true
			}
			return fixHeader(dst, start, 0xdf, n), i + 1, n, true
		default:
			return dst, 0, 0, false
		}
	}
}

func transcodeArray(dst, b []byte, i, depth int) ([]byte, int, bool) {
	if depth >= maxJSONDepth {
		return dst, 0, false
	}
	start := len(dst)
	dst = placeholder(dst, 0xdd)
	i = skipWS(b, i+1)
	n := 0
	if i < len(b) && b[i] == ']' {
		return fixHeader(dst, start, 0xdd, 0), i + 1, true
	}
	for {
		var ok bool
		dst, i, ok = transcodeValue(dst, b, i, depth)
		if !ok {
			return dst, 0, false
		}
		n++
		i = skipWS(b, i)
		if i >= len(b) {
			return dst, 0, false
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return fixHeader(dst, start, 0xdd, n), i + 1, true
		default:
			return dst, 0, false
		}
	}
}

func transcodeString(dst, b []byte, i int) ([]byte, int, bool) {
	end, esc, ok := scanString(b, i)
	if !ok {
		return dst, 0, false
	}
	raw := b[i+1 : end-1]
	if !esc {
		return mpack.AppendStringBytes(dst, raw), end, true
	}
	start := len(dst)
	dst = placeholder(dst, 0xdb)
	dst, ok = appendUnescaped(dst, raw)
	if !ok {
		return dst, 0, false
	}
	return fixHeader(dst, start, 0xdb, len(dst)-start-5), end, true
}

func transcodeValue(dst, b []byte, i, depth int) ([]byte, int, bool) {
	if i >= len(b) {
		return dst, 0, false
	}
	switch c := b[i]; {
	case c == '{':
		dst, end, _, ok := transcodeObject(dst, b, i, depth+1)
		return dst, end, ok
	case c == '[':
		return transcodeArray(dst, b, i, depth+1)
	case c == '"':
		return transcodeString(dst, b, i)
	case c == 't':
		if hasWord(b, i, "true") {
			return append(dst, 0xc3), i + 4, true
		}
	case c == 'f':
		if hasWord(b, i, "false") {
			return append(dst, 0xc2), i + 5, true
		}
	case c == 'n':
		if hasWord(b, i, "null") {
			return append(dst, 0xc0), i + 4, true
		}
	case c == '-' || c >= '0' && c <= '9':
		return transcodeNumber(dst, b, i)
	}
	return dst, 0, false
}

func hasWord(b []byte, i int, w string) bool {
	return len(b)-i >= len(w) && string(b[i:i+len(w)]) == w
}

// scanNumber returns the end of the JSON number at b[i] and whether it is
// an integer (no fraction, no exponent).
func scanNumber(b []byte, i int) (end int, integer, ok bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		j++
	}
	digits := func() int {
		s := j
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j - s
	}
	if j < len(b) && b[j] == '0' {
		j++
	} else if digits() == 0 {
		return 0, false, false
	}
	integer = true
	if j < len(b) && b[j] == '.' {
		j++
		integer = false
		if digits() == 0 {
			return 0, false, false
		}
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		integer = false
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return 0, false, false
		}
	}
	return j, integer, true
}

func transcodeNumber(dst, b []byte, i int) ([]byte, int, bool) {
	end, integer, ok := scanNumber(b, i)
	if !ok {
		return dst, 0, false
	}
	num := b[i:end]
	if integer && len(num) <= 19 {
		neg := num[0] == '-'
		d := num
		if neg {
			d = d[1:]
		}
		var v uint64
		for _, c := range d {
			v = v*10 + uint64(c-'0')
		}
		if v <= math.MaxInt64 {
			iv := int64(v)
			if neg {
				iv = -iv
			}
			return mpack.AppendInt(dst, iv), end, true
		}
	}
	if integer && num[0] != '-' {
		if v, err := strconv.ParseUint(string(num), 10, 64); err == nil {
			return binary.BigEndian.AppendUint64(append(dst, 0xcf), v), end, true
		}
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil && !isRangeErr(err) {
		return dst, 0, false
	}
	return binary.BigEndian.AppendUint64(append(dst, 0xcb), math.Float64bits(f)), end, true
}

func isRangeErr(err error) bool {
	return errors.Is(err, strconv.ErrRange)
}

// skipValue returns the end of the JSON value at b[i], validating it;
// depth is the number of containers around it.
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		end, _, ok := scanString(b, i)
		return end, ok
	case c == '{' || c == '[':
		if depth >= maxJSONDepth {
			return 0, false
		}
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == close {
			return i + 1, true
		}
		for {
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return 0, false
				}
				end, _, ok := scanString(b, i)
				if !ok {
					return 0, false
				}
				i = skipWS(b, end)
				if i >= len(b) || b[i] != ':' {
					return 0, false
				}
				i = skipWS(b, i+1)
			}
			end, ok := skipValue(b, i, depth+1)
			if !ok {
				return 0, false
			}
			i = skipWS(b, end)
			if i >= len(b) {
				return 0, false
			}
			if b[i] == close {
				return i + 1, true
			}
			if b[i] != ',' {
				return 0, false
			}
			i = skipWS(b, i+1)
		}
	case c == 't':
		return i + 4, hasWord(b, i, "true")
	case c == 'f':
		return i + 5, hasWord(b, i, "false")
	case c == 'n':
		return i + 4, hasWord(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		end, _, ok := scanNumber(b, i)
		return end, ok
	}
	return 0, false
}

// tooDeep reports whether the JSON text in b nests objects and arrays
// more than maxJSONDepth levels deep (brackets inside strings do not
// count). It is called only for a line that did not parse, to tell why.
func tooDeep(b []byte) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end, _, ok := scanString(b, i)
			if !ok {
				return false
			}
			i = end - 1
		case '{', '[':
			depth++
			if depth > maxJSONDepth {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

// MaxDepth is how deeply objects and arrays may nest (see maxJSONDepth).
const MaxDepth = maxJSONDepth

// AppendRecord appends the JSON object in line as a msgpack map to dst,
// with extraN more entries (extra, already msgpack) at its end; ok is
// false when line is not one JSON object within MaxDepth (dst is then
// unchanged in length).
func AppendRecord(dst, line, extra []byte, extraN int) ([]byte, bool) {
	return appendJSONRecord(dst, line, extra, extraN)
}

// AppendUnescaped appends the body of a JSON string (without its quotes)
// with its escapes resolved.
func AppendUnescaped(dst, raw []byte) ([]byte, bool) { return appendUnescaped(dst, raw) }

// TooDeep reports whether b nests objects and arrays deeper than MaxDepth.
func TooDeep(b []byte) bool { return tooDeep(b) }

// SkipWS returns the index of the first byte at or after i that is not
// JSON white space.
func SkipWS(b []byte, i int) int { return skipWS(b, i) }

// ScanString returns the end of the JSON string starting at b[i] (its
// opening quote), whether it holds escapes, and whether it is well formed.
func ScanString(b []byte, i int) (end int, esc, ok bool) { return scanString(b, i) }

// SkipValue returns the end of the JSON value at b[i], validating it;
// depth is the number of containers around it.
func SkipValue(b []byte, i, depth int) (int, bool) { return skipValue(b, i, depth) }
