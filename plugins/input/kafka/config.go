package kafka

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/logship/logship/conftypes"
	"github.com/logship/logship/internal/template"
	"github.com/logship/logship/pipeline"
)

// Config is the kafka input's configuration.
type Config struct {
	// Brokers are the seed brokers (host:port) the client bootstraps from;
	// it learns the rest of the cluster from them.
	Brokers []string `yaml:"brokers"`
	// Topics are the topics consumed, by name. Exactly one of topics and
	// topic_regex is set.
	Topics []string `yaml:"topics"`
	// TopicRegex consumes every topic whose name matches this regular
	// expression (Go syntax, matched anywhere in the name: anchor it with ^
	// and $), topics created later included. Internal topics are never
	// consumed.
	TopicRegex string `yaml:"topic_regex"`
	// Group is the consumer group. Every logship process with the same
	// group shares the partitions of the topics; offsets are committed
	// under it once the records are durable in the local buffer.
	Group string `yaml:"group"`
	// Format is how a message value becomes a record: json (a JSON object;
	// any other value is kept as {key: VALUE} and counted in
	// logship_kafka_in_undecoded_records_total{reason="bad_json"}), msgpack
	// (a msgpack map, as the kafka output writes with format msgpack; any
	// other value is kept as {key: VALUE} and counted with
	// reason="bad_msgpack") or raw (always {key: VALUE}).
	Format string `yaml:"format"`
	// Key is the record field that holds a value kept as it is (format raw,
	// and values that do not decode).
	Key string `yaml:"key"`
	// TagHeader is the message header whose value is the event's tag (the
	// kafka output writes the tag in the header "tag"); "" ignores headers.
	// A message without it, or with an empty one, is tagged by tag.
	TagHeader string `yaml:"tag_header"`
	// Tag is the tag of messages without a tag header: a template such as
	// "kafka.{topic}", "{topic[0]}" (the topic's first part split at '.'),
	// "{record.service|unknown}" (a field of the decoded record), or a fixed
	// tag. The default, "{topic}", tags each message with its topic. The
	// syntax is the one of the kafka output's topic (docs/kafka-input.md), with
	// {topic} in place of {tag}.
	Tag string `yaml:"tag"`
	// StartOffset is where a partition the group never committed an offset
	// for is read from: earliest (everything the topic still holds) or
	// latest (only what is produced from now on).
	StartOffset string `yaml:"start_offset"`
	// Batch bounds the chunks the input emits: a chunk holds consecutive
	// messages of one partition with one tag.
	Batch Batch `yaml:"batch"`
	// MaxPendingBytes bounds the bytes of chunks handed to the buffer and not
	// yet durable there (kept for a retry). Above it the input stops
	// fetching until the buffer catches up; with fetch_max_bytes per broker
	// it bounds the input's memory.
	MaxPendingBytes conftypes.Size `yaml:"max_pending_bytes"`
	// FetchMaxBytes is the most bytes one fetch from a broker returns
	// (Kafka's fetch.max.bytes). The client buffers one fetch per broker.
	FetchMaxBytes conftypes.Size `yaml:"fetch_max_bytes"`
	// CommitInterval is how often the offsets of records durable in the
	// buffer are committed to the group (a rebalance and a clean stop
	// commit first). After a kill, the positions stored with the data keep
	// this process from reading again what it stored since the last
	// commit; another member taking its partitions over reads that again
	// (docs/kafka-input.md).
	CommitInterval conftypes.Duration `yaml:"commit_interval"`
	// RevokeTimeout is how long a member that gives up partitions in a
	// rebalance waits for their records still on the way into the buffer,
	// to commit them so that the new owner does not read them again. Keep
	// it well below rebalance_timeout.
	RevokeTimeout conftypes.Duration `yaml:"revoke_timeout"`
	// SessionTimeout is how long the group waits for a silent member
	// (killed, cut off) before it gives its partitions to the others
	// (Kafka's session.timeout.ms).
	SessionTimeout conftypes.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is how long members may take to give up partitions
	// in a rebalance (Kafka's rebalance.timeout.ms).
	RebalanceTimeout conftypes.Duration `yaml:"rebalance_timeout"`
	// HeartbeatInterval is how often the member tells the group it is alive
	// and learns of rebalances (Kafka's heartbeat.interval.ms).
	HeartbeatInterval conftypes.Duration `yaml:"heartbeat_interval"`
	// ConnectTimeout bounds one connection attempt to a broker.
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
}

