// Package template is the one syntax logship uses wherever a plugin names
// something from the event it handles: Kafka topics now, index names and
// object keys later. A template is text with variables in braces:
//
//	logs.{tag}                  the event's tag
//	{tag[0]}.{tag[-1]}          parts of the tag split at '.', from 0, or from the end with -1
//	{record.service}            a field of the record
//	{record.kubernetes.ns}      a field of a map in the record
//	{record.service|unknown}    the text after '|' when the field is missing or empty
//	{{ and }}                   a literal '{' and '}'
//
// A field renders as its text when it is a string (or bin), and as its
// decimal form when it is a number or a boolean; a missing field, nil, a
// map or an array renders as the default after '|' (empty without one),
// as does a tag part past the tag's end. Field names cannot contain '.',
// '|', '{' or '}'. Parse reports a bad template with the position of the
// fault, so a config error names it at validation time.
package template

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/logship/logship/internal/mpack"
)

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("template syntax")

type kind uint8

const (
	literal kind = iota
	tagAll
	tagPart
	field
)

type segment struct {
	kind kind
	text string   // literal text, or the default of a variable
	idx  int      // tagPart: index, negative from the end
	path []string // field: the keys from the record down
}

// Template is a parsed template. It is immutable and safe for concurrent
// use.
type Template struct {
	src       string
	segs      []segment
	usesTag   bool
	usesField bool
}

// Parse parses s.
func Parse(s string) (*Template, error) {
	t := &Template{src: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.segs = append(t.segs, segment{kind: literal, text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				lit.WriteByte('{')
				i++
				continue
			}
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, fmt.Errorf("%w: %q: '{' at %d is never closed", ErrSyntax, s, i)
			}
			body := s[i+1 : i+1+end]
			seg, err := parseVar(body)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: {%s} at %d: %w", ErrSyntax, s, body, i, err)
			}
			flush()
			t.segs = append(t.segs, seg)
			if seg.kind == field {
				t.usesField = true
			} else {
				t.usesTag = true
			}
			i += end + 1
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				lit.WriteByte('}')
				i++
				continue
			}
			return nil, fmt.Errorf("%w: %q: '}' at %d closes nothing (write }} for a literal one)", ErrSyntax, s, i)
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return t, nil
}

var errVariables = errors.New("variables are tag, tag[N] and record.FIELD, optionally followed by |DEFAULT")

func parseVar(body string) (segment, error) {
	name, def, _ := strings.Cut(body, "|")
	if strings.ContainsAny(def, "{") {
		return segment{}, errors.New("a default cannot contain '{'")
	}
	switch {
	case name == "tag":
		return segment{kind: tagAll, text: def}, nil
	case strings.HasPrefix(name, "tag[") && strings.HasSuffix(name, "]"):
		n, err := strconv.Atoi(name[len("tag[") : len(name)-1])
		if err != nil || n > 255 || n < -256 {
			return segment{}, fmt.Errorf("tag[N] wants an integer from -256 to 255, got %q", name[len("tag["):len(name)-1])
		}
		return segment{kind: tagPart, idx: n, text: def}, nil
	case strings.HasPrefix(name, "record."):
		path := strings.Split(name[len("record."):], ".")
		for _, p := range path {
			if p == "" {
				return segment{}, fmt.Errorf("%q has an empty field name", name)
			}
		}
		return segment{kind: field, path: path, text: def}, nil
	case name == "":
		return segment{}, fmt.Errorf("empty variable: %w", errVariables)
	}
	return segment{}, fmt.Errorf("unknown variable %q: %w", name, errVariables)
}

