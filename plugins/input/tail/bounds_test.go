package tail

import (
	"strings"
	"testing"
	"time"

	"github.com/logship/logship/conftypes"
)

// TestConfigBounds: every number of the config is checked against both
// of its bounds; the edges themselves are accepted.
func TestConfigBounds(t *testing.T) {
	d := func(v time.Duration) conftypes.Duration { return conftypes.Duration(v) }
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string // "" for valid
	}{
		{"refresh_interval low", func(c *Config) { c.RefreshInterval = d(9 * time.Millisecond) }, "refresh_interval"},
		{"refresh_interval negative", func(c *Config) { c.RefreshInterval = d(-time.Second) }, "refresh_interval"},
		{"refresh_interval min", func(c *Config) { c.RefreshInterval = d(10 * time.Millisecond) }, ""},
		{"refresh_interval max", func(c *Config) { c.RefreshInterval = d(maxRefreshInterval) }, ""},
		{"refresh_interval high", func(c *Config) { c.RefreshInterval = d(maxRefreshInterval + 1) }, "refresh_interval"},

		{"ignore_older off", func(c *Config) { c.IgnoreOlder = 0 }, ""},
		{"ignore_older negative", func(c *Config) { c.IgnoreOlder = d(-time.Hour) }, "ignore_older"},
		{"ignore_older low", func(c *Config) { c.IgnoreOlder = d(time.Millisecond) }, "ignore_older"},
		{"ignore_older min", func(c *Config) { c.IgnoreOlder = d(time.Second) }, ""},
		{"ignore_older max", func(c *Config) { c.IgnoreOlder = d(maxIgnoreOlder) }, ""},
		{"ignore_older high", func(c *Config) { c.IgnoreOlder = d(maxIgnoreOlder + 1) }, "ignore_older"},

		{"rotate_wait zero", func(c *Config) { c.RotateWait = 0 }, ""},
		{"rotate_wait negative", func(c *Config) { c.RotateWait = d(-1) }, "rotate_wait"},
		{"rotate_wait max", func(c *Config) { c.RotateWait = d(maxRotateWait) }, ""},
		{"rotate_wait high", func(c *Config) { c.RotateWait = d(maxRotateWait + 1) }, "rotate_wait"},

		{"partial_flush_timeout zero", func(c *Config) { c.PartialFlushTimeout = 0 }, ""},
		{"partial_flush_timeout negative", func(c *Config) { c.PartialFlushTimeout = d(-1) }, "partial_flush_timeout"},
		{"partial_flush_timeout max", func(c *Config) { c.PartialFlushTimeout = d(maxFlushTimeout) }, ""},
		{"partial_flush_timeout high", func(c *Config) { c.PartialFlushTimeout = d(maxFlushTimeout + 1) }, "partial_flush_timeout"},

		{"max_line_bytes low", func(c *Config) { c.MaxLineBytes = 63 }, "max_line_bytes"},
		{"max_line_bytes negative", func(c *Config) { c.MaxLineBytes = -1 }, "max_line_bytes"},
		{"max_line_bytes min", func(c *Config) { c.MaxLineBytes = 64 }, ""},
		{"max_line_bytes max", func(c *Config) { c.MaxLineBytes = maxMaxLineBytes; c.ReadBufferBytes = 2 * maxMaxLineBytes }, ""},
		{"max_line_bytes high", func(c *Config) { c.MaxLineBytes = maxMaxLineBytes + 1; c.ReadBufferBytes = 2 * maxMaxLineBytes }, "max_line_bytes"},

		{"read_buffer_bytes low", func(c *Config) { c.ReadBufferBytes = 4<<10 - 1; c.MaxLineBytes = 64 }, "read_buffer_bytes"},
		{"read_buffer_bytes min", func(c *Config) { c.ReadBufferBytes = 4 << 10; c.MaxLineBytes = 64 }, ""},
		{"read_buffer_bytes not above max_line_bytes", func(c *Config) { c.ReadBufferBytes = 64 << 10 }, "read_buffer_bytes"},
		{"read_buffer_bytes max", func(c *Config) { c.ReadBufferBytes = maxReadBufferBytes }, ""},
		{"read_buffer_bytes high", func(c *Config) { c.ReadBufferBytes = maxReadBufferBytes + 1 }, "read_buffer_bytes"},

		{"multiline.flush_timeout zero with regex", func(c *Config) { c.Multiline.StartRegex = "^x"; c.Multiline.FlushTimeout = 0 }, "multiline.flush_timeout"},
		{"multiline.flush_timeout zero without regex", func(c *Config) { c.Multiline.FlushTimeout = 0 }, ""},
		{"multiline.flush_timeout negative", func(c *Config) { c.Multiline.FlushTimeout = d(-1) }, "multiline.flush_timeout"},
		{"multiline.flush_timeout min", func(c *Config) { c.Multiline.StartRegex = "^x"; c.Multiline.FlushTimeout = d(time.Millisecond) }, ""},
		{"multiline.flush_timeout max", func(c *Config) { c.Multiline.StartRegex = "^x"; c.Multiline.FlushTimeout = d(maxFlushTimeout) }, ""},
		{"multiline.flush_timeout high", func(c *Config) { c.Multiline.StartRegex = "^x"; c.Multiline.FlushTimeout = d(maxFlushTimeout + 1) }, "multiline.flush_timeout"},

		{"batch.max_events low", func(c *Config) { c.Batch.MaxEvents = 0 }, "batch.max_events"},
		{"batch.max_events negative", func(c *Config) { c.Batch.MaxEvents = -5 }, "batch.max_events"},
		{"batch.max_events min", func(c *Config) { c.Batch.MaxEvents = 1 }, ""},
		{"batch.max_events max", func(c *Config) { c.Batch.MaxEvents = maxBatchEvents }, ""},
		{"batch.max_events high", func(c *Config) { c.Batch.MaxEvents = maxBatchEvents + 1 }, "batch.max_events"},

		{"batch.max_bytes low", func(c *Config) { c.Batch.MaxBytes = 1<<10 - 1 }, "batch.max_bytes"},
		{"batch.max_bytes min", func(c *Config) { c.Batch.MaxBytes = 1 << 10 }, ""},
		{"batch.max_bytes max", func(c *Config) { c.Batch.MaxBytes = maxBatchBytes }, ""},
		{"batch.max_bytes high", func(c *Config) { c.Batch.MaxBytes = maxBatchBytes + 1 }, "batch.max_bytes"},

		{"batch.flush_interval zero", func(c *Config) { c.Batch.FlushInterval = 0 }, ""},
		{"batch.flush_interval negative", func(c *Config) { c.Batch.FlushInterval = d(-1) }, "batch.flush_interval"},
		{"batch.flush_interval max", func(c *Config) { c.Batch.FlushInterval = d(maxBatchFlushInterval) }, ""},
		{"batch.flush_interval high", func(c *Config) { c.Batch.FlushInterval = d(maxBatchFlushInterval + 1) }, "batch.flush_interval"},
	} {
		cfg := defaultConfig()
		cfg.Paths = []string{"/var/log/*.log"}
		c.mod(cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.name, err)
		case c.want != "" && err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.want != "":
			// Exactly one error, naming the field.
			if msg := err.Error(); !strings.HasPrefix(msg, c.want+": ") || strings.Contains(msg, "\n") {
				t.Errorf("%s: want one error naming %s, got %q", c.name, c.want, msg)
			}
		}
	}
	// Every error at once.
	cfg := defaultConfig()
	cfg.Paths = []string{"/var/log/*.log"}
	cfg.RefreshInterval, cfg.RotateWait, cfg.Batch.MaxEvents = 0, d(-1), 0
	if err := cfg.Validate(); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Errorf("want three errors, got %v", err)
	}
}
