package kubernetes

import (
	"errors"
	"strings"
	"testing"

	"github.com/logship/logship/conf"
	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// TestConfigYAML: the tls block as a config file spells it, decoded and
// validated by conf: a block that sets one key keeps the default ca_file;
// the flat keys of before are unknown; errors name the key and its line.
func TestConfigYAML(t *testing.T) {
	// an input and an output, which a config needs, that are never made
	reg, err := pipeline.NewRegistry(Factory(),
		pipeline.NewInputFactory("stub", func() *stubConfig { return &stubConfig{} },
			func(pipeline.Settings, *stubConfig) (pipeline.Input, error) { return nil, errors.New("stub") }),
		pipeline.NewOutputFactory("stub", func() *stubConfig { return &stubConfig{} },
			func(pipeline.Settings, *stubConfig) (pipeline.Output, error) { return nil, errors.New("stub") }))
	if err != nil {
		t.Fatal(err)
	}
	parse := func(filter string) (*Config, error) {
		text := "inputs: [{type: stub}]\noutputs: [{type: stub}]\nfilters:\n  - type: kubernetes\n    match: \"kube.**\"\n" + filter
		c, err := conf.Parse("agent.yaml", []byte(text), conf.Role{Name: "agent"}, reg, func(string) (string, bool) { return "", false })
		if err != nil {
			return nil, err
		}
		if len(c.Filters) != 1 {
			t.Fatalf("%d filters", len(c.Filters))
		}
		return c.Filters[0].Config.(*Config), nil
	}
	for _, tc := range []struct {
		filter string
		want   conftypes.TLS
	}{
		{"", conftypes.TLS{CAFile: DefaultCAFile}},
		{"    tls:\n      insecure_skip_verify: true\n", conftypes.TLS{CAFile: DefaultCAFile, InsecureSkipVerify: true}},
		{"    tls: {ca_file: /etc/kubelet-ca.crt, server_name: node-a}\n", conftypes.TLS{CAFile: "/etc/kubelet-ca.crt", ServerName: "node-a"}},
		{"    tls: {ca_file: \"\"}\n", conftypes.TLS{}},
		{"    tls:\n      cert_file: /etc/logship/kubelet-client.crt\n      key_file: /etc/logship/kubelet-client.key\n",
			conftypes.TLS{CAFile: DefaultCAFile, CertFile: "/etc/logship/kubelet-client.crt", KeyFile: "/etc/logship/kubelet-client.key"}},
	} {
		c, err := parse(tc.filter)
		if err != nil {
			t.Errorf("%q: %v", tc.filter, err)
			continue
		}
		if c.TLS != tc.want {
			t.Errorf("%q: tls %+v, want %+v", tc.filter, c.TLS, tc.want)
		}
	}
	for _, tc := range []struct {
		filter string
		want   []string // substrings of the error
	}{
		{"    ca_file: /etc/ca.crt\n", []string{"agent.yaml:6:", "filters[0].ca_file: unknown key"}},
		{"    tls_insecure_skip_verify: true\n", []string{"agent.yaml:6:", "filters[0].tls_insecure_skip_verify: unknown key"}},
		{"    tls: {insecure: true}\n", []string{"agent.yaml:6:", "filters[0].tls.insecure: unknown key"}},
		{"    tls:\n      cert_file: /etc/c.crt\n", []string{"agent.yaml:6:", "filters[0].tls: cert_file and key_file go together"}},
	} {
		_, err := parse(tc.filter)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: want an error with %q, got %v", tc.filter, w, err)
			}
		}
	}
}

type stubConfig struct{}

func (*stubConfig) Validate() error { return nil }
