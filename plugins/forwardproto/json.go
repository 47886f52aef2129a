package forwardproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/logship/logship/internal/mpack"
)

// jsonFrameDepth is how deep a record sits in a JSON frame (a Forward
// request: [tag, [[time, record]]]). The transcoder recurses, so it is
// bounded to Limits.MaxDepth plus this: a record deeper than MaxDepth but
// within that bound is dropped like any too deep record, a deeper frame is
// ErrMalformed.
const jsonFrameDepth = 3

// appendJSONAsMsgpack transcodes one JSON value to msgpack: strings to str,
// integers to int, other numbers to float64, objects keep their key order.
// JSON is the slow path (fluentd accepts it, few clients send it).
// maxDepth bounds the nesting, maxLen the msgpack's length.
func appendJSONAsMsgpack(dst, src []byte, maxDepth, maxLen int) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.UseNumber()
	t := jsonTranscoder{dec: dec, maxDepth: maxDepth, maxLen: maxLen}
	dst, err := t.value(dst, 0)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("trailing data")
		}
	}
	if err != nil {
		if errors.Is(err, ErrDecompressedTooLarge) {
			return dst, err
		}
		return dst, fmt.Errorf("%w: JSON: %w", ErrMalformed, err)
	}
	return dst, nil
}

type jsonTranscoder struct {
	dec              *json.Decoder
	maxDepth, maxLen int
}

func (t *jsonTranscoder) value(dst []byte, depth int) ([]byte, error) {
	dec := t.dec
	if len(dst) > t.maxLen {
		return dst, fmt.Errorf("%w: a JSON frame transcoded to more than %d bytes", ErrDecompressedTooLarge, t.maxLen)
	}
	tok, err := dec.Token()
	if err != nil {
		return dst, err
	}
	switch v := tok.(type) {
	case json.Delim:
		if depth >= t.maxDepth {
			return dst, fmt.Errorf("nested deeper than %d", t.maxDepth)
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
				dst = mpack.AppendString(dst, s)
			}
			if dst, err = t.value(dst, depth+1); err != nil {
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
		return mpack.AppendString(dst, v), nil
	case json.Number:
		if u, err := strconv.ParseUint(string(v), 10, 64); err == nil {
			return mpack.AppendUint(dst, u), nil
		}
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return mpack.AppendInt(dst, i), nil // negative
		}
		f, _ := strconv.ParseFloat(string(v), 64) // ±Inf when out of range
		return mpack.AppendFloat64(dst, f), nil
	case bool:
		return mpack.AppendBool(dst, v), nil
	case nil:
		return append(dst, 0xc0), nil
	}
	return dst, fmt.Errorf("unexpected token %v", tok)
}
