// Package docgen writes the config reference (docs/config-reference.md)
// from the config structs themselves: keys from their yaml tags, defaults
// from the values a role or a plugin factory starts from, descriptions
// from the fields' doc comments. A test fails when the committed file is
// stale; `make docs` writes it again.
package docgen

import (
	"bytes"
	"encoding"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

const module = "github.com/logship/logship"

// repoRoot is the repository's top folder, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

type row struct{ key, typ, def, doc string }

// fieldDocs maps "Type.Field" to doc comments for every struct in a
// package folder.
var docCache = map[string]map[string]string{}

func fieldDocs(pkgPath string) map[string]string {
	if d, ok := docCache[pkgPath]; ok {
		return d
	}
	out := map[string]string{}
	docCache[pkgPath] = out
	rel := strings.TrimPrefix(strings.TrimPrefix(pkgPath, module), "/")
	dir := filepath.Join(repoRoot(), rel)
	fset := token.NewFileSet()
	matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, path := range matches {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			for _, fld := range st.Fields.List {
				text := strings.Join(strings.Fields(fld.Doc.Text()), " ")
				for _, name := range fld.Names {
					out[ts.Name.Name+"."+name.Name] = text
				}
			}
			return true
		})
	}
	return out
}

var (
	sizeType     = reflect.TypeFor[conftypes.Size]()
	durationType = reflect.TypeFor[conftypes.Duration]()
)

var textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()

func typeName(t reflect.Type) string {
	switch t {
	case sizeType:
		return "size"
	case durationType:
		return "duration"
	}
	if t.Implements(textMarshalerType) {
		return "string" // an enum that names its values
	}
	switch t.Kind() {
	case reflect.Slice:
		return "list of " + typeName(t.Elem())
	case reflect.Map:
		return "map"
	case reflect.Struct:
		return "block"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
		return "integer"
	case reflect.Float64, reflect.Float32:
		return "number"
	case reflect.Pointer:
		return typeName(t.Elem())
	}
	return t.Kind().String()
}

func defaultOf(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if s, ok := v.Interface().(fmt.Stringer); ok && (v.Type() == sizeType || v.Type() == durationType) {
		if v.Int() == 0 {
			return "0"
		}
		return s.String()
	}
	if m, ok := v.Interface().(encoding.TextMarshaler); ok {
		if b, err := m.MarshalText(); err == nil {
			return string(b)
		}
	}
	switch v.Kind() {
	case reflect.String:
		if v.String() == "" {
			return `""`
		}
		return v.String()
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			return "[]"
		}
		return strings.ReplaceAll(fmt.Sprint(v.Interface()), "|", `\|`)
	case reflect.Struct:
		return ""
	}
	return fmt.Sprint(v.Interface())
}

func rows(v reflect.Value, prefix string) []row {
	t := v.Type()
	docs := fieldDocs(t.PkgPath())
	var out []row
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		fv := v.Field(i)
		if strings.Contains(opts, "inline") {
			out = append(out, rows(fv, prefix)...)
			continue
		}
		key := prefix + name
		doc := docs[t.Name()+"."+f.Name]
		ft := f.Type
		if ft.Kind() == reflect.Struct && ft != sizeType && ft != durationType {
			out = append(out, row{key, "block", "", doc})
			out = append(out, rows(fv, key+".")...)
			continue
		}
		out = append(out, row{key, typeName(ft), defaultOf(fv), doc})
	}
	return out
}

func table(b *bytes.Buffer, rs []row) {
	b.WriteString("| key | type | default | description |\n| --- | --- | --- | --- |\n")
	for _, r := range rs {
		def := r.def
		if def != "" && !strings.HasPrefix(def, "`") {
			def = "`" + def + "`"
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", r.key, r.typ, def, strings.ReplaceAll(r.doc, "|", `\|`))
	}
	b.WriteString("\n")
}

// roleRows are the rows of a (the agent's defaults), each default followed
// by the aggregator's (g) where the two differ.
func roleRows(a, g reflect.Value, prefix string) []row {
	ra, rg := rows(a, prefix), rows(g, prefix)
	for i := range ra {
		if ra[i].def != rg[i].def {
			ra[i].def = "`" + ra[i].def + "` (aggregator: `" + rg[i].def + "`)"
		}
	}
	return ra
}

// Generate returns the config reference for the plugins in reg.
func Generate(reg *pipeline.Registry) []byte {
	var b bytes.Buffer
	b.WriteString("# Config reference\n\n")
	b.WriteString("Generated by `make docs` from the config structs and their doc comments; CI fails when it is stale. ")
	b.WriteString("Sizes accept `512KiB`, `64MiB`, `1GiB` or a byte count; durations are Go durations (`200ms`, `30s`). ")
	b.WriteString("`${VAR}` and `${VAR:-default}` in values are replaced from the environment after the YAML is parsed, so a value can never change the file's structure. Unknown keys are errors.\n\n")
	agentCfg, agg := agent.Role.Config(), aggregator.Role.Config()
	for _, sec := range []struct {
		name     string
		a, g     reflect.Value
		typeName string
	}{
		{"service", reflect.ValueOf(agentCfg.Service), reflect.ValueOf(agg.Service), "Service"},
		{"buffer", reflect.ValueOf(agentCfg.Buffer), reflect.ValueOf(agg.Buffer), "Buffer"},
	} {
		fmt.Fprintf(&b, "## %s\n\n", sec.name)
		table(&b, roleRows(sec.a, sec.g, sec.name+"."))
	}
	b.WriteString("## Every plugin\n\n")
	b.WriteString("| key | description |\n| --- | --- |\n")
	b.WriteString("| `type` | the plugin type (required) |\n")
	b.WriteString("| `name` | a unique name used in metrics, logs and cursor files; default `TYPE.INDEX` |\n")
	b.WriteString("| `match` | filters and outputs: the tags they take, Fluentd patterns (`a.*`, `a.**`, `{a,b}`, space-separated alternatives); default `**` |\n")
	b.WriteString("| `ack` | inputs: when the source gets its ack. `local` (the default): once the chunk is durable in this process's buffer; `downstream`: once every output matching its tag has delivered it (survives the loss of this host; see Replication levels in operations.md) |\n\n")
	for _, kind := range []pipeline.Kind{pipeline.KindInput, pipeline.KindFilter, pipeline.KindOutput} {
		types := reg.Types(kind)
		if len(types) == 0 {
			continue
		}
		fmt.Fprintf(&b, "## %ss\n\n", kind)
		sort.Strings(types)
		for _, typ := range types {
			f, _ := reg.Lookup(kind, typ)
			fmt.Fprintf(&b, "### %s `%s`\n\n", kind, typ)
			table(&b, roleRows(reflect.ValueOf(conf.PluginConfig(f, agent.Role.Name)).Elem(),
				reflect.ValueOf(conf.PluginConfig(f, aggregator.Role.Name)).Elem(), ""))
		}
	}
	return b.Bytes()
}
