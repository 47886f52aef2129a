package forward

import (
	"errors"
	"net"

	"github.com/logship/logship/conf"
	"github.com/logship/logship/pipeline"
)

// User is one username and password accepted in the handshake.
type User struct {
	// Username the client sends in its PING.
	Username string `yaml:"username"`
	// Password whose digest the client sends.
	Password string `yaml:"password"`
}

// Config is the forward input's configuration.
type Config struct {
	// Listen is the TCP address to accept connections on; the UDP
	// heartbeat listens on the same port.
	Listen string `yaml:"listen"`
	// SharedKey, when set, makes the HELO/PING/PONG handshake mandatory:
	// clients must prove they know it.
	SharedKey string `yaml:"shared_key"`
	// SelfHostname is the hostname sent in PONG; "" means the machine's.
	SelfHostname string `yaml:"self_hostname"`
	// Users, when set (with shared_key), also requires a username and
	// password in the handshake.
	Users []User `yaml:"users"`
	// TLS makes the listener speak TLS; ca_file requires client
	// certificates signed by it.
	TLS conf.TLS `yaml:"tls"`
	// SourceAddressKey, when set, adds the client's IP address to every
	// record under this key (as fluentd's source_address_key does).
	SourceAddressKey string `yaml:"source_address_key"`
	// Heartbeat answers UDP heartbeats (a 0x00 datagram) on the listen
	// port.
	Heartbeat bool `yaml:"heartbeat"`
	// MaxFrameBytes is the largest request accepted; a larger one closes
	// the connection and is counted (the client resends it forever, so it
	// is logged loudly).
	MaxFrameBytes conf.Size `yaml:"max_frame_bytes"`
	// MaxDecompressedBytes bounds what one compressed request may inflate
	// to; a compression bomb is refused, not inflated.
	MaxDecompressedBytes conf.Size `yaml:"max_decompressed_bytes"`
	// MaxPendingAcks is how many chunks of one connection may wait for the
	// buffer's acknowledgement before the connection stops being read
	// (TCP backpressure).
	MaxPendingAcks int `yaml:"max_pending_acks"`
	// Dedup remembers the ids of chunks already stored and acknowledges a
	// resent chunk without storing it again.
	Dedup bool `yaml:"dedup"`
	// DedupWindow is how many chunk ids are remembered (across restarts).
	DedupWindow int `yaml:"dedup_window"`
}

func defaultConfig() *Config {
	return &Config{
		Listen:               "0.0.0.0:24224",
		Heartbeat:            true,
		MaxFrameBytes:        32 << 20,
		MaxDecompressedBytes: 128 << 20,
		MaxPendingAcks:       64,
		Dedup:                true,
		DedupWindow:          100000,
	}
}

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, pipeline.FieldErr("listen", "%v", err))
	}
	if len(c.Users) > 0 && c.SharedKey == "" {
		errs = append(errs, pipeline.FieldErr("users", "needs shared_key: users are checked in the shared-key handshake"))
	}
	for i, u := range c.Users {
		if u.Username == "" {
			errs = append(errs, pipeline.FieldErr("users", "entry %d has no username", i))
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, pipeline.FieldErr("tls", "cert_file and key_file go together"))
	}
	if c.TLS.CAFile != "" && c.TLS.CertFile == "" {
		errs = append(errs, pipeline.FieldErr("tls.ca_file", "needs cert_file and key_file"))
	}
	if c.MaxFrameBytes < 1024 {
		errs = append(errs, pipeline.FieldErr("max_frame_bytes", "must be at least 1KiB"))
	}
	if c.MaxDecompressedBytes < c.MaxFrameBytes {
		errs = append(errs, pipeline.FieldErr("max_decompressed_bytes", "must be at least max_frame_bytes"))
	}
	if c.MaxPendingAcks < 1 {
		errs = append(errs, pipeline.FieldErr("max_pending_acks", "must be at least 1"))
	}
	if c.Dedup && c.DedupWindow < 1 {
		errs = append(errs, pipeline.FieldErr("dedup_window", "must be at least 1 when dedup is on"))
	}
	return errors.Join(errs...)
}
