package forward

import (
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/pipeline"
)

// Config is the forward output's configuration.
type Config struct {
	// Servers are the receivers (host:port): logship aggregators, fluentd
	// or fluent-bit. A host that is a DNS name stands for every address it
	// resolves to (the IPv4 ones when it has any, else the IPv6 ones), so
	// a Kubernetes headless Service names the whole aggregator tier. Each
	// buffer partition sends to one of the addresses, chosen by rendezvous
	// hashing on the partition and this output's sender id, while that
	// address is healthy, and fails over to its next choice otherwise.
	Servers []string `yaml:"servers"`
	// ResolveInterval is how often the DNS names in servers are resolved
	// again: new addresses are used at once, and an address that is gone
	// is left once the chunks in flight on it are acknowledged (or have
	// waited ack_timeout; they are then sent elsewhere). A change moves
	// only the partitions whose choice it changes. A failed lookup keeps
	// the addresses the name had. 0 resolves once, at start.
	ResolveInterval conftypes.Duration `yaml:"resolve_interval"`
	// RequireAck sends every chunk with its id and waits for the
	// receiver's {"ack": id} before the buffer's cursor moves past it
	// (at-least-once). Without it a chunk counts as delivered once written
	// to the socket, and a connection that breaks can lose what was in it.
	RequireAck bool `yaml:"require_ack"`
	// AckTimeout is how long the ack of a sent chunk may take, and how long
	// a write may wait for a receiver that does not read; past it the
	// connection is closed and every chunk waiting on it is sent again
	// (with the same id, so a logship receiver stores it once).
	AckTimeout conftypes.Duration `yaml:"ack_timeout"`
	// Compress is none (PackedForward, the default), gzip
	// (CompressedPackedForward) or zstd (fluentd 1.19+ and logship
	// receivers). Compression trades CPU for bytes on the wire. Measured on
	// 1000-event chunks (BenchmarkCompression, one core of a shared 2-core
	// VM): gzip and zstd shrink application log lines from 213 to 42 and 38
	// bytes per event and Kubernetes container logs from 338 to 27 and 23,
	// but cost the sender 0.6 to 1.1 us of CPU per event (none: under 15
	// ns) and the receiver 0.25 to 0.8 us more per event than none; over
	// loopback one output delivers about 7 million events/s uncompressed
	// and about 1 million with gzip or zstd (BenchmarkForwardToOwnInput).
	// Turn it on where bandwidth costs more than CPU (metered or
	// cross-region links); fluentd and Fluent Bit do not compress by
	// default either.
	Compress string `yaml:"compress"`
	// SharedKey, when set, performs the HELO/PING/PONG handshake with this
	// key on every connection. A refused handshake is logged and retried
	// with backoff.
	SharedKey string `yaml:"shared_key"`
	// SelfHostname is the hostname sent in PING; "" means the service's
	// node_name (NODE_NAME or the machine's hostname). It must differ from
	// the receiver's own name.
	SelfHostname string `yaml:"self_hostname"`
	// Username is sent in the handshake when the receiver's HELO carries
	// an auth salt (needs shared_key). Without one, an empty username and
	// its digest are sent, as Fluent Bit does (its in_forward sends a salt
	// even when it has no users), and the receiver decides: one that
	// requires users refuses the handshake, which is logged and counted as
	// failures_total{reason="auth"}.
	Username string `yaml:"username"`
	// Password goes with username.
	Password string `yaml:"password"`
	// TLS connects with TLS. It is on when any of ca_file, cert_file,
	// insecure_skip_verify or server_name is set: ca_file verifies the
	// server (the system's roots without it), cert_file and key_file
	// present a client certificate, server_name overrides the host name
	// verified (the host of each server by default).
	TLS conftypes.TLS `yaml:"tls"`
	// ConnectTimeout bounds one connection attempt: TCP connect, TLS and
	// shared-key handshakes.
	ConnectTimeout conftypes.Duration `yaml:"connect_timeout"`
	// TCPKeepalive is the interval of TCP keepalive probes on idle
	// connections (connections are kept open and reused); 0 turns them off.
	TCPKeepalive conftypes.Duration `yaml:"tcp_keepalive"`
	// RetryMin is the wait after a server's first failure before it is
	// tried again; the wait doubles with every further failure in a row,
	// with jitter, up to retry_max. Meanwhile its chunks go to the other
	// servers, or wait when none is healthy.
	RetryMin conftypes.Duration `yaml:"retry_min"`
	// RetryMax caps the wait between attempts on a failing server.
	RetryMax conftypes.Duration `yaml:"retry_max"`
	// MaxInFlight is how many chunks of one partition may be sent and
	// waiting for their acks at once.
	MaxInFlight int `yaml:"max_in_flight"`
	// MaxInFlightBytes bounds the memory of the chunks of all partitions
	// sent and waiting for their acks, or waiting for a server, together
	// (64KiB to 4GiB): what the output holds in memory, a chunk counted by
	// the buffer memory it was read into (its events, up to about twice
	// that). A chunk that would go past
	// it waits until earlier ones are acknowledged (one chunk alone always
	// goes, whatever its size). max_in_flight chunks per partition can be
	// up to max_frame_bytes each, so without this bound an output could
	// hold partitions * max_in_flight such chunks, and it does while every
	// server is down. 8MiB keeps a loopback or LAN link busy (bench/rss:
	// about 2 million 200-byte events/s through an agent over loopback)
	// and covers 100ms of round trip at 80MB/s.
	MaxInFlightBytes conftypes.Size `yaml:"max_in_flight_bytes"`
}

