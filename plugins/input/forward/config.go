package forward

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
	"github.com/logship/logship/plugins/forwardproto"
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
	// SelfHostname is the hostname sent in PONG; "" means the node's name
	// (service.node_name: NODE_NAME or the hostname).
	SelfHostname string `yaml:"self_hostname"`
	// Users, when set (with shared_key), also requires a username and
	// password in the handshake.
	Users []User `yaml:"users"`
	// TLS makes the listener speak TLS; ca_file requires client
	// certificates signed by it.
	TLS conftypes.TLS `yaml:"tls"`
	// SourceAddressKey, when set, adds the client's IP address to every
	// record under this key (as fluentd's source_address_key does).
	SourceAddressKey string `yaml:"source_address_key"`
	// Heartbeat answers UDP heartbeats (a 0x00 datagram) on the listen
	// port.
	Heartbeat bool `yaml:"heartbeat"`
	// MaxFrameBytes is the largest request accepted, as it travels on the
	// wire (1KiB to 1GiB); a larger one closes the connection and is
	// counted (the client resends it forever, so it is logged loudly).
	MaxFrameBytes conftypes.Size `yaml:"max_frame_bytes"`
	// MaxDecompressedBytes bounds what the events of one request may take
	// once decompressed or rewritten (max_frame_bytes to 4GiB); a
	// compression bomb is refused, not inflated.
	MaxDecompressedBytes conftypes.Size `yaml:"max_decompressed_bytes"`
	// MaxEntriesPerRequest is the most events one request may carry (1 to
	// 100000000); a request with more closes the connection, is logged and
	// counted (reason too_many_entries).
	MaxEntriesPerRequest int `yaml:"max_entries_per_request"`
	// MaxDepth is how deep maps and arrays may nest in one record, the
	// record counting as 1 (1 to 1000). A deeper event is dropped, counted
	// (dropped_records_total, reason too_deep) and logged; the other events
	// of its request are stored and acknowledged.
	MaxDepth int `yaml:"max_depth"`
	// MemoryLimit bounds the read and decoding buffers of all connections
	// together, beyond the 76KiB each connection keeps. A connection that
	// needs more while it is spent stops being read (TCP backpressure)
	// until other requests finish; a single request needing more than all
	// of it is refused. At least max_frame_bytes + 2 * max_decompressed_bytes
	// + 8.25MiB (a zstd window), at most 64GiB.
	MemoryLimit conftypes.Size `yaml:"memory_limit"`
	// MaxConnections is the most connections open at once (1 to 65536);
	// one more is closed as soon as it is accepted, logged and counted.
	MaxConnections int `yaml:"max_connections"`
	// IdleTimeout closes a connection that sent no complete request for
	// this long while it waits for nothing from the input (1s to 24h).
	IdleTimeout conftypes.Duration `yaml:"idle_timeout"`
	// HandshakeTimeout bounds the TLS handshake and, with shared_key, the
	// HELO/PING/PONG exchange (100ms to 5m).
	HandshakeTimeout conftypes.Duration `yaml:"handshake_timeout"`
	// MaxHandshakeBytes is the largest PING accepted before the client is
	// authenticated (512 to 65536 bytes); a larger one closes the connection.
	MaxHandshakeBytes conftypes.Size `yaml:"max_handshake_bytes"`
	// MaxPendingAcks is how many chunks of one connection may wait for the
	// buffer's acknowledgement before the connection stops being read
	// (TCP backpressure), 1 to 10000.
	MaxPendingAcks int `yaml:"max_pending_acks"`
	// Dedup remembers the ids of chunks already stored and acknowledges a
	// resent chunk without storing it again (effectively-once delivery
	// from logship forward outputs: docs/operations.md).
	Dedup bool `yaml:"dedup"`
	// DedupWindow is the most chunk ids remembered (across restarts), 1 to
	// 100000000: the memory bound of dedup, about 28 bytes of RAM per id
	// (28MB at the default 1000000; memory follows the ids remembered,
	// chunks per second * dedup_retention, up to it), and 24 bytes per id
	// in data_dir (the journal holds up to twice the ids remembered). When
	// full, the oldest id is forgotten to make room. Size it to hold every
	// chunk stored within dedup_retention: at least senders * partitions *
	// (chunks per second per partition) * dedup_retention (what a sender
	// resends after a crash, per partition the chunks acknowledged within
	// its last cursor flush plus max_in_flight, is among them). The default
	// holds 10 minutes at 1666 chunks/s, e.g. 100 senders * 4 partitions *
	// 4 chunks/s. On an agent the default is 100000 (2.8MB; 10 minutes at
	// 166 chunks/s from the host's own clients). An id forgotten to make
	// room sooner than dedup_retention is counted in
	// logship_forward_in_dedup_evicted_early_total and logged: raise it.
	DedupWindow int `yaml:"dedup_window"`
	// DedupRetention is how long every chunk id is remembered after its
	// chunk was stored, for the resends a sender can make (1s to 24h); then
	// it is forgotten. A logship sender resends, after a crash or a lost
	// connection, per partition the chunks acknowledged within its last
	// cursor flush (250ms) plus up to its max_in_flight (16)
	// unacknowledged ones, once it is back: after its restart, or its
	// retry backoff (retry_max 30s) and ack_timeout (30s); fluentd resends
	// a chunk whose ack is lost after its ack_response_timeout (190s).
	// 10m covers a restart, a node reboot and several retries with margin.
	// An id forgotten sooner to make room in dedup_window is reported as a
	// too small dedup_window. A resend later than this (or than the ids
	// remembered, logship_forward_in_dedup_horizon_seconds), e.g. after an
	// outage that outlasted it, is stored again.
	DedupRetention conftypes.Duration `yaml:"dedup_retention"`
}

