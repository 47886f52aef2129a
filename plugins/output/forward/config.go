package forward

import (
	"errors"
	"net"

	"github.com/logship/logship/conf"
	"github.com/logship/logship/pipeline"
)

// Config is the forward output's configuration.
type Config struct {
	// Servers are the receivers (host:port): aggregators, fluentd or
	// fluent-bit. Partition p prefers servers[p % len] and fails over to
	// the next healthy one.
	Servers []string `yaml:"servers"`
	// RequireAck waits for the receiver's {"ack": chunk} before the
	// buffer's cursor moves past a chunk. Without it a chunk counts as
	// delivered once written to the socket.
	RequireAck bool `yaml:"require_ack"`
	// AckTimeout is how long an acknowledgement may take before the
	// connection is dropped and the chunk resent.
	AckTimeout conf.Duration `yaml:"ack_timeout"`
	// Compress is gzip (CompressedPackedForward) or none.
	Compress string `yaml:"compress"`
	// SharedKey performs the HELO/PING/PONG handshake with this key.
	SharedKey string `yaml:"shared_key"`
	// SelfHostname is the hostname sent in PING; "" means the machine's.
	SelfHostname string `yaml:"self_hostname"`
	// Username is sent in the handshake when the server asks for one.
	Username string `yaml:"username"`
	// Password goes with Username.
	Password string `yaml:"password"`
	// TLS connects with TLS; ca_file verifies the server, cert_file and
	// key_file present a client certificate.
	TLS conf.TLS `yaml:"tls"`
	// ConnectTimeout bounds a connection attempt and its handshake.
	ConnectTimeout conf.Duration `yaml:"connect_timeout"`
	// RetryMin is the first wait before a failed chunk is sent again; it
	// doubles (with jitter) up to RetryMax.
	RetryMin conf.Duration `yaml:"retry_min"`
	// RetryMax caps the wait between attempts.
	RetryMax conf.Duration `yaml:"retry_max"`
	// MaxInFlight is how many chunks of one partition may wait for their
	// acknowledgement at once.
	MaxInFlight int `yaml:"max_in_flight"`
}

func defaultConfig() *Config {
	return &Config{
		RequireAck:     true,
		AckTimeout:     conf.Duration(30e9),
		Compress:       "gzip",
		ConnectTimeout: conf.Duration(10e9),
		RetryMin:       conf.Duration(500e6),
		RetryMax:       conf.Duration(30e9),
		MaxInFlight:    16,
	}
}

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Servers) == 0 {
		errs = append(errs, pipeline.FieldErr("servers", "at least one server is required"))
	}
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			errs = append(errs, pipeline.FieldErr("servers", "%q: %v", s, err))
		}
	}
	switch c.Compress {
	case "gzip", "none":
	default:
		errs = append(errs, pipeline.FieldErr("compress", "%q is not one of gzip, none", c.Compress))
	}
	if c.AckTimeout.D() <= 0 {
		errs = append(errs, pipeline.FieldErr("ack_timeout", "must be positive"))
	}
	if c.RetryMin.D() <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, pipeline.FieldErr("retry_max", "retry_min must be positive and retry_max at least retry_min"))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, pipeline.FieldErr("max_in_flight", "must be at least 1"))
	}
	if c.Username != "" && c.SharedKey == "" {
		errs = append(errs, pipeline.FieldErr("username", "needs shared_key"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, pipeline.FieldErr("tls", "cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}
