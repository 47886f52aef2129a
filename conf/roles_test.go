package conf_test

import (
	"os"
	"strings"
	"testing"

	"github.com/logship/logship/agent"
	"github.com/logship/logship/aggregator"
	"github.com/logship/logship/conf"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/input/dummy"
	fwdin "github.com/logship/logship/plugins/input/forward"
	kafkaout "github.com/logship/logship/plugins/output/kafka"
	"github.com/logship/logship/plugins/output/stdout"
)

// roleRegistry has the forward input, the agent's default one.
func roleRegistry(t *testing.T) *pipeline.Registry {
	t.Helper()
	r, err := pipeline.NewRegistry(dummy.Factory(), fwdin.Factory(), stdout.Factory())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRoleDefaults: what each role brings when the file says nothing, and
// that whatever the file says wins.
func TestRoleDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skipf("SKIP: no hostname to compare with (%v)", err)
	}
	onlyOutput := "outputs: [{type: stdout}]\n"
	cases := []struct {
		name     string
		role     conf.Role
		text     string
		env      map[string]string
		dataDir  string
		node     string
		inputs   []string // type/name
		listen   string   // of the first input, when forward
		httpAddr string
	}{
		{"agent, nothing set", agent.Role, onlyOutput, nil,
			"/var/lib/logship", host, []string{"forward/forward.0"}, "0.0.0.0:24224", "127.0.0.1:2020"},
		{"agent, NODE_NAME", agent.Role, onlyOutput, map[string]string{"NODE_NAME": "node-7"},
			"/var/lib/logship", "node-7", []string{"forward/forward.0"}, "0.0.0.0:24224", "127.0.0.1:2020"},
		{"agent, empty NODE_NAME is the hostname", agent.Role, onlyOutput, map[string]string{"NODE_NAME": ""},
			"/var/lib/logship", host, []string{"forward/forward.0"}, "0.0.0.0:24224", "127.0.0.1:2020"},
		{"agent, explicit config wins", agent.Role, `
service: {data_dir: /tmp/x, node_name: "${MY_NODE}"}
inputs:
  - type: forward
    name: apps
    listen: 127.0.0.1:24300
outputs: [{type: stdout}]
`, map[string]string{"NODE_NAME": "node-7", "MY_NODE": "mine"},
			"/tmp/x", "mine", []string{"forward/apps"}, "127.0.0.1:24300", "127.0.0.1:2020"},
		{"agent, listed inputs get no forward", agent.Role, `
inputs: [{type: dummy}]
outputs: [{type: stdout}]
`, nil, "/var/lib/logship", host, []string{"dummy/dummy.0"}, "", "127.0.0.1:2020"},
		{"aggregator keeps the common data_dir", aggregator.Role, `
inputs: [{type: forward}]
outputs: [{type: stdout}]
`, map[string]string{"NODE_NAME": "agg-0"}, "./data", "agg-0", []string{"forward/forward.0"}, "0.0.0.0:24224", "127.0.0.1:2021"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := conf.Parse("f.yaml", []byte(strings.TrimPrefix(c.text, "\n")), c.role, roleRegistry(t), env(c.env))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Service.DataDir != c.dataDir || cfg.Service.NodeName != c.node || cfg.Service.HTTPListen != c.httpAddr {
				t.Fatalf("data_dir %q node_name %q http_listen %q, want %q %q %q",
					cfg.Service.DataDir, cfg.Service.NodeName, cfg.Service.HTTPListen, c.dataDir, c.node, c.httpAddr)
			}
			var got []string
			for _, p := range cfg.Inputs {
				got = append(got, p.Type+"/"+p.Name)
			}
			if strings.Join(got, ",") != strings.Join(c.inputs, ",") {
				t.Fatalf("inputs %v, want %v", got, c.inputs)
			}
			if fc, ok := cfg.Inputs[0].Config.(*fwdin.Config); ok && fc.Listen != c.listen {
				t.Fatalf("forward input listens on %q, want %q", fc.Listen, c.listen)
			}
			if cfg.Inputs[0].Default != (c.text == onlyOutput) {
				t.Fatalf("Default = %v", cfg.Inputs[0].Default)
			}
		})
	}
}

// TestAggregatorNeedsInputs: only the agent has a default input; an
// aggregator without inputs is told so.
func TestAggregatorNeedsInputs(t *testing.T) {
	_, err := conf.Parse("agg.yaml", []byte("outputs: [{type: stdout}]\n"), aggregator.Role, roleRegistry(t), env(nil))
	if err == nil || !strings.Contains(err.Error(), "inputs: at least one input is required") {
		t.Fatalf("err = %v", err)
	}
}

// TestDefaultInputNotAddedOverErrors: a file whose inputs are all wrong
// gets its errors, not a silent default input.
func TestDefaultInputNotAddedOverErrors(t *testing.T) {
	_, err := conf.Parse("a.yaml", []byte("inputs: [{type: nosuch}]\noutputs: [{type: stdout}]\n"), agent.Role, roleRegistry(t), env(nil))
	if err == nil || !strings.Contains(err.Error(), `unknown input type "nosuch"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestRoleMemoryLimit: an agent runs with a 48MiB soft memory limit (128MiB
// when it publishes to Kafka itself) unless its file says otherwise (0 turns
// it off); the aggregator has none.
func TestRoleMemoryLimit(t *testing.T) {
	cases := []struct {
		name string
		role conf.Role
		text string
		want int64
	}{
		{"agent default", agent.Role, "outputs: [{type: stdout}]\n", 48 << 20},
		{"agent, set", agent.Role, "service: {memory_limit: 100MiB}\noutputs: [{type: stdout}]\n", 100 << 20},
		{"agent, turned off", agent.Role, "service: {memory_limit: 0}\noutputs: [{type: stdout}]\n", 0},
		{"aggregator default", aggregator.Role, "inputs: [{type: forward}]\noutputs: [{type: stdout}]\n", 0},
		{"agent publishing to kafka", agent.Role, "outputs: [{type: stdout}, {type: kafka, brokers: [127.0.0.1:9092], topic: logs}]\n", 128 << 20},
		{"agent publishing to kafka, set", agent.Role, "service: {memory_limit: 48MiB}\noutputs: [{type: kafka, brokers: [127.0.0.1:9092], topic: logs}]\n", 48 << 20},
		{"aggregator publishing to kafka", aggregator.Role, "inputs: [{type: forward}]\noutputs: [{type: kafka, brokers: [127.0.0.1:9092], topic: logs}]\n", 0},
	}
	reg, err := pipeline.NewRegistry(dummy.Factory(), fwdin.Factory(), stdout.Factory(), kafkaout.Factory())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := conf.Parse("f.yaml", []byte(c.text), c.role, reg, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if got := int64(cfg.Service.MemoryLimit); got != c.want {
				t.Fatalf("memory_limit %d, want %d", got, c.want)
			}
		})
	}
}
