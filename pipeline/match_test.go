package pipeline

import "testing"

func TestMatch(t *testing.T) {
	cases := []struct {
		pattern string
		yes     []string
		no      []string
	}{
		// Fluentd's documented examples.
		{"a.*", []string{"a.b"}, []string{"a", "a.b.c", "b.a"}},
		{"a.**", []string{"a", "a.b", "a.b.c"}, []string{"b", "ab", "b.a"}},
		{"{a,b}", []string{"a", "b"}, []string{"c", "a.b"}},
		{"a.{b,c}.*", []string{"a.b.x", "a.c.y"}, []string{"a.d.x", "a.b", "a.b.x.y"}},
		{"a.{b,c.**}", []string{"a.b", "a.c", "a.c.d", "a.c.d.e"}, []string{"a.d", "a.b.c"}},
		{"a.** b.*", []string{"a", "a.b", "a.b.c", "b.d"}, []string{"b", "b.d.e", "c"}},
		// More of the same semantics.
		{"**", []string{"a", "a.b.c", "x"}, nil},
		{"*", []string{"a", "b"}, []string{"a.b"}},
		{"**.z", []string{"z", "x.z", "x.y.z"}, []string{"z.x", "xz"}},
		{"a.**.z", []string{"a.z", "a.b.z", "a.b.c.z"}, []string{"a", "a.z.b", "z"}},
		{"a.b*", []string{"a.b", "a.bc", "a.bcd"}, []string{"a.cb", "a.b.c"}},
		{"*.log", []string{"app.log", "x.log"}, []string{"log", "a.b.log"}},
		{"k*s.*", []string{"kits.x", "ks.y", "kubernetes.z"}, []string{"kube.x", "kits", "ks.x.y"}},
		{"{app,sys}.{err,out}", []string{"app.err", "sys.out"}, []string{"app", "app.warn"}},
		{"/app\\.[0-9]+/", []string{"app.1", "app.42"}, []string{"app.x", "xapp.1", "app.1.x"}},
		{"a  b", []string{"a", "b"}, []string{"a b", "c"}},
	}
	for _, c := range cases {
		m, err := CompileMatch(c.pattern)
		if err != nil {
			t.Fatalf("CompileMatch(%q): %v", c.pattern, err)
		}
		for _, tag := range c.yes {
			if !m.Match(tag) {
				t.Errorf("%q should match %q", c.pattern, tag)
			}
		}
		for _, tag := range c.no {
			if m.Match(tag) {
				t.Errorf("%q should not match %q", c.pattern, tag)
			}
		}
	}
}

func TestMatchErrors(t *testing.T) {
	for _, p := range []string{"", "   ", "a.{b,c", "a.b}", "a..b", "a.**b", "/(/", ".a"} {
		if _, err := CompileMatch(p); err == nil {
			t.Errorf("CompileMatch(%q) succeeded, want an error", p)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m := MustCompileMatch("kube.var.log.containers.** app.{web,api}.*")
	b.ReportAllocs()
	for b.Loop() {
		if !m.Match("kube.var.log.containers.nginx-abc_default_nginx-123.log") {
			b.Fatal("no match")
		}
	}
}
