package template

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func record(t *testing.T, v map[string]any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRender(t *testing.T) {
	rec := record(t, map[string]any{
		"service": "api", "n": 42, "neg": -7, "big": uint64(1) << 40, "f": 1.5, "ok": true,
		"empty": "", "nil": nil, "kubernetes": map[string]any{"ns": "prod", "labels": map[string]any{"app": "web"}},
		"list": []any{1, 2}, "bin": []byte("raw"),
	})
	cases := []struct{ tmpl, tag, want string }{
		{"logs", "app.web", "logs"},
		{"logs.{tag}", "app.web", "logs.app.web"},
		{"{tag[0]}-{tag[1]}-{tag[-1]}", "app.web.x", "app-web-x"},
		{"{tag[5]|none}", "app.web", "none"},
		{"{tag[-3]|none}", "app.web", "none"},
		{"{tag|notag}", "", "notag"},
		{"{record.service}", "t", "api"},
		{"{record.n}.{record.neg}.{record.big}.{record.f}.{record.ok}", "t", "42.-7.1099511627776.1.5.true"},
		{"{record.kubernetes.ns}/{record.kubernetes.labels.app}", "t", "prod/web"},
		{"{record.missing|def}", "t", "def"},
		{"{record.missing}", "t", ""},
		{"{record.empty|def}", "t", "def"},
		{"{record.nil|def}", "t", "def"},
		{"{record.list|def}", "t", "def"},
		{"{record.kubernetes|def}", "t", "def"},
		{"{record.service.x|def}", "t", "def"},
		{"{record.bin}", "t", "raw"},
		{"{{literal}}-{tag}", "a", "{literal}-a"},
	}
	for _, c := range cases {
		tp, err := Parse(c.tmpl)
		if err != nil {
			t.Fatalf("%q: %v", c.tmpl, err)
		}
		if got := tp.Render(c.tag, rec); got != c.want {
			t.Errorf("%q with tag %q: got %q, want %q", c.tmpl, c.tag, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"logs.{tag":            "never closed",
		"logs.}":               "closes nothing",
		"{}":                   "empty variable",
		"{host}":               `unknown variable "host"`,
		"{record.}":            "empty field name",
		"{record.a..b}":        "empty field name",
		"{tag[x]}":             "integer",
		"{tag[1000]}":          "integer",
		"{record.a|{b}":        "cannot contain",
		"ok.{tag}.{recordx}":   "unknown variable",
		"{record.a}{Tag}":      `unknown variable "Tag"`,
		"x{record.service|y}}": "closes nothing",
	}
	for in, want := range cases {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("%q: no error, want %q", in, want)
			continue
		}
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want ErrSyntax mentioning %q", in, err, want)
		}
	}
}

func TestStatic(t *testing.T) {
	for in, want := range map[string]string{"logs": "logs", "": "", "a{{b}}": "a{b}"} {
		tp := MustParse(in)
		got, ok := tp.Static()
		if !ok || got != want || tp.UsesRecord() {
			t.Errorf("%q: Static() = %q, %v; UsesRecord %v", in, got, ok, tp.UsesRecord())
		}
	}
	tp := MustParse("a.{tag}")
	if _, ok := tp.Static(); ok || tp.UsesRecord() {
		t.Error("a.{tag}: want not static and not using the record")
	}
	if !MustParse("{record.x}").UsesRecord() {
		t.Error("{record.x}: want UsesRecord")
	}
}

func TestParseField(t *testing.T) {
	p, err := ParseField("record.kubernetes.pod")
	if err != nil || strings.Join(p, "/") != "kubernetes/pod" {
		t.Fatalf("got %v, %v", p, err)
	}
	for _, bad := range []string{"", "a..b", "record."} {
		if _, err := ParseField(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	rec := record(t, map[string]any{"a": 1, "service": "api", "z": "q"})
	tp := MustParse("logs.{tag[1]}.{record.service}")
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = tp.Append(buf[:0], "app.web", rec) }); n != 0 {
		t.Errorf("%v allocations per Append", n)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"logs.{tag}", "{record.a.b|x}", "{{", "}}", "{tag[-1]}"} {
		f.Add(s)
	}
	rec, _ := msgpack.Marshal(map[string]any{"a": map[string]any{"b": "c"}})
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := Parse(s)
		if err != nil {
			return
		}
		_ = tp.Render("x.y.z", rec)
		_ = tp.Render("", nil)
	})
}
