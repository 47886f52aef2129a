package conf

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/logship/logship/pipeline"
)

// Error is one problem in a config file.
type Error struct {
	File string
	Line int    // 0 when the problem is not tied to a line
	Path string // key path: "outputs[0].servers"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a config file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

type loader struct {
	file string
	errs Errors
}

func (l *loader) add(line int, path, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Load reads, expands, decodes and validates a config file for a role.
// The error, if any, is an Errors listing every problem.
func Load(path string, role Role, reg *pipeline.Registry) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(path, data, role, reg, os.LookupEnv)
}

var envRef = regexp.MustCompile(`\$\$\{|\$\{([^}:]*)(:-([^}]*))?\}`)
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv replaces ${VAR} and ${VAR:-default} in every scalar value of
// the parsed document ($${ stays a literal ${). Expansion happens after
// YAML parsing, in values only, so a variable's value can never change the
// document's structure: a value holding " #", ": " or a newline stays one
// string (OpenTelemetry's environment-variable RFC does the same). Keys and
// comments are never expanded. A plain (unquoted) scalar is typed by what it
// expands to (PORT=8080 gives an integer); a quoted one stays a string.
func (l *loader) expandEnv(n *yaml.Node, lookup func(string) (string, bool)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			l.expandEnv(c, lookup)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			l.expandEnv(n.Content[i], lookup)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = l.expandString(n.Value, n.Line, lookup)
		if n.Style == 0 || n.Style == yaml.FlowStyle {
			n.Tag = "" // typed again from the expanded value
			if n.Value == "" {
				n.Tag = "!!str" // an empty expansion is an empty string, not null
			}
		}
	}
}

func (l *loader) expandString(s string, line int, lookup func(string) (string, bool)) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$${" {
			return "${"
		}
		sub := envRef.FindStringSubmatch(m)
		name, hasDef, def := sub[1], sub[2] != "", sub[3]
		if !envName.MatchString(name) {
			l.add(line, "", "invalid environment variable reference %q", m)
			return m
		}
		v, ok := lookup(name)
		if ok && (v != "" || !hasDef) {
			return v
		}
		if hasDef {
			return def
		}
		l.add(line, "", "environment variable %s is not set (write ${%s:-default} for a default)", name, name)
		return ""
	})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse is Load on bytes already read; lookup resolves environment
// variables.
func Parse(file string, data []byte, role Role, reg *pipeline.Registry, lookup func(string) (string, bool)) (*Config, error) {
	if role.Name == "" {
		return nil, Errors{{File: file, Msg: "no role given"}}
	}
	l := &loader{file: file}
	cfg := role.Config()
	cfg.File = file

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			var line int
			fmt.Sscan(m[1], &line)
			l.add(line, "", "%s", m[2])
		} else {
			l.add(0, "", "%s", strings.TrimPrefix(msg, "yaml: "))
		}
		return nil, l.errs
	}
	l.expandEnv(&doc, lookup)
	var root *yaml.Node
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if root == nil || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		l.add(0, "", "the file is empty")
		return nil, l.errs
	}
	if root.Kind != yaml.MappingNode {
		l.add(root.Line, "", "the file must be a mapping of service, buffer, inputs, filters, outputs")
		return nil, l.errs
	}
	seen := map[string]bool{}
	blockLines := map[string]map[string]int{"service": {}, "buffer": {}}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if seen[k.Value] {
			l.add(k.Line, k.Value, "duplicate key")
			continue
		}
		seen[k.Value] = true
		switch k.Value {
		case "service":
			l.decode(v, &cfg.Service, "service", blockLines["service"])
		case "buffer":
			l.decode(v, &cfg.Buffer, "buffer", blockLines["buffer"])
		case "inputs":
			cfg.Inputs = l.plugins(v, "inputs", pipeline.KindInput, reg, role.Name)
		case "filters":
			cfg.Filters = l.plugins(v, "filters", pipeline.KindFilter, reg, role.Name)
		case "outputs":
			cfg.Outputs = l.plugins(v, "outputs", pipeline.KindOutput, reg, role.Name)
		default:
			l.add(k.Line, k.Value, "unknown key (known: service, buffer, inputs, filters, outputs)")
		}
	}
	l.defaultInputs(cfg, role, reg, seen["inputs"])
	if role.Adjust != nil {
		role.Adjust(cfg, blockLines["service"])
	}
	if cfg.Service.NodeName == "" {
		cfg.Service.NodeName = nodeName(lookup)
	}
	l.validateTop(cfg, root, blockLines)
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool { return l.errs[i].Line < l.errs[j].Line })
		return nil, l.errs
	}
	return cfg, nil
}

// nodeName is the default node name: $NODE_NAME, else the hostname.
func nodeName(lookup func(string) (string, bool)) string {
	if v, ok := lookup("NODE_NAME"); ok && v != "" {
		return v
	}
	h, _ := os.Hostname()
	return h
}

// PluginConfig returns f's defaults for role: a config with a
// RoleDefaults method (the forward input's smaller dedup window on an
// agent) gets the role's applied, before the file's settings.
func PluginConfig(f pipeline.Factory, role string) pipeline.Config {
	c := f.NewConfig()
	if rd, ok := c.(interface{ RoleDefaults(role string) }); ok {
		rd.RoleDefaults(role)
	}
	return c
}

