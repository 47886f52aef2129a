package forwardproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of a JSON frame; the transcoder recurses.
const maxJSONDepth = 100

// appendJSONAsMsgpack transcodes one JSON value to msgpack: strings to str,
// integers to int, other numbers to float64, objects keep their key order.
// JSON is the slow path (fluentd accepts it, few clients send it).
func appendJSONAsMsgpack(dst, src []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	dst, err := jsonValue(dst, dec, 0)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("trailing data")
		}
	}
	if err != nil {
		return dst, fmt.Errorf("%w: JSON: %w", ErrMalformed, err)
	}
	return dst, nil
}

func jsonValue(dst []byte, dec *json.Decoder, depth int) ([]byte, error) {
	tok, err := dec.Token()
	if err != nil {
		return dst, err
	}
	switch v := tok.(type) {
	case json.Delim:
		if depth >= maxJSONDepth {
			return dst, fmt.Errorf("nested deeper than %d", maxJSONDepth)
		}
		dst, at := reserve5(dst)
		n := 0
		for dec.More() {
			if v == '{' {
				key, err := dec.Token()
				if err != nil {
					return dst, err
				}
				s, ok := key.(string)
				if !ok {
					return dst, fmt.Errorf("object key %v", key)
				}
				dst = appendStr(dst, s)
			}
			if dst, err = jsonValue(dst, dec, depth+1); err != nil {
				return dst, err
			}
			n++
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return dst, err
		}
		fam := famArray
		if v == '{' {
			fam = famMap
		}
		return patchHeader(dst, at, fam, n), nil
	case string:
		return appendStr(dst, v), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return appendInt(dst, i), nil
		}
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return appendUint(dst, u), nil
		}
		f, _ := strconv.ParseFloat(string(v), 64) // ±Inf when out of range
		return appendFloat64(dst, f), nil
	case bool:
		return appendBool(dst, v), nil
	case nil:
		return append(dst, 0xc0), nil
	}
	return dst, fmt.Errorf("unexpected token %v", tok)
}

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD, as encoding/json does.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
