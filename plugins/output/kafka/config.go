package kafka

import (
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/template"
	"github.com/logship/logship/pipeline"
)

// Config is the kafka output's configuration.
type Config struct {
	// Brokers are the seed brokers (host:port) the client bootstraps from;
	// it learns the rest of the cluster from them.
	Brokers []string `yaml:"brokers"`
	// Topic is the topic every event goes to: a name, or a template from the
	// tag and record fields such as "logs.{tag}", "{tag[1]}" or
	// "logs.{record.service|unknown}" (syntax in docs/kafka.md). A fixed topic
	// must exist when the output starts (see create_topic). An event whose
	// topic renders to an invalid name (empty, longer than 249 bytes, or with
	// characters other than letters, digits, '.', '_' and '-') is dropped and
	// counted as dropped_records_total{reason="invalid_topic"}.
	Topic string `yaml:"topic"`
	// Key is a record field ("user_id", or "kubernetes.pod_name" inside a
	// map) whose value keys the message: messages with the same key land on
	// the same partition, the one the Java client picks (murmur2 of the key
	// modulo the partition count). Without it, or when an event lacks the
	// field, messages are unkeyed and spread evenly over the partitions.
	Key string `yaml:"key"`
	// Format is how the record is written as the message value: json (one
	// JSON object per event, as the file output writes it, with tag_key
	// and time_key) or msgpack (the record map as stored).
	Format string `yaml:"format"`
	// Compression is the codec of record batches: zstd, lz4, snappy, gzip
	// or none. zstd needs Kafka 2.1 or later.
	Compression string `yaml:"compression"`
	// Acks is how many replicas must have a message before Kafka answers and
	// the buffer's cursor moves past it: all (every in-sync replica, with
	// the idempotent producer, so retries add no duplicates in Kafka), 1
	// (the partition leader only: a leader lost before its followers copied
	// the message loses it) or 0 (no answer at all: what reached the socket
	// counts as delivered). Side by side in docs/kafka.md.
	Acks string `yaml:"acks"`
	// Linger is how long the client waits for more messages of a partition
	// before it sends a batch; larger batches compress better.
	Linger conftypes.Duration `yaml:"linger"`
	// BatchBytes is the largest record batch sent to one partition. A single
	// message larger than this can never be sent: it is dropped and counted
	// as dropped_records_total{reason="too_large"}. Keep it at or below the
	// brokers' message.max.bytes.
	BatchBytes conftypes.Size `yaml:"batch_bytes"`
	// MaxInFlight is how many chunks of one buffer partition may be
	// produced and waiting for Kafka's acknowledgements at once.
	MaxInFlight int `yaml:"max_in_flight"`
	// DeliveryTimeout is how long the client retries a message that Kafka
	// does not take (broker down, leader moving) before the output takes it
	// back; the output then retries it itself, with a backoff from retry_min
	// to retry_max, until it is delivered: nothing is dropped for an outage.
	DeliveryTimeout conftypes.Duration `yaml:"delivery_timeout"`
	// RetryMin is the output's first wait before it produces again the
	// messages of a chunk the client gave up on; it doubles up to retry_max.
	RetryMin conftypes.Duration `yaml:"retry_min"`
	// RetryMax caps the wait between the output's retries.
	RetryMax conftypes.Duration `yaml:"retry_max"`
	// ConnectTimeout bounds one connection attempt to a broker, and the
	// topic check at start.
	ConnectTimeout conftypes.Duration `yaml:"connect_timeout"`
	// ClientID is the client id brokers see in their logs and quotas.
	ClientID string `yaml:"client_id"`
	// TLS connects with TLS. It is on when any of ca_file, cert_file,
	// insecure_skip_verify or server_name is set: ca_file verifies the
	// brokers (the system's roots without it), cert_file and key_file
	// present a client certificate, server_name overrides the host name
	// verified (each broker's host by default).
	TLS conftypes.TLS `yaml:"tls"`
	// SASL authenticates to the brokers (on top of TLS when tls is set).
	SASL SASL `yaml:"sasl"`
	// CreateTopic creates a missing topic: the fixed topic at start, and a
	// templated one when messages to it were not delivered. Off (partitions
	// 0) by default: a missing fixed topic is then an error at start, and
	// messages to a missing templated topic wait in the buffer until the
	// topic exists.
	CreateTopic CreateTopic `yaml:"create_topic"`

	// ExactlyOnce produces through Kafka transactions so that a kill of
	// logship at any moment leaves every event in Kafka once for consumers
	// that read with isolation.level=read_committed (others may still see
	// the messages of aborted transactions). Each buffer partition has its
	// own transactional producer (transactional id
	// logship-out.NAME.SENDER.PARTITION): a group of batches is produced in
	// one transaction that also commits, as a consumer-group offset, how
	// far the output got in that buffer partition; after a restart the
	// output reads that back and skips what is committed. It needs acks:
	// all; it costs one transaction (a few round trips) per group of up to
	// max_in_flight batches. See docs/kafka.md, "Exactly once Kafka to
	// Kafka".
	ExactlyOnce bool `yaml:"exactly_once"`
	// ProgressTopic, with exactly_once, is an existing topic whose partition
	// 0 holds the output's committed progress (offsets of the consumer groups
	// logship-out.NAME.SENDER.PARTITION; no message is written to it). It
	// defaults to topic when that is fixed and is required when topic is a
	// template.
	ProgressTopic string `yaml:"progress_topic"`

	// TagKey, when set, adds the event's tag to the JSON object under this
	// key (format json).
	TagKey string `yaml:"tag_key"`
	// TimeKey, when set, adds the event's time to the JSON object under this
	// key as RFC 3339 with nanoseconds (format json).
	TimeKey string `yaml:"time_key"`
}

