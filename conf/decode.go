package conf

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode stores node into the value pointed to by out, strictly: unknown
// keys and values of the wrong kind are errors, all of them reported.
// lines, when not nil, records the line of every key path relative to the
// decoded block ("tls.cert_file").
func (l *loader) decode(node *yaml.Node, out any, path string, lines map[string]int) {
	l.decodeValue(node, reflect.ValueOf(out).Elem(), path, "", lines)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (l *loader) decodeValue(n *yaml.Node, v reflect.Value, path, rel string, lines map[string]int) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			l.add(n.Line, path, "%s", cleanYAMLError(err))
		}
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(textUnmarshalerType) && n.Kind == yaml.ScalarNode {
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			l.add(n.Line, path, "%v", err)
		}
		return
	}
	isNull := n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	switch v.Kind() {
	case reflect.Pointer:
		if isNull {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		l.decodeValue(n, v.Elem(), path, rel, lines)
	case reflect.Struct:
		if isNull {
			return
		}
		if n.Kind != yaml.MappingNode {
			l.add(n.Line, path, "want a mapping")
			return
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := join(path, k.Value)
			if seen[k.Value] {
				l.add(k.Line, kp, "duplicate key")
				continue
			}
			seen[k.Value] = true
			idx, ok := fields[k.Value]
			if !ok {
				known := make([]string, 0, len(fields))
				for name := range fields {
					known = append(known, name)
				}
				sort.Strings(known)
				l.add(k.Line, kp, "unknown key (known: %s)", strings.Join(known, ", "))
				continue
			}
			r := join(rel, k.Value)
			if lines != nil {
				lines[r] = k.Line
			}
			l.decodeValue(val, v.FieldByIndex(idx), kp, r, lines)
		}
	case reflect.Slice:
		if isNull {
			v.SetZero()
			return
		}
		items := n.Content
		if n.Kind == yaml.ScalarNode && v.Type().Elem().Kind() == reflect.String {
			items = []*yaml.Node{n} // a single value where a list is expected
		} else if n.Kind != yaml.SequenceNode {
			l.add(n.Line, path, "want a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			l.decodeValue(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("%s[%d]", rel, i), lines)
		}
		v.Set(s)
	case reflect.Map:
		if isNull {
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			l.add(n.Line, path, "%s", cleanYAMLError(err))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			l.add(n.Line, path, "want a string")
			return
		}
		if isNull {
			v.SetString("")
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := parseBool(n)
		if !ok {
			l.add(n.Line, path, "want true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if n.Kind != yaml.ScalarNode || err != nil {
			l.add(n.Line, path, "want an integer, got %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, v.Type().Bits())
		if n.Kind != yaml.ScalarNode || err != nil {
			l.add(n.Line, path, "want a non-negative integer, got %q", n.Value)
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, v.Type().Bits())
		if n.Kind != yaml.ScalarNode || err != nil {
			l.add(n.Line, path, "want a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Interface:
		var x any
		if err := n.Decode(&x); err != nil {
			l.add(n.Line, path, "%s", cleanYAMLError(err))
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		l.add(n.Line, path, "cannot decode into %s", v.Type())
	}
}

func parseBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

// structFields maps yaml names to field indexes, following inline structs.
func structFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			for k, idx := range structFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = []int{i}
	}
	return out
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(s)
	if i := strings.Index(s, ": "); strings.HasPrefix(s, "line ") && i > 0 {
		s = s[i+2:]
	}
	return s
}
