package tail

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/mpack"
	"github.com/logship/logship/internal/testutil"
	"github.com/logship/logship/pipeline"
)

// normalize turns decoded msgpack and JSON values into comparable ones.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case int8:
		return float64(x)
	case int16:
		return float64(x)
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case uint8:
		return float64(x)
	case uint16:
		return float64(x)
	case uint32:
		return float64(x)
	case uint64:
		return float64(x)
	case float32:
		return float64(x)
	}
	return v
}

func TestJSONToMsgpack(t *testing.T) {
	valid := []string{
		`{}`,
		` {"a":1} `,
		`{"a":"b","n":-12,"f":1.5e3,"t":true,"x":false,"z":null}`,
		`{"nested":{"a":[1,2,{"b":[]}],"e":{}},"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00"}`,
		`{"big":12345678901234567890,"neg":-9223372036854775808,"huge":1e400}`,
		`{"many":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19]}`,
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16}`,
		`{"long":"` + strings.Repeat("x", 70000) + `","esclong":"` + strings.Repeat(`\n`, 300) + `"}`,
	}
	for _, in := range valid {
		out, ok := appendJSONRecord(nil, []byte(in), nil, 0)
		if !ok {
			t.Errorf("%.60s: refused", in)
			continue
		}
		var got map[string]any
		if err := msgpack.Unmarshal(out, &got); err != nil {
			t.Errorf("%.60s: msgpack does not decode: %v", in, err)
			continue
		}
		var wantV map[string]any
		if err := json.Unmarshal([]byte(strings.Replace(in, "1e400", "1e300", 1)), &wantV); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(in, "1e400") {
			wantV["huge"] = got["huge"]
		}
		if !reflect.DeepEqual(normalize(got), normalize(wantV)) {
			t.Errorf("%.60s: got %.200v", in, got)
		}
	}
	invalid := []string{``, `[]`, `"s"`, `12`, `{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{"a":1}x`, `{"a":tru}`, `{"a":"\x"}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{a:1}`, `{"a":[1,]}`, `{"a":"\u12"}`,
		strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200)}
	for _, in := range invalid {
		dst := []byte("keep")
		out, ok := appendJSONRecord(dst, []byte(in), nil, 0)
		if ok || string(out) != "keep" {
			t.Errorf("%.60q: accepted or changed dst", in)
		}
	}
	// Extra pairs (path_key) land in the same map.
	extra := mpack.AppendString(mpack.AppendString(nil, "file"), "/x.log")
	out, ok := appendJSONRecord(nil, []byte(`{"a":1}`), extra, 1)
	var got map[string]any
	if !ok || msgpack.Unmarshal(out, &got) != nil || got["file"] != "/x.log" || len(got) != 2 {
		t.Errorf("extra pairs: %v %v", ok, got)
	}
}

func FuzzJSONToMsgpack(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":[1,{"b":"\u00e9"}]}`, `{"x":1e5,"y":null}`, `{}`, `{"a":"\ud800"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := appendJSONRecord(nil, []byte(in), nil, 0)
		var wantV any
		jerr := json.Unmarshal([]byte(in), &wantV)
		_, isObj := wantV.(map[string]any)
		if ok {
			var got map[string]any
			if err := msgpack.Unmarshal(out, &got); err != nil {
				t.Fatalf("accepted %q but wrote bad msgpack: %v", in, err)
			}
			if jerr == nil && isObj && !strings.Contains(in, `\u`) && !strings.ContainsAny(in, "eE") {
				if !reflect.DeepEqual(normalize(got), normalize(wantV)) {
					t.Fatalf("%q: got %v want %v", in, got, wantV)
				}
			}
		} else if jerr == nil && isObj && !strings.Contains(in, "\\") && len(in) < 1000 {
			t.Fatalf("refused valid object %q", in)
		}
	})
}

func TestParseRFC3339(t *testing.T) {
	for _, s := range []string{
		"2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123456789Z", "2016-10-06T00:17:09.669794202Z",
		"2024-02-29T23:59:59.5+02:00", "1999-12-31T23:59:59.000001-07:30", "2024-01-02T03:04:05.1234567891Z",
	} {
		got, ok := parseRFC3339([]byte(s))
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			// More than 9 fraction digits: we truncate.
			want, err = time.Parse(time.RFC3339Nano, s[:29]+"Z")
			if err != nil {
				t.Fatal(err)
			}
		}
		if !ok || got != mpack.EventTimeOf(want) {
			t.Errorf("%s: got %v %v, want %v", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "2024-01-02", "2024-01-02T03:04:05", "2024-13-02T03:04:05Z", "2024-01-02T03:04:05.Z", "2024-01-02T03:04:05+0", "xxxx-01-02T03:04:05Z"} {
		if _, ok := parseRFC3339([]byte(s)); ok {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestFormats writes a file in each format and checks the records.
func TestFormats(t *testing.T) {
	long := strings.Repeat("a", 16384)
	ts := "2024-05-06T07:08:09.123456789Z"
	tm, _ := parseRFC3339([]byte(ts))
	type want struct {
		m    map[string]any
		time mpack.EventTime // zero: not checked
	}
	cases := []struct {
		name   string
		format string
		input  string
		want   []want
	}{
		{"none", FormatNone, "plain line\n\n{\"not\":\"parsed\"}\n", []want{
			{m: map[string]any{"log": "plain line"}}, {m: map[string]any{"log": ""}}, {m: map[string]any{"log": `{"not":"parsed"}`}},
		}},
		{"json", FormatJSON, "{\"a\":1,\"b\":{\"c\":[true,null]}}\nnot json\n[1,2]\n{\"broken\":\n", []want{
			{m: map[string]any{"a": float64(1), "b": map[string]any{"c": []any{true, nil}}}},
			{m: map[string]any{"log": "not json"}},
			{m: map[string]any{"log": "[1,2]"}},
			{m: map[string]any{"log": `{"broken":`}},
		}},
		{"cri", FormatCRI, ts + " stdout F hello\n" +
			ts + " stdout P part one, \n" +
			ts + " stderr F an error\n" +
			ts + " stdout P part two, \n" +
			ts + " stdout F end\n" +
			ts + " stderr F\n" +
			"garbage line\n", []want{
			{m: map[string]any{"log": "hello", "stream": "stdout"}, time: tm},
			{m: map[string]any{"log": "an error", "stream": "stderr"}, time: tm},
			{m: map[string]any{"log": "part one, part two, end", "stream": "stdout"}, time: tm},
			{m: map[string]any{"log": "", "stream": "stderr"}, time: tm},
			{m: map[string]any{"log": "garbage line"}},
		}},
		{"docker", FormatDocker,
			`{"log":"hello\n","stream":"stdout","time":"` + ts + `"}` + "\n" +
				`{"log":"` + long + `","stream":"stdout","time":"` + ts + `"}` + "\n" +
				`{"log":"err \"quoted\"\n","stream":"stderr","time":"` + ts + `"}` + "\n" +
				`{"log":"` + long + `","stream":"stdout","time":"` + ts + `"}` + "\n" +
				`{"log":"tail\n","stream":"stdout","time":"` + ts + `","attrs":{"x":"y"}}` + "\n" +
				`{"log":"no time\n","stream":"stdout"}` + "\n" +
				`not json` + "\n", []want{
				{m: map[string]any{"log": "hello", "stream": "stdout"}, time: tm},
				{m: map[string]any{"log": `err "quoted"`, "stream": "stderr"}, time: tm},
				{m: map[string]any{"log": long + long + "tail", "stream": "stdout"}, time: tm},
				{m: map[string]any{"log": "no time", "stream": "stdout"}},
				{m: map[string]any{"log": "not json"}},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, func(cfg *Config) { cfg.Format = c.format })
			appendFile(t, h.path("a.log"), c.input)
			h.start()
			testutil.CheckFor(t, 5*time.Second, func() error {
				if n := h.e.count(); n != len(c.want) {
					return fmt.Errorf("%d records, want %d", n, len(c.want))
				}
				return nil
			})
			for i, r := range h.e.records() {
				if !reflect.DeepEqual(normalize(r.m), normalize(c.want[i].m)) {
					t.Errorf("record %d: got %.300v\nwant %.300v", i, r.m, c.want[i].m)
				}
				if !c.want[i].time.IsZero() && r.time != c.want[i].time {
					t.Errorf("record %d: time %v, want %v", i, r.time, c.want[i].time)
				}
			}
		})
	}
}

// TestMaxLineBytesSplitAndFlagged: a long line is cut, flagged, and the
// file goes on.
func TestMaxLineBytesSplitAndFlagged(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.MaxLineBytes = 100
		c.ReadBufferBytes = 4096
	})
	long := strings.Repeat("0123456789", 25) // 250 bytes: 100 + 100 + 50
	appendFile(t, h.path("a.log"), "short\n"+long+"\nafter\n"+strings.Repeat("é", 60)+"\n")
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 7 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	r := h.e.records()
	type exp struct {
		log   string
		split any
	}
	wantR := []exp{{"short", nil}, {long[:100], true}, {long[100:200], true}, {long[200:], false}, {"after", nil},
		{strings.Repeat("é", 50), true}, {strings.Repeat("é", 10), false}}
	for i, w := range wantR {
		if r[i].log() != w.log || r[i].m["split"] != w.split {
			t.Errorf("record %d: %q split=%v, want %q split=%v", i, r[i].log(), r[i].m["split"], w.log, w.split)
		}
	}
}

// TestCRIPartialSplitAtMax: merged cri messages are bounded too.
func TestCRIPartialSplitAtMax(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Format = FormatCRI
		c.MaxLineBytes = 100
		c.ReadBufferBytes = 4096
	})
	ts := "2024-05-06T07:08:09Z"
	var in strings.Builder
	var whole string
	for i := range 5 {
		part := strings.Repeat(string(rune('a'+i)), 60)
		whole += part
		flag := "P"
		if i == 4 {
			flag = "F"
		}
		fmt.Fprintf(&in, "%s stdout %s %s\n", ts, flag, part)
	}
	appendFile(t, h.path("a.log"), in.String())
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 3 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	var got string
	for i, r := range h.e.records() {
		got += r.log()
		if wantSplit := i < 2; r.m["split"] != wantSplit {
			t.Errorf("record %d split=%v", i, r.m["split"])
		}
	}
	if got != whole {
		t.Errorf("pieces do not add up: %q", got)
	}
}

func TestMultiline(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Multiline.StartRegex = `^\d{4}-`
		c.Multiline.FlushTimeout = conftypes.Duration(150 * time.Millisecond)
	})
	appendFile(t, h.path("a.log"), "orphan continuation\n2024-01-01 first\n  at a\n  at b\n2024-01-01 second\n")
	h.start()
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 2 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	// The last group waits for the flush timeout (no line after it).
	testutil.CheckFor(t, 5*time.Second, func() error {
		if n := h.e.count(); n != 3 {
			return fmt.Errorf("%d records", n)
		}
		return nil
	})
	got := h.e.logs()
	wantL := []string{"orphan continuation", "2024-01-01 first\n  at a\n  at b", "2024-01-01 second"}
	if !reflect.DeepEqual(got, wantL) {
		t.Errorf("got %q", got)
	}
}

func TestCRIParse(t *testing.T) {
	for _, c := range []struct {
		in      string
		ok      bool
		stream  int
		partial bool
		content string
	}{
		{"2024-01-01T00:00:00Z stdout F hi there", true, streamStdout, false, "hi there"},
		{"2024-01-01T00:00:00Z stderr P ", true, streamStderr, true, ""},
		{"2024-01-01T00:00:00Z stderr F", true, streamStderr, false, ""},
		{"2024-01-01T00:00:00Z stdout F:x y", true, streamStdout, false, "y"},
		{"2024-01-01T00:00:00Z stdin F x", false, 0, false, ""},
		{"2024-01-01T00:00:00Z stdout X x", false, 0, false, ""},
		{"notatime stdout F x", false, 0, false, ""},
	} {
		_, s, p, content, ok := parseCRI([]byte(c.in))
		if ok != c.ok || ok && (s != c.stream || p != c.partial || string(content) != c.content) {
			t.Errorf("%q: %v %v %v %q", c.in, ok, s, p, content)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := defaultConfig().Validate(); err == nil || !strings.Contains(err.Error(), "paths") {
		t.Errorf("default config without paths: %v", err)
	}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Format = "xml" }, "format"},
		{func(c *Config) { c.Paths = []string{"/x/[.log"} }, "paths"},
		{func(c *Config) { c.ExcludePaths = []string{"["} }, "exclude_paths"},
		{func(c *Config) { c.Tag = "" }, "tag"},
		{func(c *Config) { c.Key = "" }, "key"},
		{func(c *Config) { c.PathKey = "log" }, "path_key"},
		{func(c *Config) { c.Format = FormatCRI; c.PathKey = "stream" }, "path_key"},
		{func(c *Config) { c.MaxLineBytes = 10 }, "max_line_bytes"},
		{func(c *Config) { c.ReadBufferBytes = 64 << 10 }, "read_buffer_bytes"},
		{func(c *Config) { c.Multiline.StartRegex = "(" }, "multiline.start_regex"},
		{func(c *Config) { c.Batch.MaxEvents = 0 }, "batch.max_events"},
		{func(c *Config) { c.Batch.MaxBytes = 10 }, "batch.max_bytes"},
		{func(c *Config) { c.RefreshInterval = 0 }, "refresh_interval"},
	} {
		cfg := defaultConfig()
		cfg.Paths = []string{"/var/log/*.log"}
		c.mod(cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("unexpected error %v", err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want+":")):
			t.Errorf("want an error naming %s, got %v", c.want, err)
		}
	}
	f := Factory()
	if f.Type != "tail" || f.Kind != pipeline.KindInput {
		t.Errorf("factory %v %v", f.Type, f.Kind)
	}
	if _, err := f.Create(pipeline.Settings{Name: "x", Metrics: pipeline.NopMetrics(pipeline.KindInput, "x")}, f.NewConfig()); err == nil {
		t.Error("Create accepted a config without paths")
	}
}

func TestExpandTag(t *testing.T) {
	for _, c := range [][3]string{
		{"kube.*", "/var/log/containers/a.log", "kube.var.log.containers.a.log"},
		{"app", "/x/y.log", "app"},
		{"*", "rel/x.log", "rel.x.log"},
	} {
		if got := expandTag(c[0], c[1]); got != c[2] {
			t.Errorf("%v: %q", c, got)
		}
	}
}

// TestGolden reads each testdata/FORMAT_NAME.log with that format and
// compares the records with FORMAT_NAME.golden: one JSON object per record,
// {"time": RFC 3339 (checked when present), "record": {...}}.
func TestGolden(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, in := range logs {
		name := strings.TrimSuffix(filepath.Base(in), ".log")
		t.Run(name, func(t *testing.T) {
			format, _, _ := strings.Cut(name, "_")
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile(strings.TrimSuffix(in, ".log") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			type entry struct {
				Time   string         `json:"time"`
				Record map[string]any `json:"record"`
			}
			var want []entry
			for _, l := range strings.Split(strings.TrimSpace(string(golden)), "\n") {
				var e entry
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("golden line %q: %v", l, err)
				}
				want = append(want, e)
			}
			h := newHarness(t, func(c *Config) { c.Format = format })
			appendFile(t, h.path("a.log"), string(data))
			h.start()
			testutil.CheckFor(t, 5*time.Second, func() error {
				if n := h.e.count(); n != len(want) {
					return fmt.Errorf("%d records, want %d", n, len(want))
				}
				return nil
			})
			for i, r := range h.e.records() {
				if !reflect.DeepEqual(normalize(r.m), normalize(want[i].Record)) {
					t.Errorf("record %d:\n got %v\nwant %v", i, r.m, want[i].Record)
				}
				if want[i].Time != "" {
					wt, err := time.Parse(time.RFC3339Nano, want[i].Time)
					if err != nil {
						t.Fatal(err)
					}
					if r.time != mpack.EventTimeOf(wt) {
						t.Errorf("record %d: time %v, want %v", i, r.time, wt)
					}
				}
			}
		})
	}
}