// SASL is the sasl block.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; "" turns SASL off.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user.
	Username string `yaml:"username"`
	// Password is the user's password (use ${VAR} to keep it out of the file).
	Password string `yaml:"password"`
}

// CreateTopic is the create_topic block.
type CreateTopic struct {
	// Partitions of a created topic; 0 turns creation off.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor of a created topic; -1 takes the brokers' default.
	ReplicationFactor int `yaml:"replication_factor"`
}

func defaultConfig() *Config {
	return &Config{
		Format:          "json",
		Compression:     "zstd",
		Acks:            "all",
		Linger:          conftypes.Duration(5 * time.Millisecond),
		BatchBytes:      conftypes.Size(1000000),
		MaxInFlight:     8,
		DeliveryTimeout: conftypes.Duration(2 * time.Minute),
		RetryMin:        conftypes.Duration(500 * time.Millisecond),
		RetryMax:        conftypes.Duration(30 * time.Second),
		ConnectTimeout:  conftypes.Duration(10 * time.Second),
		ClientID:        "logship",
		CreateTopic:     CreateTopic{ReplicationFactor: -1},
	}
}

// maxInFlightLimit bounds max_in_flight: every message of a chunk in
// flight is held in memory until Kafka answers.
const maxInFlightLimit = 256

// maxBatchBytes is the largest batch_bytes: Kafka's own limit on a
// request is far below it, and the client wants an int32.
const maxBatchBytes = 1 << 30

