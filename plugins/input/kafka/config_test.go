package kafka

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := func(c *Config) {
		c.Brokers = []string{"127.0.0.1:9092"}
		c.Topics = []string{"ingest"}
		c.Group = "logship"
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{"defaults with the required fields", func(*Config) {}, nil},
		{"regex", func(c *Config) { c.Topics = nil; c.TopicRegex = "^logs\\." }, nil},
		{"empty", func(c *Config) { *c = *defaultConfig() }, []string{"brokers:", "topics:", "group:"}},
		{"both topics and regex", func(c *Config) { c.TopicRegex = "x" }, []string{"topic_regex: goes without topics"}},
		{"bad regex", func(c *Config) { c.Topics = nil; c.TopicRegex = "(" }, []string{"topic_regex:"}},
		{"bad topic", func(c *Config) { c.Topics = []string{"a b"} }, []string{"topics: [0]"}},
		{"bad broker", func(c *Config) { c.Brokers = []string{"nohost", ":1", "h:0"} }, []string{"[0] \"nohost\"", "[1] \":1\": no host", "[2] \"h:0\": port"}},
		{"format", func(c *Config) { c.Format = "xml" }, []string{"format: \"xml\""}},
		{"tag uses tag", func(c *Config) { c.Tag = "a.{tag}" }, []string{"tag: ", "use {topic}"}},
		{"tag syntax", func(c *Config) { c.Tag = "a.{topic" }, []string{"tag: ", "never closed"}},
		{"tag unknown var", func(c *Config) { c.Tag = "{nope}" }, []string{"variables are topic, topic[N]"}},
		{"empty tag", func(c *Config) { c.Tag = "" }, []string{"tag: must not be empty"}},
		{"start offset", func(c *Config) { c.StartOffset = "middle" }, []string{"start_offset:"}},
		{"batch", func(c *Config) { c.Batch.MaxEvents = 0; c.Batch.MaxBytes = 1 }, []string{"batch.max_events", "batch.max_bytes"}},
		{"pending below batch", func(c *Config) { c.MaxPendingBytes = 1 << 10 }, []string{"max_pending_bytes"}},
		{"timers", func(c *Config) {
			c.CommitInterval = 1
			c.RevokeTimeout = 0
			c.HeartbeatInterval = c.SessionTimeout
		}, []string{"commit_interval", "revoke_timeout", "heartbeat_interval"}},
		{"rebalance below revoke", func(c *Config) { c.RevokeTimeout = c.RebalanceTimeout }, []string{"rebalance_timeout: must be longer than revoke_timeout"}},
		{"sasl", func(c *Config) { c.SASL.Mechanism = "GSSAPI" }, []string{"sasl.mechanism: \"GSSAPI\""}},
		{"sasl user", func(c *Config) { c.SASL.Mechanism = "SCRAM-SHA-512" }, []string{"sasl.username"}},
		{"sasl without mechanism", func(c *Config) { c.SASL.Password = "x" }, []string{"sasl.mechanism: is required"}},
		{"tls pair", func(c *Config) { c.TLS.CertFile = "c.pem" }, []string{"tls: cert_file and key_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			ok(c)
			tc.edit(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseTag(t *testing.T) {
	t.Parallel()
	rec := []byte{0x81, 0xa3, 's', 'v', 'c', 0xa3, 'a', 'p', 'i'} // {"svc": "api"}
	for _, tc := range []struct{ tmpl, topic, want string }{
		{"{topic}", "logs.web", "logs.web"},
		{"kafka.{topic}", "logs", "kafka.logs"},
		{"{topic[0]}.{topic[-1]}", "a.b.c", "a.c"},
		{"{topic[5]|none}", "a", "none"},
		{"fixed", "logs", "fixed"},
		{"{{topic}}", "logs", "{topic}"},
		{"{record.svc}.{topic}", "t", "api.t"},
		{"{record.missing|x}", "t", "x"},
		{"{topicx|y}", "t", ""}, // an unknown variable: refused below
	} {
		tt, err := parseTag(tc.tmpl)
		if tc.tmpl == "{topicx|y}" {
			if err == nil {
				t.Errorf("%q: no error", tc.tmpl)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.tmpl, err)
		}
		if got := tt.Render(tc.topic, rec); got != tc.want {
			t.Errorf("%q on %q: %q, want %q", tc.tmpl, tc.topic, got, tc.want)
		}
	}
}
