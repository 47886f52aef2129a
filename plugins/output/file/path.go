package file

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/logship/logship/internal/template"
)

// maxPathLen is the longest rendered path the output writes (Linux's
// PATH_MAX).
const maxPathLen = 4096

// pathTemplate is the configured path, parsed.
type pathTemplate struct {
	tmpl   *template.Template
	static string // the path when it has no variables
	fixed  bool   // it has none
	prefix string // the literal text before the first variable
	base   string // the directory every rendered path stays in
}

// parsePath parses a path template. A path without variables is used as
// it is; a templated one is confined to the directory part of the text
// before its first variable (./out/{tag}.log: ./out; {tag}.log: the
// working directory).
func parsePath(s string) (*pathTemplate, error) {
	t, err := template.Parse(s)
	if err != nil {
		return nil, err
	}
	p := &pathTemplate{tmpl: t}
	if p.static, p.fixed = t.Static(); p.fixed {
		return p, nil
	}
	p.prefix = literalPrefix(s)
	p.base = "."
	if i := strings.LastIndexByte(p.prefix, '/'); i >= 0 {
		p.base = filepath.Clean(p.prefix[:i+1])
	}
	return p, nil
}

// literalPrefix is the text of template source s before its first
// variable, with {{ and }} as the characters they stand for.
func literalPrefix(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '{' && i+1 < len(s) && s[i+1] == '{', s[i] == '}' && i+1 < len(s) && s[i+1] == '}':
			b.WriteByte(s[i])
			i++
		case s[i] == '{':
			return b.String()
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// errInvalidPath is wrapped by the errors render returns: the event's path
// is refused, the event dropped.
var errInvalidPath = errors.New("invalid path")

// render appends the path of one event to dst and returns it, cleaned.
// It refuses a path that would leave the base directory: a '..' element
// or an absolute path coming from a variable, a path naming the base
// directory itself or ending in '/', a NUL byte, or more than 4096 bytes.
func (p *pathTemplate) render(dst []byte, tag string, record []byte) ([]byte, string, error) {
	if p.fixed {
		return dst, p.static, nil
	}
	dst = p.tmpl.Append(dst[:0], tag, record)
	raw := string(dst)
	bad := func(why string) ([]byte, string, error) {
		return dst, "", fmt.Errorf("%w: %.200q %s", errInvalidPath, raw, why)
	}
	switch {
	case len(raw) > maxPathLen:
		return bad("is longer than 4096 bytes")
	case strings.IndexByte(raw, 0) >= 0:
		return bad("contains a NUL byte")
	case strings.HasSuffix(raw, "/"):
		return bad("names a directory")
	}
	// a '..' element that a variable wrote, wholly or in part (the
	// configured text before the first variable may climb)
	for start := 0; start <= len(raw); {
		end := strings.IndexByte(raw[start:], '/')
		if end < 0 {
			end = len(raw)
		} else {
			end += start
		}
		if raw[start:end] == ".." && end > len(p.prefix) {
			return bad("contains '..'")
		}
		start = end + 1
	}
	clean := filepath.Clean(raw)
	rel, err := filepath.Rel(p.base, clean)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return bad(fmt.Sprintf("is not inside %s", p.base))
	}
	return dst, clean, nil
}