// agentDedupWindow is dedup_window's default on an agent: its clients are
// the host's own applications, fluent-bit and fluentd, whose chunks are
// a few hundred a second at most (1MB/s of logs in chunks of 6KB or more
// is 166 chunks/s) and resent within dedup_retention; the window bounds
// dedup at 2.8MB of the agent's memory whatever the clients do.
const agentDedupWindow = 100000

// RoleDefaults sets the defaults of role (conf applies them before the
// file): an agent remembers fewer chunk ids than an aggregator.
func (c *Config) RoleDefaults(role string) {
	if role == "agent" {
		c.DedupWindow = agentDedupWindow
	}
}

func defaultConfig() *Config {
	return &Config{
		Listen:               "0.0.0.0:24224",
		Heartbeat:            true,
		MaxFrameBytes:        32 << 20,
		MaxDecompressedBytes: 64 << 20,
		MaxEntriesPerRequest: 1000000,
		MaxDepth:             forwardproto.DefaultMaxDepth,
		MemoryLimit:          256 << 20,
		MaxConnections:       1024,
		IdleTimeout:          conftypes.Duration(5 * time.Minute),
		HandshakeTimeout:     conftypes.Duration(10 * time.Second),
		MaxHandshakeBytes:    forwardproto.DefaultMaxHandshakeBytes,
		MaxPendingAcks:       64,
		Dedup:                true,
		DedupWindow:          1000000,
		DedupRetention:       conftypes.Duration(10 * time.Minute),
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
	between := func(field string, v, lo, hi int64, unit func(int64) string) {
		if v < lo || v > hi {
			errs = append(errs, pipeline.FieldErr(field, "%s is out of range: must be %s to %s", unit(v), unit(lo), unit(hi)))
		}
	}
	num := func(v int64) string { return fmt.Sprint(v) }
	size := func(v int64) string { return conftypes.Size(v).String() }
	dur := func(v int64) string { return time.Duration(v).String() }
	between("max_frame_bytes", int64(c.MaxFrameBytes), 1<<10, 1<<30, size)
	between("max_decompressed_bytes", int64(c.MaxDecompressedBytes), int64(c.MaxFrameBytes), 4<<30, size)
	between("max_entries_per_request", int64(c.MaxEntriesPerRequest), 1, 100000000, num)
	between("max_depth", int64(c.MaxDepth), 1, 1000, num)
	between("memory_limit", int64(c.MemoryLimit), int64(c.limits().RequestBytes()), 64<<30, size)
	between("max_connections", int64(c.MaxConnections), 1, 65536, num)
	between("idle_timeout", int64(c.IdleTimeout), int64(time.Second), int64(24*time.Hour), dur)
	between("handshake_timeout", int64(c.HandshakeTimeout), int64(100*time.Millisecond), int64(5*time.Minute), dur)
	between("max_handshake_bytes", int64(c.MaxHandshakeBytes), 512, 64<<10, num)
	between("max_pending_acks", int64(c.MaxPendingAcks), 1, 10000, num)
	if c.Dedup {
		between("dedup_window", int64(c.DedupWindow), 1, 100000000, num)
		between("dedup_retention", int64(c.DedupRetention), int64(time.Second), int64(24*time.Hour), dur)
	}
	return errors.Join(errs...)
}

// limits are the decoder's limits this config sets (Memory aside).
func (c *Config) limits() forwardproto.Limits {
	return forwardproto.Limits{
		MaxFrameBytes:        int(c.MaxFrameBytes),
		MaxDecompressedBytes: int(c.MaxDecompressedBytes),
		MaxEntries:           c.MaxEntriesPerRequest,
		MaxDepth:             c.MaxDepth,
		MaxHandshakeBytes:    int(c.MaxHandshakeBytes),
	}
}