// defaultInputs gives a config without inputs the role's default ones,
// each with its plugin's defaults. A file whose inputs failed to decode
// gets none (its errors are reported instead).
func (l *loader) defaultInputs(cfg *Config, role Role, reg *pipeline.Registry, listed bool) {
	if len(cfg.Inputs) > 0 || (listed && l.hasErrorAt("inputs")) {
		return
	}
	for _, typ := range role.DefaultInputs {
		f, ok := reg.Lookup(pipeline.KindInput, typ)
		if !ok {
			continue
		}
		p := Plugin{Kind: pipeline.KindInput, Type: typ, Name: fmt.Sprintf("%s.%d", typ, len(cfg.Inputs)), Config: PluginConfig(f, role.Name), Factory: f, Default: true}
		if err := p.Config.Validate(); err != nil {
			l.validationErrors(err, "inputs (default "+typ+")", 0, nil)
			continue
		}
		cfg.Inputs = append(cfg.Inputs, p)
	}
}

func keyLine(root *yaml.Node, path ...string) int {
	n := root
	line := root.Line
	for _, p := range path {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == p {
				line = n.Content[i].Line
				n = n.Content[i+1]
				found = true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

func (l *loader) validateTop(cfg *Config, root *yaml.Node, blockLines map[string]map[string]int) {
	at := func(path ...string) int { return keyLine(root, path...) }
	l.validationErrors(cfg.Service.Validate(), "service", at("service"), blockLines["service"])
	l.validationErrors(cfg.Buffer.Validate(), "buffer", at("buffer"), blockLines["buffer"])
	if len(cfg.Inputs) == 0 && !l.hasErrorAt("inputs") {
		l.add(at("inputs"), "inputs", "at least one input is required")
	}
	if len(cfg.Outputs) == 0 && !l.hasErrorAt("outputs") {
		l.add(at("outputs"), "outputs", "at least one output is required")
	}
	// Names are unique within a kind (metrics carry the kind; an input and
	// an output may both be forward.0).
	for _, list := range [][]Plugin{cfg.Inputs, cfg.Filters, cfg.Outputs} {
		names := map[string]int{}
		for _, p := range list {
			if prev, dup := names[p.Name]; dup {
				l.add(p.Line, string(p.Kind)+"s", "name %q is already used by the component on line %d", p.Name, prev)
				continue
			}
			names[p.Name] = p.Line
		}
	}
}

func (l *loader) hasErrorAt(prefix string) bool {
	for _, e := range l.errs {
		if strings.HasPrefix(e.Path, prefix) {
			return true
		}
	}
	return false
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (l *loader) plugins(n *yaml.Node, section string, kind pipeline.Kind, reg *pipeline.Registry, role string) []Plugin {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		l.add(n.Line, section, "want a list of %ss", kind)
		return nil
	}
	var out []Plugin
	for i, item := range n.Content {
		path := fmt.Sprintf("%s[%d]", section, i)
		if item.Kind != yaml.MappingNode {
			l.add(item.Line, path, "want a mapping with a type")
			continue
		}
		p := Plugin{Kind: kind, Line: item.Line}
		rest := &yaml.Node{Kind: yaml.MappingNode, Line: item.Line, Column: item.Column}
		typeLine := item.Line
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			switch {
			case k.Value == "type":
				p.Type, typeLine = v.Value, k.Line
			case k.Value == "name":
				p.Name = v.Value
				if !nameRe.MatchString(v.Value) {
					l.add(k.Line, path+".name", "%q is not a valid name (letters, digits, '_', '.', '-')", v.Value)
				}
			case k.Value == "ack" && kind == pipeline.KindInput:
				lvl, err := pipeline.ParseAckLevel(v.Value)
				if err != nil || v.Kind != yaml.ScalarNode {
					l.add(k.Line, path+".ack", "%q is not one of local, downstream", v.Value)
				}
				p.Ack = lvl
			case k.Value == "match" && kind != pipeline.KindInput:
				p.Match = v.Value
				m, err := pipeline.CompileMatch(v.Value)
				if err != nil {
					l.add(k.Line, path+".match", "%v", err)
				}
				p.Matcher = m
			default:
				rest.Content = append(rest.Content, k, v)
			}
		}
		if p.Type == "" {
			l.add(item.Line, path+".type", "is required (one of %s)", strings.Join(reg.Types(kind), ", "))
			continue
		}
		f, ok := reg.Lookup(kind, p.Type)
		if !ok {
			l.add(typeLine, path+".type", "unknown %s type %q (known: %s)", kind, p.Type, strings.Join(reg.Types(kind), ", "))
			continue
		}
		p.Factory = f
		if p.Name == "" {
			p.Name = fmt.Sprintf("%s.%d", p.Type, i)
		}
		if kind == pipeline.KindInput && p.Ack == "" {
			p.Ack = pipeline.AckLocal
		}
		if kind != pipeline.KindInput && p.Match == "" {
			p.Match = "**"
			p.Matcher = pipeline.MustCompileMatch("**")
		}
		p.Config = PluginConfig(f, role)
		lines := map[string]int{}
		before := len(l.errs)
		l.decode(rest, p.Config, path, lines)
		if len(l.errs) == before {
			if err := p.Config.Validate(); err != nil {
				l.validationErrors(err, path, item.Line, lines)
			}
		}
		out = append(out, p)
	}
	return out
}

// validationErrors turns a Validate error (maybe joined FieldErrors) into
// located errors.
// validationErrors reports what a Validate returned, each FieldError at its
// key's line (the block's line for a key the file does not set). A field
// that already failed to decode is not reported twice.
func (l *loader) validationErrors(err error, path string, line int, lines map[string]int) {
	if err == nil {
		return
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var fe *pipeline.FieldError
		if errors.As(e, &fe) {
			if l.hasErrorAt(path + "." + fe.Field) {
				continue
			}
			ln, ok := lines[fe.Field]
			if !ok {
				ln = line
			}
			l.add(ln, path+"."+fe.Field, "%v", fe.Err)
			continue
		}
		l.add(line, path, "%v", e)
	}
}