// Batch is the batch block.
type Batch struct {
	// MaxEvents is the most events in one chunk, between 1 and 100000.
	MaxEvents int `yaml:"max_events"`
	// MaxBytes is the most bytes of msgpack entries in one chunk, between
	// 1KiB and 16MiB; a single larger event is a chunk of its own.
	MaxBytes conftypes.Size `yaml:"max_bytes"`
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

func defaultConfig() *Config {
	return &Config{
		Format:            "json",
		Key:               "log",
		TagHeader:         "tag",
		Tag:               "{topic}",
		StartOffset:       "earliest",
		Batch:             Batch{MaxEvents: 1000, MaxBytes: conftypes.Size(1 << 20)},
		MaxPendingBytes:   conftypes.Size(64 << 20),
		FetchMaxBytes:     conftypes.Size(16 << 20),
		CommitInterval:    conftypes.Duration(time.Second),
		RevokeTimeout:     conftypes.Duration(10 * time.Second),
		SessionTimeout:    conftypes.Duration(45 * time.Second),
		RebalanceTimeout:  conftypes.Duration(60 * time.Second),
		HeartbeatInterval: conftypes.Duration(3 * time.Second),
		ConnectTimeout:    conftypes.Duration(10 * time.Second),
		ClientID:          "logship",
	}
}

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
	switch {
	case len(c.Topics) == 0 && c.TopicRegex == "":
		errs = append(errs, pipeline.FieldErr("topics", "topics or topic_regex is required"))
	case len(c.Topics) > 0 && c.TopicRegex != "":
		errs = append(errs, pipeline.FieldErr("topic_regex", "goes without topics (set one of them)"))
	}
	for i, t := range c.Topics {
		if !validTopic(t) {
			errs = append(errs, pipeline.FieldErr("topics", "[%d] %q is not a valid topic name (1 to 249 letters, digits, '.', '_' or '-', not . or ..)", i, t))
		}
	}
	if c.TopicRegex != "" {
		if _, err := regexp.Compile(c.TopicRegex); err != nil {
			errs = append(errs, pipeline.FieldErr("topic_regex", "%v", err))
		}
	}
	if c.Group == "" {
		errs = append(errs, pipeline.FieldErr("group", "is required"))
	}
	if c.Format != "json" && c.Format != "msgpack" && c.Format != "raw" {
		errs = append(errs, pipeline.FieldErr("format", "%q is not one of json, msgpack, raw", c.Format))
	}
	if c.Key == "" {
		errs = append(errs, pipeline.FieldErr("key", "must not be empty"))
	}
	if _, err := parseTag(c.Tag); err != nil {
		errs = append(errs, pipeline.FieldErr("tag", "%v", err))
	}
	if c.StartOffset != "earliest" && c.StartOffset != "latest" {
		errs = append(errs, pipeline.FieldErr("start_offset", "%q is not one of earliest, latest", c.StartOffset))
	}
	if c.Batch.MaxEvents < 1 || c.Batch.MaxEvents > 100000 {
		errs = append(errs, pipeline.FieldErr("batch.max_events", "must be from 1 to 100000"))
	}
	if c.Batch.MaxBytes < 1<<10 || c.Batch.MaxBytes > 16<<20 {
		errs = append(errs, pipeline.FieldErr("batch.max_bytes", "must be from 1KiB to 16MiB"))
	}
	if c.MaxPendingBytes < c.Batch.MaxBytes {
		errs = append(errs, pipeline.FieldErr("max_pending_bytes", "must be at least batch.max_bytes (%s)", c.Batch.MaxBytes))
	}
	if c.FetchMaxBytes < 1<<10 || c.FetchMaxBytes > 512<<20 {
		errs = append(errs, pipeline.FieldErr("fetch_max_bytes", "must be from 1KiB to 512MiB"))
	}
	if c.CommitInterval < conftypes.Duration(100*time.Millisecond) {
		errs = append(errs, pipeline.FieldErr("commit_interval", "must be at least 100ms"))
	}
	if c.RevokeTimeout <= 0 {
		errs = append(errs, pipeline.FieldErr("revoke_timeout", "must be positive"))
	}
	if c.SessionTimeout < conftypes.Duration(100*time.Millisecond) || c.SessionTimeout > conftypes.Duration(time.Hour) {
		errs = append(errs, pipeline.FieldErr("session_timeout", "must be from 100ms to 1h"))
	}
	if c.RebalanceTimeout > conftypes.Duration(time.Hour) {
		errs = append(errs, pipeline.FieldErr("rebalance_timeout", "must be at most 1h"))
	} else if c.RebalanceTimeout <= c.RevokeTimeout {
		errs = append(errs, pipeline.FieldErr("rebalance_timeout", "must be longer than revoke_timeout (%s)", c.RevokeTimeout))
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, pipeline.FieldErr("heartbeat_interval", "must be positive and shorter than session_timeout (%s)", c.SessionTimeout))
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
	return errors.Join(errs...)
}

// validTopic reports whether Kafka accepts s as a topic name.
func validTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// parseTag parses the tag option. It is a template of internal/template
// where the message's topic plays the part of the tag: {topic},
// {topic[N]} and {topic|DEFAULT} are written as {tag...} before parsing,
// and the template is rendered with the topic as the tag. {tag} itself is
// refused, since a message has no tag before this one.
func parseTag(s string) (*template.Template, error) {
	if s == "" {
		return nil, errors.New("must not be empty (the default, {topic}, tags each message with its topic)")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '{' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '{' {
			b.WriteString("{{")
			i++
			continue
		}
		body := s[i+1:]
		switch {
		case isVar(body, "topic"):
			b.WriteString("{tag")
			i += len("topic")
		case isVar(body, "tag"):
			return nil, fmt.Errorf("%q: {tag...} at %d: a message has no tag yet; use {topic}, {topic[N]} or {record.FIELD}", s, i)
		default:
			b.WriteByte('{')
		}
	}
	t, err := template.Parse(b.String())
	if err != nil {
		// The message names "tag" where the user wrote "topic".
		return nil, errors.New(strings.NewReplacer("{tag", "{topic", "tag, tag[N]", "topic, topic[N]").Replace(err.Error()))
	}
	return t, nil
}

// isVar reports whether body (what follows a '{') starts with the variable
// name followed by '}', '[' or '|'.
func isVar(body, name string) bool {
	if !strings.HasPrefix(body, name) || len(body) == len(name) {
		return false
	}
	switch body[len(name)] {
	case '}', '[', '|':
		return true
	}
	return false
}
