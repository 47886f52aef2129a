package pipeline

import (
	"fmt"
	"regexp"
	"strings"
)

// Matcher decides whether a tag matches a Fluentd match pattern. It is safe
// for concurrent use.
//
// The syntax is Fluentd's:
//   - `*` matches one tag part: `a.*` matches `a.b`, not `a` or `a.b.c`;
//     inside a part it matches any run of characters but '.': `a.b*`
//     matches `a.bc`;
//   - `**` matches zero or more tag parts: `a.**` matches `a`, `a.b` and
//     `a.b.c`; `**.z` matches `z` and `x.y.z`;
//   - `{X,Y}` matches X or Y, where X and Y are patterns themselves
//     (`a.{b,c.**}`);
//   - `/regexp/` matches tags against a Go regular expression, anchored;
//   - several patterns separated by spaces match if any of them does.
type Matcher struct {
	src  string
	alts [][]string // each alternative split into parts
	res  []*regexp.Regexp
}

// CompileMatch parses a match pattern.
func CompileMatch(pattern string) (*Matcher, error) {
	m := &Matcher{src: pattern}
	fields := strings.Fields(pattern)
	if len(fields) == 0 {
		return nil, fmt.Errorf("empty match pattern")
	}
	for _, f := range fields {
		if len(f) >= 2 && f[0] == '/' && f[len(f)-1] == '/' {
			re, err := regexp.Compile("^(?:" + f[1:len(f)-1] + ")$")
			if err != nil {
				return nil, fmt.Errorf("match pattern %q: %w", f, err)
			}
			m.res = append(m.res, re)
			continue
		}
		expanded, err := expandBraces(f)
		if err != nil {
			return nil, fmt.Errorf("match pattern %q: %w", f, err)
		}
		for _, e := range expanded {
			parts := strings.Split(e, ".")
			for _, p := range parts {
				if p == "" {
					return nil, fmt.Errorf("match pattern %q: empty tag part", f)
				}
				if strings.Contains(p, "**") && p != "**" {
					return nil, fmt.Errorf("match pattern %q: '**' must be a whole tag part", f)
				}
			}
			m.alts = append(m.alts, parts)
		}
	}
	return m, nil
}

// MustCompileMatch is CompileMatch that panics, for tests and constants.
func MustCompileMatch(pattern string) *Matcher {
	m, err := CompileMatch(pattern)
	if err != nil {
		panic(err)
	}
	return m
}

// String returns the pattern as written.
func (m *Matcher) String() string { return m.src }

// Match reports whether tag matches.
func (m *Matcher) Match(tag string) bool {
	if len(m.alts) > 0 {
		var buf [16]string
		parts := splitTag(tag, buf[:0])
		for _, alt := range m.alts {
			if matchParts(alt, parts) {
				return true
			}
		}
	}
	for _, re := range m.res {
		if re.MatchString(tag) {
			return true
		}
	}
	return false
}

func splitTag(tag string, dst []string) []string {
	for {
		i := strings.IndexByte(tag, '.')
		if i < 0 {
			return append(dst, tag)
		}
		dst = append(dst, tag[:i])
		tag = tag[i+1:]
	}
}

func matchParts(pat, tag []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(tag); i++ {
				if matchParts(rest, tag[i:]) {
					return true
				}
			}
			return false
		}
		if len(tag) == 0 || !globPart(pat[0], tag[0]) {
			return false
		}
		pat, tag = pat[1:], tag[1:]
	}
	return len(tag) == 0
}

// globPart matches one tag part against a pattern part where '*' matches
// any run of characters.
func globPart(pat, s string) bool {
	star := strings.IndexByte(pat, '*')
	if star < 0 {
		return pat == s
	}
	if !strings.HasPrefix(s, pat[:star]) {
		return false
	}
	s = s[star:]
	pat = pat[star+1:]
	for {
		next := strings.IndexByte(pat, '*')
		if next < 0 {
			return strings.HasSuffix(s, pat)
		}
		lit := pat[:next]
		i := strings.Index(s, lit)
		if i < 0 {
			return false
		}
		s = s[i+len(lit):]
		pat = pat[next+1:]
	}
}

// expandBraces turns "a.{b,c.{d,e}}" into [a.b a.c.d a.c.e].
func expandBraces(p string) ([]string, error) {
	open := strings.IndexByte(p, '{')
	if open < 0 {
		if strings.ContainsAny(p, "},") {
			return nil, fmt.Errorf("unbalanced braces")
		}
		return []string{p}, nil
	}
	depth, close := 0, -1
	var commas []int
	for i := open; i < len(p) && close < 0; i++ {
		switch p[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				close = i
			}
		case ',':
			if depth == 1 {
				commas = append(commas, i)
			}
		}
	}
	if close < 0 {
		return nil, fmt.Errorf("unbalanced braces")
	}
	prefix, suffix := p[:open], p[close+1:]
	var out []string
	start := open + 1
	for _, c := range append(commas, close) {
		sub, err := expandBraces(prefix + p[start:c] + suffix)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
		start = c + 1
	}
	return out, nil
}