func defaultConfig() *Config {
	return &Config{
		ResolveInterval:  conftypes.Duration(30 * time.Second),
		RequireAck:       true,
		AckTimeout:       conftypes.Duration(30 * time.Second),
		Compress:         "none",
		ConnectTimeout:   conftypes.Duration(10 * time.Second),
		TCPKeepalive:     conftypes.Duration(30 * time.Second),
		RetryMin:         conftypes.Duration(500 * time.Millisecond),
		RetryMax:         conftypes.Duration(30 * time.Second),
		MaxInFlight:      16,
		MaxInFlightBytes: 8 << 20,
	}
}

// maxInFlightLimit bounds max_in_flight: a receiver holds every chunk of a
// connection that waits for its ack.
const maxInFlightLimit = 1024

// Bounds of max_in_flight_bytes.
const (
	minInFlightBytes = conftypes.Size(64 << 10)
	maxInFlightBytes = conftypes.Size(4 << 30)
)

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Servers) == 0 {
		errs = append(errs, pipeline.FieldErr("servers", "at least one server (host:port) is required"))
	}
	seen := map[string]bool{}
	for i, s := range c.Servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			errs = append(errs, pipeline.FieldErr("servers", "[%d] %q: %v", i, s, err))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			errs = append(errs, pipeline.FieldErr("servers", "[%d] %q: port %q is not a number from 1 to 65535", i, s, port))
		}
		if host == "" {
			errs = append(errs, pipeline.FieldErr("servers", "[%d] %q: no host", i, s))
		}
		if seen[s] {
			errs = append(errs, pipeline.FieldErr("servers", "[%d] %q is listed twice", i, s))
		}
		seen[s] = true
	}
	if c.ResolveInterval < 0 {
		errs = append(errs, pipeline.FieldErr("resolve_interval", "must not be negative (0 resolves once, at start)"))
	}
	if _, ok := compressions[c.Compress]; !ok {
		errs = append(errs, pipeline.FieldErr("compress", "%q is not one of gzip, zstd, none", c.Compress))
	}
	if c.AckTimeout <= 0 {
		errs = append(errs, pipeline.FieldErr("ack_timeout", "must be positive"))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, pipeline.FieldErr("connect_timeout", "must be positive"))
	}
	if c.TCPKeepalive < 0 {
		errs = append(errs, pipeline.FieldErr("tcp_keepalive", "must not be negative (0 turns it off)"))
	}
	if c.RetryMin <= 0 {
		errs = append(errs, pipeline.FieldErr("retry_min", "must be positive"))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, pipeline.FieldErr("retry_max", "must be at least retry_min (%s)", c.RetryMin))
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > maxInFlightLimit {
		errs = append(errs, pipeline.FieldErr("max_in_flight", "must be from 1 to %d", maxInFlightLimit))
	}
	if c.MaxInFlightBytes < minInFlightBytes || c.MaxInFlightBytes > maxInFlightBytes {
		errs = append(errs, pipeline.FieldErr("max_in_flight_bytes", "%s is out of range: must be %s to %s", c.MaxInFlightBytes, conftypes.Size(minInFlightBytes), conftypes.Size(maxInFlightBytes)))
	}
	if c.Username != "" && c.SharedKey == "" {
		errs = append(errs, pipeline.FieldErr("username", "needs shared_key: users are checked in the shared-key handshake"))
	}
	if c.Password != "" && c.Username == "" {
		errs = append(errs, pipeline.FieldErr("password", "needs username"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, pipeline.FieldErr("tls", "cert_file and key_file go together"))
	}
	return errors.Join(errs...)
}

// tlsEnabled reports whether the tls block asks for TLS.
func (c *Config) tlsEnabled() bool { return c.TLS.Enabled() || c.TLS.ServerName != "" }
