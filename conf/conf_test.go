package conf_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/broker"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/input/dummy"
	"github.com/logship/logship/plugins/output/file"
	"github.com/logship/logship/plugins/output/stdout"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// registry holds a fixed set of plugins, so that the messages listing the
// known types do not change as plugins are added.
func registry() *pipeline.Registry {
	r, err := pipeline.NewRegistry(dummy.Factory(), file.Factory(), stdout.Factory())
	if err != nil {
		panic(err)
	}
	return r
}

func parse(t *testing.T, text string, vars map[string]string) (*conf.Config, error) {
	t.Helper()
	return conf.Parse("agent.yaml", []byte(strings.TrimPrefix(text, "\n")), agent.Role, registry(), env(vars))
}

const minimal = `
inputs:
  - type: dummy
outputs:
  - type: stdout
`

func TestDefaultsAndMinimal(t *testing.T) {
	cfg, err := parse(t, minimal, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Buffer.Partitions != 4 || cfg.Buffer.MaxBytes != 1<<30 || cfg.Buffer.SegmentBytes != 64<<20 ||
		cfg.Buffer.Sync != broker.SyncAlways || cfg.Buffer.SyncInterval.D() != 200*time.Millisecond || cfg.Buffer.WhenFull != broker.Block ||
		!cfg.Buffer.ReuseSegments {
		t.Fatalf("buffer defaults: %+v", cfg.Buffer)
	}
	if cfg.Service.ShutdownTimeout.D() != 30*time.Second || cfg.Service.HTTPListen != "127.0.0.1:2020" {
		t.Fatalf("service defaults: %+v", cfg.Service)
	}
	if got := cfg.Inputs[0].Name; got != "dummy.0" {
		t.Fatalf("default name %q, want dummy.0", got)
	}
	if got := cfg.Inputs[0].Ack; got != pipeline.AckLocal {
		t.Fatalf("default ack %q, want local", got)
	}
	if got := cfg.Outputs[0]; got.Name != "stdout.0" || got.Match != "**" || !got.Matcher.Match("any.tag") {
		t.Fatalf("output defaults: %+v", got)
	}
	agg, err := conf.Parse("agg.yaml", []byte(minimal), aggregator.Role, registry(), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if agg.Buffer.Partitions != 8 || agg.Service.HTTPListen != "127.0.0.1:2021" {
		t.Fatalf("aggregator defaults: %+v %+v", agg.Buffer, agg.Service)
	}
}

func TestFullConfig(t *testing.T) {
	cfg, err := parse(t, `
service:
  data_dir: ${DATA:-/tmp/ls}
  log_level: debug
  http_listen: ""
  shutdown_timeout: 5s
buffer:
  partitions: 2
  max_bytes: 512MiB
  segment_bytes: 8MiB
  sync: always
  sync_interval: 50ms
  when_full: drop_oldest
  reuse_segments: false
inputs:
  - type: dummy
    name: gen
    ack: downstream
    tag: app.${APP}
    rate: 0
    count: 10
outputs:
  - type: file
    name: all
    match: "app.** sys.*"
    path: ${OUT}/all.log
    tag_key: tag
    time_key: time
`, map[string]string{"APP": "web", "OUT": "/var/out"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Service.DataDir != "/tmp/ls" || cfg.Service.HTTPListen != "" || cfg.Service.ShutdownTimeout.D() != 5*time.Second {
		t.Fatalf("service: %+v", cfg.Service)
	}
	if cfg.Buffer.MaxBytes != 512<<20 || cfg.Buffer.SegmentBytes != 8<<20 || cfg.Buffer.Partitions != 2 || cfg.Buffer.WhenFull != broker.DropOldest ||
		cfg.Buffer.ReuseSegments {
		t.Fatalf("buffer: %+v", cfg.Buffer)
	}
	in := cfg.Inputs[0]
	if in.Name != "gen" || in.Line != 15 || in.Ack != pipeline.AckDownstream {
		t.Fatalf("input %s at line %d, ack %q", in.Name, in.Line, in.Ack)
	}
	out := cfg.Outputs[0]
	if !out.Matcher.Match("sys.x") || out.Matcher.Match("sys.x.y") {
		t.Fatal("match pattern not compiled as written")
	}
	if got := reflectField(out.Config, "Path"); got != "/var/out/all.log" {
		t.Fatalf("path %q", got)
	}
	if got := reflectField(in.Config, "Tag"); got != "app.web" {
		t.Fatalf("tag %q", got)
	}
}

// TestErrors checks exact messages and lines: every error at once.
func TestErrors(t *testing.T) {
	cases := []struct {
		name string
		text string
		vars map[string]string
		want []string
	}{
		{"unknown top key", `
inputs: [{type: dummy}]
outputs: [{type: stdout}]
ouputs: []
`, nil, []string{"agent.yaml:3: ouputs: unknown key (known: service, buffer, inputs, filters, outputs)"}},
		{"unknown nested key and bad size and bad duration", `
service:
  data_dir: /x
  shutdown_timeot: 1s
buffer:
  max_bytes: 12XB
  sync_interval: soon
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:3: service.shutdown_timeot: unknown key (known: data_dir, http_listen, log_format, log_level, memory_limit, node_name, shutdown_timeout)",
			`agent.yaml:5: buffer.max_bytes: invalid size "12XB" (want a byte count or a number with KiB, MiB, GiB)`,
			`agent.yaml:6: buffer.sync_interval: invalid duration "soon" (want a Go duration such as 200ms, 30s)`,
		}},
		{"plugin errors", `
inputs:
  - type: dummy
    rate: fast
    colour: blue
  - type: nosuch
outputs:
  - type: file
    match: "a.{b"
  - name: x
`, nil, []string{
			`agent.yaml:3: inputs[0].rate: want a number, got "fast"`,
			"agent.yaml:4: inputs[0].colour: unknown key (known: chunk_events, count, rate, record, sequence_key, start_sequence, tag)",
			`agent.yaml:5: inputs[1].type: unknown input type "nosuch" (known: dummy)`,
			`agent.yaml:8: outputs[0].match: match pattern "a.{b": unbalanced braces`,
			"agent.yaml:7: outputs[0].path: is required",
			"agent.yaml:9: outputs[1].type: is required (one of file, stdout)",
		}},
		{"ack level", `
inputs:
  - type: dummy
    ack: all
outputs:
  - type: stdout
    ack: local
`, nil, []string{
			`agent.yaml:3: inputs[0].ack: "all" is not one of local, downstream`,
			"agent.yaml:6: outputs[0].ack: unknown key (known: tag_key, time_key)",
		}},
		{"missing required sections", `
service:
  log_level: loud
`, nil, []string{
			`agent.yaml:2: service.log_level: "loud" is not one of debug, info, warn, error`,
			"agent.yaml:1: inputs: at least one input is required",
			"agent.yaml:1: outputs: at least one output is required",
		}},
		{"env not set", `
inputs:
  - type: dummy
    tag: ${NOPE}
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:3: environment variable NOPE is not set (write ${NOPE:-default} for a default)",
			"agent.yaml:3: inputs[0].tag: must not be empty",
		}},
		{"duplicate names and validation", `
buffer:
  partitions: 0
  when_full: drop_newest
inputs:
  - type: dummy
    name: a
    chunk_events: 0
outputs:
  - type: stdout
    name: a
  - type: stdout
    name: a
`, nil, []string{
			"agent.yaml:2: buffer.partitions: 0 is out of range 1..1024",
			`agent.yaml:3: buffer.when_full: "drop_newest" is not one of block, drop_oldest`,
			"agent.yaml:7: inputs[0].chunk_events: must be at least 1",
			`agent.yaml:11: outputs: name "a" is already used by the component on line 9`,
		}},
		{"buffer bounds", `
buffer:
  partitions: 2000
  segment_bytes: 2GiB
  max_bytes: 2PiB
  sync: sometimes
  sync_interval: 0s
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:2: buffer.partitions: 2000 is out of range 1..1024",
			"agent.yaml:3: buffer.segment_bytes: 2GiB is above the maximum 1GiB",
			`agent.yaml:4: buffer.max_bytes: invalid size "2PiB" (want a byte count or a number with KiB, MiB, GiB)`,
			`agent.yaml:5: buffer.sync: "sometimes" is not one of always, interval, none`,
			"agent.yaml:6: buffer.sync_interval: 0s is out of range 1ms..1m0s",
		}},
		{"buffer bounds against each other", `
buffer:
  partitions: 64
  segment_bytes: 4KiB
  max_bytes: 256KiB
  sync: always
  sync_interval: 2m
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:4: buffer.max_bytes: 256KiB must be at least 512KiB for 64 partitions (two 4KiB segments each)",
			"agent.yaml:6: buffer.sync_interval: 2m0s is out of range 1ms..1m0s",
		}},
		{"buffer sizes", `
buffer:
  segment_bytes: 1000
  max_bytes: 2048PiB
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:2: buffer.segment_bytes: 1000 is below the minimum 4KiB",
			`agent.yaml:3: buffer.max_bytes: invalid size "2048PiB" (want a byte count or a number with KiB, MiB, GiB)`,
		}},
		{"buffer too small for its segments", `
buffer:
  segment_bytes: 64MiB
  max_bytes: 100MiB
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:3: buffer.max_bytes: 100MiB must be at least twice segment_bytes (64MiB)",
		}},
		{"buffer above the maximum", `
buffer:
  max_bytes: 2048TiB
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, []string{
			"agent.yaml:2: buffer.max_bytes: 2048TiB is above the maximum 1024TiB",
		}},
		{"yaml syntax", "outputs: []\ninputs:\n\t- type: dummy\n", nil, []string{"agent.yaml:3: found character that cannot start any token"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(t, c.text, c.vars)
			var errs conf.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("want conf.Errors, got %v", err)
			}
			var got []string
			for _, e := range errs {
				got = append(got, e.Error())
			}
			sortedWant := append([]string(nil), c.want...)
			if strings.Join(sorted(got), "\n") != strings.Join(sorted(sortedWant), "\n") {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	cfg, err := parse(t, `
# ${NOT_EXPANDED_IN_COMMENTS}
inputs:
  - type: dummy
    tag: ${A}.${B:-dflt}.${C:-}x.$${LIT}
outputs: [{type: stdout}]
`, map[string]string{"A": "one", "C": ""})
	if err != nil {
		t.Fatal(err)
	}
	if got := reflectField(cfg.Inputs[0].Config, "Tag"); got != "one.dflt.x.${LIT}" {
		t.Fatalf("tag %q", got)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]conftypes.Size{"512KiB": 512 << 10, "64MiB": 64 << 20, "1GiB": 1 << 30, "1048576": 1 << 20, "10KB": 10000} {
		got, err := conftypes.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "ten", "99999999999999GiB"} {
		if _, err := conftypes.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestPluginValidateFieldErrorLine(t *testing.T) {
	_, err := parse(t, `
inputs:
  - type: dummy
    tag: ""
    count: -3
outputs: [{type: stdout}]
`, nil)
	want := "agent.yaml:3: inputs[0].tag: must not be empty\nagent.yaml:4: inputs[0].count: must not be negative"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// TestEnvExpansionCannotChangeStructure: a variable's value is expanded in
// the parsed value, so " #", ": " and newlines in it stay part of one string
// and cannot add keys or cut the value (before, the raw text was expanded
// and then parsed: "a #b" became "a", and a newline could inject a key).
func TestEnvExpansionCannotChangeStructure(t *testing.T) {
	cfg, err := parse(t, `
inputs:
  - type: dummy
    tag: ${T}
    count: ${N}
outputs: [{type: stdout}]
`, map[string]string{"T": "a #b: c\n    count: 99", "N": "7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := reflectField(cfg.Inputs[0].Config, "Tag"); got != "a #b: c\n    count: 99" {
		t.Fatalf("tag %q", got)
	}
	if got := cfg.Inputs[0].Config.(*dummy.Config).Count; got != 7 {
		t.Fatalf("count %d, want 7 (a plain scalar is typed by its expansion)", got)
	}
}

// TestServiceAndBufferValidate: the service and buffer blocks validate
// like every plugin, each error at its key's line, and their enums parse
// themselves (one list per enum, in the broker).
func TestServiceAndBufferValidate(t *testing.T) {
	_, err := parse(t, `
service:
  shutdown_timeout: 2h
  log_format: xml
  memory_limit: 2048GiB
buffer:
  when_full: drop_newest
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil)
	want := []string{
		"agent.yaml:2: service.shutdown_timeout: 2h0m0s is out of range 0s..1h0m0s",
		`agent.yaml:3: service.log_format: "xml" is not one of console, json`,
		"agent.yaml:4: service.memory_limit: 2TiB is out of range 0..1TiB",
		`agent.yaml:6: buffer.when_full: "drop_newest" is not one of block, drop_oldest`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Fatalf("got %v\nwant %s", err, strings.Join(want, "\n"))
	}
	var b conf.Buffer
	if err := (&b).Validate(); err == nil {
		t.Fatal("a zero buffer block validated")
	}
	if err := conf.CommonDefaults().Buffer.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}