// MustParse is Parse that panics, for templates written in code.
func MustParse(s string) *Template {
	t, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the template's source.
func (t *Template) String() string { return t.src }

// Static returns the text of a template without variables, and whether it
// has none.
func (t *Template) Static() (string, bool) {
	if t.usesTag || t.usesField {
		return "", false
	}
	if len(t.segs) == 0 {
		return "", true
	}
	return t.segs[0].text, true
}

// UsesRecord reports whether the template reads record fields: when it does
// not, it renders the same text for every event of a tag.
func (t *Template) UsesRecord() bool { return t.usesField }

// Append renders the template for one event, the tag and the msgpack map
// record (nil when the template does not use it), and appends the text to
// dst. It does not allocate beyond growing dst.
func (t *Template) Append(dst []byte, tag string, record []byte) []byte {
	for i := range t.segs {
		s := &t.segs[i]
		switch s.kind {
		case literal:
			dst = append(dst, s.text...)
		case tagAll:
			if tag == "" {
				dst = append(dst, s.text...)
			} else {
				dst = append(dst, tag...)
			}
		case tagPart:
			if p, ok := tagPartOf(tag, s.idx); ok && p != "" {
				dst = append(dst, p...)
			} else {
				dst = append(dst, s.text...)
			}
		case field:
			n := len(dst)
			if v, ok := Lookup(record, s.path); ok {
				dst, _ = AppendScalar(dst, v)
			}
			if len(dst) == n {
				dst = append(dst, s.text...)
			}
		}
	}
	return dst
}

// Render is Append to a new string.
func (t *Template) Render(tag string, record []byte) string {
	return string(t.Append(nil, tag, record))
}

func tagPartOf(tag string, idx int) (string, bool) {
	if idx < 0 {
		n := strings.Count(tag, ".") + 1
		idx += n
		if idx < 0 {
			return "", false
		}
	}
	for i := 0; ; i++ {
		part, rest, more := strings.Cut(tag, ".")
		if i == idx {
			return part, true
		}
		if !more {
			return "", false
		}
		tag = rest
	}
}

// ParseField parses the name of a record field as configured for keys
// such as a Kafka message key: "service", or "kubernetes.pod_name" for a
// field of a map. An optional "record." prefix is accepted.
func ParseField(s string) ([]string, error) {
	s = strings.TrimPrefix(s, "record.")
	if s == "" {
		return nil, errors.New("empty field name")
	}
	path := strings.Split(s, ".")
	for _, p := range path {
		if p == "" {
			return nil, fmt.Errorf("%q has an empty field name", s)
		}
	}
	return path, nil
}

// Lookup finds the value at path in the msgpack map record and returns its
// raw msgpack bytes (aliasing record). Keys compare as strings (str or
// bin). It does not allocate.
func Lookup(record []byte, path []string) ([]byte, bool) {
	v := record
	for _, key := range path {
		n, hdr, err := mpack.ReadMapHeader(v)
		if err != nil {
			return nil, false
		}
		b := v[hdr:]
		found := false
		for range n {
			k, kn, err := mpack.ReadString(b)
			if err != nil {
				// A key that is not a string: skip it.
				if kn, err = mpack.SkipValue(b); err != nil {
					return nil, false
				}
				k = nil
			}
			b = b[kn:]
			vn, err := mpack.SkipValue(b)
			if err != nil {
				return nil, false
			}
			if k != nil && string(k) == key {
				v = b[:vn]
				found = true
				break
			}
			b = b[vn:]
		}
		if !found {
			return nil, false
		}
	}
	return v, true
}

// AppendScalar appends the text of the msgpack value v: a string's (or
// bin's) bytes, a number in decimal, true or false. It appends nothing and
// returns false for nil, maps, arrays, extensions and malformed bytes.
func AppendScalar(dst, v []byte) ([]byte, bool) {
	if len(v) == 0 {
		return dst, false
	}
	c := v[0]
	switch {
	case c <= 0x7f:
		return strconv.AppendInt(dst, int64(c), 10), true
	case c >= 0xe0:
		return strconv.AppendInt(dst, int64(int8(c)), 10), true
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb, c == 0xc4, c == 0xc5, c == 0xc6:
		s, _, err := mpack.ReadString(v)
		if err != nil {
			return dst, false
		}
		return append(dst, s...), true
	case c == 0xc2:
		return append(dst, "false"...), true
	case c == 0xc3:
		return append(dst, "true"...), true
	}
	width := scalarWidth(c)
	if width == 0 || len(v) < 1+width {
		return dst, false
	}
	b := v[1 : 1+width]
	switch c {
	case 0xcc:
		return strconv.AppendUint(dst, uint64(b[0]), 10), true
	case 0xcd:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint16(b)), 10), true
	case 0xce:
		return strconv.AppendUint(dst, uint64(binary.BigEndian.Uint32(b)), 10), true
	case 0xcf:
		return strconv.AppendUint(dst, binary.BigEndian.Uint64(b), 10), true
	case 0xd0:
		return strconv.AppendInt(dst, int64(int8(b[0])), 10), true
	case 0xd1:
		return strconv.AppendInt(dst, int64(int16(binary.BigEndian.Uint16(b))), 10), true
	case 0xd2:
		return strconv.AppendInt(dst, int64(int32(binary.BigEndian.Uint32(b))), 10), true
	case 0xd3:
		return strconv.AppendInt(dst, int64(binary.BigEndian.Uint64(b)), 10), true
	case 0xca:
		return strconv.AppendFloat(dst, float64(math.Float32frombits(binary.BigEndian.Uint32(b))), 'g', -1, 32), true
	default: // 0xcb
		return strconv.AppendFloat(dst, math.Float64frombits(binary.BigEndian.Uint64(b)), 'g', -1, 64), true
	}
}

// scalarWidth is the payload length of a fixed-width number header, 0 for
// any other byte.
func scalarWidth(c byte) int {
	switch c {
	case 0xcc, 0xd0:
		return 1
	case 0xcd, 0xd1:
		return 2
	case 0xce, 0xd2, 0xca:
		return 4
	case 0xcf, 0xd3, 0xcb:
		return 8
	}
	return 0
}