// Validate implements pipeline.Config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, pipeline.FieldErr("brokers", "at least one broker (host:port) is required"))
	}
	for i, b := range c.Brokers {
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			errs = append(errs, pipeline.FieldErr("brokers", "[%d] %q: %v", i, b, err))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			errs = append(errs, pipeline.FieldErr("brokers", "[%d] %q: port %q is not a number from 1 to 65535", i, b, port))
		}
		if host == "" {
			errs = append(errs, pipeline.FieldErr("brokers", "[%d] %q: no host", i, b))
		}
	}
	if c.Topic == "" {
		errs = append(errs, pipeline.FieldErr("topic", "is required"))
	} else if t, err := template.Parse(c.Topic); err != nil {
		errs = append(errs, pipeline.FieldErr("topic", "%v", err))
	} else if s, ok := t.Static(); ok && !validTopic(s) {
		errs = append(errs, pipeline.FieldErr("topic", "%q is not a valid topic name (1 to 249 letters, digits, '.', '_' or '-', not . or ..)", s))
	}
	if c.Key != "" {
		if _, err := template.ParseField(c.Key); err != nil {
			errs = append(errs, pipeline.FieldErr("key", "%v", err))
		}
	}
	if c.Format != "json" && c.Format != "msgpack" {
		errs = append(errs, pipeline.FieldErr("format", "%q is not one of json, msgpack", c.Format))
	}
	if c.Format == "msgpack" && (c.TagKey != "" || c.TimeKey != "") {
		errs = append(errs, pipeline.FieldErr("format", "tag_key and time_key go with format json; msgpack writes the record as stored"))
	}
	if _, ok := codecs[c.Compression]; !ok {
		errs = append(errs, pipeline.FieldErr("compression", "%q is not one of zstd, lz4, snappy, gzip, none", c.Compression))
	}
	if c.Acks != "all" && c.Acks != "1" && c.Acks != "0" {
		errs = append(errs, pipeline.FieldErr("acks", "%q is not one of all, 1, 0", c.Acks))
	}
	if c.ExactlyOnce {
		if c.Acks != "all" {
			errs = append(errs, pipeline.FieldErr("exactly_once", "needs acks: all (transactions use the idempotent producer), not %q", c.Acks))
		}
		if c.ProgressTopic == "" {
			if t, err := template.Parse(c.Topic); err == nil {
				if _, static := t.Static(); !static {
					errs = append(errs, pipeline.FieldErr("progress_topic", "is required with exactly_once when topic is a template: name an existing topic to hold the output's progress"))
				}
			}
		}
	} else if c.ProgressTopic != "" {
		errs = append(errs, pipeline.FieldErr("progress_topic", "is used only with exactly_once: true"))
	}
	if c.ProgressTopic != "" && !validTopic(c.ProgressTopic) {
		errs = append(errs, pipeline.FieldErr("progress_topic", "%q is not a valid topic name", c.ProgressTopic))
	}
	if c.Linger < 0 {
		errs = append(errs, pipeline.FieldErr("linger", "must not be negative"))
	}
	if c.BatchBytes < 1024 || c.BatchBytes > maxBatchBytes {
		errs = append(errs, pipeline.FieldErr("batch_bytes", "must be from 1KiB to 1GiB"))
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > maxInFlightLimit {
		errs = append(errs, pipeline.FieldErr("max_in_flight", "must be from 1 to %d", maxInFlightLimit))
	}
	if c.DeliveryTimeout <= 0 {
		errs = append(errs, pipeline.FieldErr("delivery_timeout", "must be positive"))
	}
	if c.RetryMin <= 0 {
		errs = append(errs, pipeline.FieldErr("retry_min", "must be positive"))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, pipeline.FieldErr("retry_max", "must be at least retry_min (%s)", c.RetryMin))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, pipeline.FieldErr("connect_timeout", "must be positive"))
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.Password != "" {
			errs = append(errs, pipeline.FieldErr("sasl.mechanism", "is required with a username or password (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"))
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASL.Username == "" {
			errs = append(errs, pipeline.FieldErr("sasl.username", "is required with sasl.mechanism"))
		}
	default:
		errs = append(errs, pipeline.FieldErr("sasl.mechanism", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", c.SASL.Mechanism))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, pipeline.FieldErr("tls", "cert_file and key_file go together"))
	}
	if c.CreateTopic.Partitions < 0 || c.CreateTopic.Partitions > 1<<20 {
		errs = append(errs, pipeline.FieldErr("create_topic.partitions", "must be from 0 (creation off) to %d", 1<<20))
	}
	if c.CreateTopic.ReplicationFactor == 0 || c.CreateTopic.ReplicationFactor < -1 || c.CreateTopic.ReplicationFactor > 1<<14 {
		errs = append(errs, pipeline.FieldErr("create_topic.replication_factor", "must be positive, or -1 for the brokers' default"))
	}
	return errors.Join(errs...)
}

// validTopic reports whether Kafka accepts s as a topic name.
func validTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
